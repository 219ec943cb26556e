"""`Progress`: what an async action reports through (throttled, monotonic,
persisted at most once a second, delivered to the origin and subscribers)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from pydantic_core import to_jsonable_python

from streamer.errors import RequestCancelled
from streamer.models import AsyncRequest, RequestStatus
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


class Progress:
    """The progress reporter handed to an async action.

    Built by the `Processor`; users only call `report` and `check_cancelled`.

    - Percentages are clamped to 0-100 and never go back: a lower value keeps the
      previous percentage (its message and metadata still update).
    - At most `settings.progress_max_per_s` updates a second are delivered (0 = no
      limit); the ones in between are coalesced, and the latest is delivered by
      `flush` (the processor calls it before finishing), so the last is never lost.
    - The snapshot is written to the request at most once every
      `settings.progress_persist_interval_s`. That conditional write is also how a
      cancellation is noticed, so `report` raises `RequestCancelled` at the first
      report after the cancel when reports are a second or more apart, and within
      a second otherwise; `check_cancelled` always asks the store.
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
        self._last_persisted_at: float | None = None
        self._unsent = False

    @property
    def percentage(self) -> float:
        """The latest percentage reported (after clamping)."""
        return self._percentage

    async def report(self, percentage: float, message: str = "", **metadata: Any) -> None:
        """Report progress. Percentages are clamped to 0-100 and never go back;
        updates beyond the rate limit are coalesced (the latest is sent later or
        at the end).

        Raises:
            RequestCancelled: the request was cancelled; stop working.
        """
        clamped = max(0.0, min(100.0, float(percentage)))
        self._percentage = max(self._percentage, clamped)
        self._message = message
        self._metadata = to_jsonable_python(metadata, fallback=str)
        now = self._clock.monotonic()
        if self._persist_due(now):
            self._last_persisted_at = now
            await self._persist()
        if self._send_due(now):
            await self._send(now)
        else:
            self._unsent = True

    async def check_cancelled(self) -> None:
        """Ask the store whether the request was cancelled.

        Raises:
            RequestCancelled: it was.
        """
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
        """Deliver the latest coalesced update, if any (the processor's last word
        before `complete` or `error`)."""
        if self._unsent:
            await self._send(self._clock.monotonic())

    def _persist_due(self, now: float) -> bool:
        return self._last_persisted_at is None or (
            now - self._last_persisted_at >= self._persist_interval_s
        )

    def _send_due(self, now: float) -> bool:
        return self._last_sent_at is None or now - self._last_sent_at >= self._min_send_interval_s

    async def _persist(self) -> None:
        try:
            saved = await self._requests.record_progress(
                self._request.key,
                attempt=self._request.attempt,
                percentage=self._percentage,
                message=self._message,
                details=self._metadata,
                now=self._clock.now(),
            )
        except Exception:
            logger.warning(
                "progress snapshot not saved; dropped",
                extra=self._log_extra(),
                exc_info=True,
            )
            return
        if not saved:
            await self.check_cancelled()
            # Refused, yet check_cancelled found it still ours (a read that raced
            # the write, or an unreadable store): carry on, the next write decides.

    def _raise_unless_ours(self, stored: AsyncRequest | None) -> None:
        if stored is not None and stored.status is RequestStatus.CANCELLED:
            raise RequestCancelled()
        if (
            stored is None
            or stored.status is not RequestStatus.PROCESSING
            or stored.attempt != self._request.attempt
        ):
            raise OwnershipLost(self._request.key)

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


class DetachedProgress(Progress):
    """A `Progress` for a sync action that asks for one: reports go nowhere."""

    def __init__(self) -> None:
        # Deliberately no state: nothing is persisted or delivered.
        pass

    @property
    def percentage(self) -> float:
        return 0.0

    async def report(self, percentage: float, message: str = "", **metadata: Any) -> None:
        return None

    async def check_cancelled(self) -> None:
        return None

    async def flush(self) -> None:
        return None
