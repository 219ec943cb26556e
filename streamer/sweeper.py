"""The sweeper: requests whose processor died (lease expired) go back to
PENDING, or to FAILED when their attempts are spent."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from streamer.delivery import Delivery
from streamer.errors import ErrorCode
from streamer.models import AsyncRequest, RequestError
from streamer.ports import Clock, RequestStore
from streamer.protocol import ErrorBody, ErrorMessage
from streamer.settings import Settings

__all__ = ["EXHAUSTED_MESSAGE", "SweepReport", "Sweeper"]

logger = logging.getLogger(__name__)

EXHAUSTED_MESSAGE = "processor stopped before finishing; attempts exhausted"


@dataclass(frozen=True, slots=True)
class SweepReport:
    """What one sweep did."""

    requeued: int = 0
    failed: int = 0


class Sweeper:
    """Recovers requests with expired leases.

    A request with attempts left (`attempt <= max_retries`, so `max_retries + 1`
    claims in all) goes back to PENDING, which the stream delivers to a processor
    again; otherwise it becomes FAILED (PROCESSING_FAILED) and its followers get
    an `error`. Each move is conditional on the attempt seen, so a processor that
    finishes meanwhile wins and the sweeper's write is simply refused.

    Args:
        requests: the requests store.
        delivery: tells followers when a request fails for good.
        clock: time source.
        settings: request TTL.
    """

    def __init__(
        self, *, requests: RequestStore, delivery: Delivery, clock: Clock, settings: Settings
    ) -> None:
        self._requests = requests
        self._delivery = delivery
        self._clock = clock
        self._settings = settings

    async def sweep_once(self, *, limit: int = 100) -> SweepReport:
        """One pass over expired leases."""
        now = self._clock.now()
        expired = await self._requests.list_expired_leases(now=now, limit=limit)
        requeued = failed = 0
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
        if requeued or failed:
            logger.info("sweep done: %d requeued, %d failed", requeued, failed)
        return SweepReport(requeued=requeued, failed=failed)

    async def _requeue(self, request: AsyncRequest) -> bool:
        moved = await self._requests.requeue_expired(
            request.key, attempt=request.attempt, now=self._clock.now()
        )
        if moved:
            logger.info("expired lease requeued", extra=_extra(request))
        return moved

    async def _fail(self, request: AsyncRequest) -> bool:
        now = self._clock.now()
        error = RequestError(ErrorCode.PROCESSING_FAILED, EXHAUSTED_MESSAGE)
        expires_at = int((now + timedelta(days=self._settings.request_ttl_days)).timestamp())
        moved = await self._requests.fail_expired(
            request.key, attempt=request.attempt, error=error, now=now, expires_at=expires_at
        )
        if not moved:
            return False
        logger.warning("expired lease failed; attempts exhausted", extra=_extra(request))
        message = ErrorMessage(
            timestamp=self._clock.now(),
            request_id=request.request_id,
            error=ErrorBody(code=ErrorCode.PROCESSING_FAILED, message=EXHAUSTED_MESSAGE),
        )
        await self._delivery.to_request(request, message)
        return True


def _extra(request: AsyncRequest) -> dict[str, object]:
    return {
        "request_id": request.request_id,
        "connection_id": request.connection_id,
        "action": request.action,
        "attempt": request.attempt,
    }
