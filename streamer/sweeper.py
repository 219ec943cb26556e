"""The sweeper: requests whose processor died (lease expired) go back to
PENDING, or to FAILED when their attempts are spent; PENDING requests nobody
picked up (their stream record was lost) are re-announced, then failed."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from streamer import transitions
from streamer.delivery import Delivery
from streamer.errors import ErrorCode
from streamer.models import AsyncRequest, RequestError
from streamer.ports import Clock, RequestStore
from streamer.protocol import ErrorBody, ErrorMessage
from streamer.settings import Settings

__all__ = ["EXHAUSTED_MESSAGE", "NOT_PICKED_UP_MESSAGE", "SweepReport", "Sweeper"]

logger = logging.getLogger(__name__)

EXHAUSTED_MESSAGE = "processor stopped before finishing; attempts exhausted"
NOT_PICKED_UP_MESSAGE = "request was not picked up for processing"


@dataclass(frozen=True, slots=True)
class SweepReport:
    """What one sweep did."""

    requeued: int = 0
    """Expired leases put back to PENDING."""
    failed: int = 0
    """Requests failed for good: attempts spent, or never picked up."""
    kicked: int = 0
    """Stale PENDING requests re-announced on the stream."""


class Sweeper:
    """Recovers requests with expired leases, and PENDING requests nobody claimed.

    A request with attempts left (`attempt <= max_retries`, so `max_retries + 1`
    claims in all) goes back to PENDING, which the stream delivers to a processor
    again; otherwise it becomes FAILED (PROCESSING_FAILED) and its followers get
    an `error`. Each move is conditional on the attempt seen, so a processor that
    finishes meanwhile wins and the sweeper's write is simply refused.

    Only a stream record ever starts a PENDING request, and in production a
    record can be lost (the event-source mapping gives up after its retries or
    its maximum record age). So a request PENDING and untouched for
    `pending_stale_s` is kicked: a conditional no-op write that puts a fresh
    PENDING image on the stream. After `pending_max_kicks` kicks it is FAILED
    (PROCESSING_FAILED, "request was not picked up for processing") and its
    followers get an `error`. Both writes are conditional on the UpdatedAt seen,
    so a processor that claims it meanwhile wins.

    Args:
        requests: the requests store.
        delivery: tells followers when a request fails for good.
        clock: time source.
        settings: request TTL, `pending_stale_s`, `pending_max_kicks`.
    """

    def __init__(
        self, *, requests: RequestStore, delivery: Delivery, clock: Clock, settings: Settings
    ) -> None:
        self._requests = requests
        self._delivery = delivery
        self._clock = clock
        self._settings = settings

    async def sweep_once(self, *, limit: int = 100) -> SweepReport:
        """One pass over expired leases, then over stale PENDING requests
        (up to `limit` of each)."""
        now = self._clock.now()
        expired = await self._requests.list_expired_leases(now=now, limit=limit)
        requeued = failed = kicked = 0
        for request in expired:
            try:
                if request.attempt <= request.max_retries:
                    requeued += await self._requeue(request)
                else:
                    failed += await self._fail(request)
            except Exception:
                logger.warning(
                    "could not recover an expired lease",
                    extra=_extra(request),
                    exc_info=True,
                )
        stale_before = now - timedelta(seconds=self._settings.pending_stale_s)
        stale = await self._requests.list_stale_pending(older_than=stale_before, limit=limit)
        for request in stale:
            try:
                if request.kicks < self._settings.pending_max_kicks:
                    kicked += await self._kick(request)
                else:
                    failed += await self._fail_unclaimed(request)
            except Exception:
                logger.warning(
                    "could not recover a stale pending request",
                    extra=_extra(request),
                    exc_info=True,
                )
        if requeued or failed or kicked:
            logger.info("sweep done: %d requeued, %d kicked, %d failed", requeued, kicked, failed)
        return SweepReport(requeued=requeued, failed=failed, kicked=kicked)

    async def _requeue(self, request: AsyncRequest) -> bool:
        requeue = transitions.requeue_expired(attempt=request.attempt, now=self._clock.now())
        moved = await self._requests.apply(request.key, requeue) is not None
        if moved:
            logger.info("expired lease requeued", extra=_extra(request))
        return moved

    async def _fail(self, request: AsyncRequest) -> bool:
        now = self._clock.now()
        error = RequestError(ErrorCode.PROCESSING_FAILED, EXHAUSTED_MESSAGE)
        expires_at = int((now + timedelta(days=self._settings.request_ttl_days)).timestamp())
        fail = transitions.fail_expired(
            attempt=request.attempt, error=error, now=now, expires_at=expires_at
        )
        failed = await self._requests.apply(request.key, fail)
        if failed is None:
            return False
        logger.warning("expired lease failed; attempts exhausted", extra=_extra(request))
        message = ErrorMessage(
            timestamp=self._clock.now(),
            request_id=request.request_id,
            error=ErrorBody(code=ErrorCode.PROCESSING_FAILED, message=EXHAUSTED_MESSAGE),
        )
        # As written: it shows whether a subscribe marked the request.
        await self._delivery.to_request(failed, message)
        return True

    async def _kick(self, request: AsyncRequest) -> bool:
        kick = transitions.kick(seen_updated_at=request.updated_at, now=self._clock.now())
        kicked = await self._requests.apply(request.key, kick) is not None
        if kicked:
            logger.warning(
                "stale pending request re-announced (kick %d)",
                request.kicks + 1,
                extra=_extra(request),
            )
        return kicked

    async def _fail_unclaimed(self, request: AsyncRequest) -> bool:
        now = self._clock.now()
        error = RequestError(ErrorCode.PROCESSING_FAILED, NOT_PICKED_UP_MESSAGE)
        expires_at = int((now + timedelta(days=self._settings.request_ttl_days)).timestamp())
        fail = transitions.fail_pending(
            seen_updated_at=request.updated_at, error=error, now=now, expires_at=expires_at
        )
        failed = await self._requests.apply(request.key, fail)
        if failed is None:
            return False
        logger.warning(
            "pending request failed; never picked up after %d kicks",
            request.kicks,
            extra=_extra(request),
        )
        message = ErrorMessage(
            timestamp=self._clock.now(),
            request_id=failed.request_id,
            error=ErrorBody(code=ErrorCode.PROCESSING_FAILED, message=NOT_PICKED_UP_MESSAGE),
        )
        await self._delivery.to_request(failed, message)
        return True


def _extra(request: AsyncRequest) -> dict[str, object]:
    return {
        "request_id": request.request_id,
        "connection_id": request.connection_id,
        "action": request.action,
        "attempt": request.attempt,
    }
