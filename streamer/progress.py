"""`Progress`: what an async action reports through (throttled, monotonic,
persisted in the background at most once a second, delivered to the origin and
subscribers)."""

from __future__ import annotations

import asyncio
import logging
from enum import Enum
from typing import TYPE_CHECKING, Any

from pydantic_core import to_jsonable_python

from streamer import transitions
from streamer.errors import RequestCancelled
from streamer.models import AsyncRequest, ProgressSnapshot, RequestStatus
from streamer.protocol import ProgressUpdate

if TYPE_CHECKING:
    from streamer.delivery import Delivery
    from streamer.ports import Clock, RequestStore
    from streamer.settings import Settings

__all__ = ["OwnershipLost", "Progress"]

logger = logging.getLogger(__name__)


class OwnershipLost(Exception):
    """The running request is no longer this processor's (its lease expired and
    it was re-claimed or failed elsewhere); the processor stops the run as LOST."""


class _Stop(Enum):
    """Why a refused snapshot write stops the run (raised at the next report)."""

    CANCELLED = "cancelled"
    LOST = "lost"


class Progress:
    """The progress reporter handed to an async action.

    Built by the `Processor`; users only call `report` and `check_cancelled`.

    - Percentages are clamped to 0-100 and never go back: a lower value keeps the
      previous percentage (its message and metadata still update).
    - At most `settings.progress_max_per_s` updates a second are delivered (0 = no
      limit); the ones in between are coalesced, and the latest is delivered by
      `flush` (the processor calls it before finishing), so the last is never lost.
    - The snapshot is written to the request at most once every
      `settings.progress_persist_interval_s`, in the background: `report` never
      waits for the store. The claim counts as the first write, so an action that
      ends within one interval of its claim makes none (its outcome's write holds
      the last report). A report that is not due yet is written when the interval
      ends (a timer), or by the next report due, whichever comes first, so the
      stored snapshot is never more than about an interval behind the last
      report. At most one write is in flight per request; one that falls due
      meanwhile is made when it finishes, with the latest value.
    - That conditional write is also how a cancellation is noticed: when it is
      refused, a re-read decides, and the next `report` raises `RequestCancelled`
      (or `OwnershipLost`). So a cancel stops the action at the second report
      after it when reports are a second or more apart, and about a second plus
      one write's round trip after it otherwise; `check_cancelled` always asks
      the store.
    - 100 % is not completion: the `complete` message is.
    - A failed snapshot write (the store is down) is logged and dropped; it never
      stops the work.

    Args:
        request: the claimed request (its key, attempt, origin connection).
        requests: the requests store.
        delivery: fan-out to the origin connection and subscribers.
        clock: time source (monotonic for the throttle).
        settings: `progress_max_per_s`, `progress_persist_interval_s`.
    """

    def __init__(
        self,
        *,
        request: AsyncRequest,
        requests: RequestStore,
        delivery: Delivery,
        clock: Clock,
        settings: Settings,
    ) -> None:
        self._request = request
        self._requests = requests
        self._delivery = delivery
        self._clock = clock
        self._min_send_interval_s = (
            1.0 / settings.progress_max_per_s if settings.progress_max_per_s > 0 else 0.0
        )
        self._persist_interval_s = settings.progress_persist_interval_s
        self._percentage = max(0.0, min(100.0, float(request.progress)))
        self._message = request.progress_message
        self._metadata: dict[str, Any] = dict(request.progress_details)
        self._last_sent_at: float | None = None
        # The claim that preceded this run wrote the item: it counts as a write.
        self._last_persisted_at = clock.monotonic()
        self._trailing: asyncio.TimerHandle | None = None
        self._unsent = False
        self._persisting: asyncio.Task[None] | None = None
        self._persist_again = False
        self._stop: _Stop | None = None
        self._closed = False

    @property
    def percentage(self) -> float:
        """The latest percentage reported (after clamping)."""
        return self._percentage

    def snapshot(self) -> ProgressSnapshot:
        """The latest percentage, message and metadata reported (what the stored
        snapshot becomes; it may be ahead of the last one written)."""
        return ProgressSnapshot(self._percentage, self._message, dict(self._metadata))

    async def report(self, percentage: float, message: str = "", **metadata: Any) -> None:
        """Report progress. Percentages are clamped to 0-100 and never go back;
        updates beyond the rate limit are coalesced (the latest is sent later or
        at the end).

        Raises:
            RequestCancelled: the request was cancelled; stop working.
        """
        self._raise_if_stopped()
        clamped = max(0.0, min(100.0, float(percentage)))
        self._percentage = max(self._percentage, clamped)
        self._message = message
        self._metadata = to_jsonable_python(metadata, fallback=str)
        now = self._clock.monotonic()
        persist = self._persist_due(now)
        if persist:
            self._start_persist(now)
        elif self._trailing is None and not self._closed:
            # Written when the interval ends, unless a report due comes first. The
            # wait is the event loop's, as the action's own timeout is.
            wait_s = self._last_persisted_at + self._persist_interval_s - now
            self._trailing = asyncio.get_running_loop().call_later(wait_s, self._persist_trailing)
        if self._send_due(now):
            await self._send(now)
        else:
            self._unsent = True
        if persist:
            # A send that does not wait does not yield: let the write start now,
            # not at whatever the action awaits next.
            await asyncio.sleep(0)

    async def check_cancelled(self) -> None:
        """Ask the store whether the request was cancelled.

        Raises:
            RequestCancelled: it was.
        """
        self._raise_if_stopped()
        try:
            stored = await self._requests.get(self._request.key)
        except Exception:
            logger.warning(
                "could not check for cancellation",
                extra=self._log_extra(),
                exc_info=True,
            )
            return
        self._raise_unless_ours(stored)

    async def flush(self) -> None:
        """Wait for the snapshot write in flight, then deliver the latest
        coalesced update, if any (the processor's last word before `complete` or
        `error`). Nothing is delivered once a refused write showed the request
        cancelled or taken over."""
        self._cancel_trailing()  # the outcome's write holds the latest report
        await self._wait_persisted()
        if self._unsent and self._stop is None:
            await self._send(self._clock.monotonic())

    async def close(self) -> None:
        """Stop writing snapshots: cancel the write in flight, if any, and wait for
        it to end (the processor calls this when a run ends, however it ends)."""
        self._closed = True
        self._cancel_trailing()
        task = self._persisting
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait([task])

    def _persist_due(self, now: float) -> bool:
        return now - self._last_persisted_at >= self._persist_interval_s

    def _send_due(self, now: float) -> bool:
        return self._last_sent_at is None or now - self._last_sent_at >= self._min_send_interval_s

    def _persist_trailing(self) -> None:
        self._trailing = None
        if self._stop is None:  # a refused write already decided the run
            self._start_persist(self._clock.monotonic())

    def _cancel_trailing(self) -> None:
        if self._trailing is not None:
            self._trailing.cancel()
            self._trailing = None

    def _start_persist(self, now: float) -> None:
        self._cancel_trailing()
        if self._closed:
            return
        self._last_persisted_at = now
        if self._persisting is not None and not self._persisting.done():
            self._persist_again = True
            return
        self._persisting = asyncio.create_task(
            self._persist_until_current(), name=f"persist-progress-{self._request.request_id}"
        )

    async def _wait_persisted(self) -> None:
        task = self._persisting
        if task is not None and not task.done():
            # asyncio.wait: a caller cancelled while waiting leaves the write
            # running (for `close`), and the write's own end never raises here.
            await asyncio.wait([task])

    async def _persist_until_current(self) -> None:
        """Write the snapshot; again while another write fell due meanwhile (each
        write takes the latest values)."""
        while True:
            self._persist_again = False
            await self._persist()
            if not self._persist_again or self._stop is not None or self._closed:
                return

    async def _persist(self) -> None:
        try:
            change = transitions.record_progress(
                attempt=self._request.attempt, progress=self.snapshot(), now=self._clock.now()
            )
            saved = await self._requests.apply(self._request.key, change)
        except Exception:
            logger.warning(
                "progress snapshot not saved; dropped",
                extra=self._log_extra(),
                exc_info=True,
            )
            return
        if saved is not None:
            # What delivery goes by: whether a subscribe has marked it since.
            self._request = saved
            return
        try:
            stored = await self._requests.get(self._request.key)
        except Exception:
            logger.warning(
                "could not check for cancellation",
                extra=self._log_extra(),
                exc_info=True,
            )
            return
        # Still ours despite the refusal (a read that raced the write): carry on,
        # the next write decides.
        self._note(stored)

    def _raise_if_stopped(self) -> None:
        if self._stop is _Stop.CANCELLED:
            raise RequestCancelled()
        if self._stop is _Stop.LOST:
            raise OwnershipLost(self._request.key)

    def _raise_unless_ours(self, stored: AsyncRequest | None) -> None:
        self._note(stored)
        self._raise_if_stopped()

    def _note(self, stored: AsyncRequest | None) -> None:
        """Remember a reason to stop the run; once found, it is final (both
        CANCELLED and another attempt's claim are)."""
        reason = _stop_reason(stored, self._request.attempt)
        if reason is not None:
            self._stop = reason

    async def _send(self, now: float) -> None:
        self._last_sent_at = now
        self._unsent = False
        update = ProgressUpdate(
            timestamp=self._clock.now(),
            request_id=self._request.request_id,
            percentage=self._percentage,
            message=self._message,
            metadata=self._metadata,
        )
        await self._delivery.to_request(self._request, update)

    def _log_extra(self) -> dict[str, Any]:
        return {"request_id": self._request.request_id, "action": self._request.action}


def _stop_reason(stored: AsyncRequest | None, attempt: int) -> _Stop | None:
    """Why the run must stop, judging by the stored request; None while it is ours."""
    if stored is not None and stored.status is RequestStatus.CANCELLED:
        return _Stop.CANCELLED
    if stored is None or stored.status is not RequestStatus.PROCESSING or stored.attempt != attempt:
        return _Stop.LOST
    return None


class DetachedProgress(Progress):
    """A `Progress` for a sync action that asks for one: reports go nowhere."""

    def __init__(self) -> None:
        # Deliberately no state: nothing is persisted or delivered.
        pass

    @property
    def percentage(self) -> float:
        return 0.0

    def snapshot(self) -> ProgressSnapshot:
        return ProgressSnapshot(0.0)

    async def report(self, percentage: float, message: str = "", **metadata: Any) -> None:
        return None

    async def check_cancelled(self) -> None:
        return None

    async def flush(self) -> None:
        return None

    async def close(self) -> None:
        return None
