"""The processor: one stream record in; claim, run with `Progress`, finish."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import random
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, TypeVar

from pydantic import ValidationError
from pydantic_core import PydanticSerializationError, to_jsonable_python

from streamer import transitions
from streamer.app import ActionSpec, Request, Streamer
from streamer.delivery import Delivery
from streamer.errors import (
    ErrorCode,
    ItemTooLarge,
    RequestCancelled,
    Retryable,
    StreamerError,
    UnstorableValue,
)
from streamer.models import AsyncRequest, RequestChange, RequestError, RequestKey, RequestStatus
from streamer.ports import Clock, RequestStore
from streamer.progress import OwnershipLost, Progress
from streamer.protocol import Complete, ErrorBody, ErrorMessage, encode, encoded_size
from streamer.push import UNWIRED_PUSHER, Pusher
from streamer.settings import Settings

__all__ = [
    "DEADLINE_MARGIN_S",
    "STORE_ATTEMPTS",
    "Outcome",
    "Processor",
    "request_metadata",
    "request_permissions",
    "validation_details",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

DEADLINE_MARGIN_S = 5.0
"""Time kept before a `deadline` to hand the request back (one conditional write)
and, in Lambda, return the batch response. The only margin: a runtime passes the
real end of its time (the invocation's end, a shutdown) as the `deadline`."""
STORE_ATTEMPTS = 3
"""Tries of one store call (claim, complete, fail, …) before the error propagates."""


class Outcome(StrEnum):
    """What handling one record came to."""

    SKIPPED = "SKIPPED"
    """Not claimable, or the claim was lost (duplicate delivery)."""
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    HANDED_BACK = "HANDED_BACK"
    """Released to PENDING before a deadline (Lambda time, shutdown)."""
    LOST = "LOST"
    """Ownership lost mid-run (lease expired and re-claimed elsewhere)."""


class Processor:
    """Claims PENDING requests and runs their actions.

    One run: claim the request with a conditional write and a lease of
    `timeout_s + settings.lease_grace_s` (not PENDING → SKIPPED, nothing
    changed; the timeout comes from the stream image, or from a read of the
    item when the image does not show it), validate the stored payload
    into the action's model, run the action bounded by its timeout and by the
    `deadline`, then persist COMPLETED/FAILED and only then notify.

    Transient failures (`Retryable`, timeouts, `OSError`/`ConnectionError`) are
    retried with exponential backoff and jitter, waited through `clock.sleep`; the
    budget is the request's `max_retries` minus its stored `retry_count`, so it is
    shared across re-claims. A `StreamerError` from the action fails at once with
    its own code; any other exception fails with INTERNAL_ERROR and a generic
    message (the traceback goes to the log only).

    Args:
        app: the user's actions.
        requests: the requests store.
        delivery: fan-out of progress/complete/error.
        clock: time source (backoff waits go through `clock.sleep`).
        settings: TTLs, progress rate, persist interval, lease grace.
        pusher: handed to actions as `req.push` (optional).
        backoff_base_s, backoff_max_s: exponential backoff between retries.
        rng: the random source of the jitter (tests may seed one).
    """

    def __init__(
        self,
        *,
        app: Streamer,
        requests: RequestStore,
        delivery: Delivery,
        clock: Clock,
        settings: Settings,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 30.0,
        rng: random.Random | None = None,
        pusher: Pusher | None = None,
    ) -> None:
        self._app = app
        self._requests = requests
        self._delivery = delivery
        self._clock = clock
        self._settings = settings
        self._backoff_base_s = backoff_base_s
        self._backoff_max_s = backoff_max_s
        self._rng = rng or random.Random()
        self._pusher = pusher if pusher is not None else UNWIRED_PUSHER

    async def handle(self, change: RequestChange, *, deadline: datetime | None = None) -> Outcome:
        """Handle one stream record: skip it unless claimable, else `run` it (with
        the timeout its image shows, so without reading the item first)."""
        if not change.is_claimable:
            return Outcome.SKIPPED
        return await self.run(change.key, deadline=deadline, timeout_s=change.timeout_s)

    async def run(
        self, key: RequestKey, *, deadline: datetime | None = None, timeout_s: float | None = None
    ) -> Outcome:
        """Claim and run one request.

        `deadline` bounds the run: before it, the request is handed back to
        PENDING. `timeout_s` is the request's stored timeout when the caller
        knows it (a stream image): the claim's lease is then set from it and
        the item is not read first. Otherwise it is read, and one that is not
        PENDING is skipped without a write. Either way a request that is not
        PENDING fails the conditional claim and is SKIPPED with no state change.
        Persists COMPLETED/FAILED before notifying. Action errors never escape;
        store failures do (so the caller can retry the record).
        """
        if timeout_s is None:
            stored = await self._store_call("get", lambda: self._requests.get(key))
            if stored is None or stored.status is not RequestStatus.PENDING:
                return Outcome.SKIPPED
            timeout_s = stored.timeout_s
        now = self._clock.now()
        lease_until = now + timedelta(seconds=timeout_s + self._settings.lease_grace_s)
        claim = transitions.claim(now=now, lease_until=lease_until)
        claimed = await self._store_call("claim", lambda: self._requests.apply(key, claim))
        if claimed is None:
            logger.info("claim lost; duplicate delivery skipped", extra={"reason": "not PENDING"})
            return Outcome.SKIPPED
        started = self._clock.monotonic()
        try:
            outcome = await self._execute(claimed, deadline)
        except asyncio.CancelledError:
            # Shutting down: hand the request back so another processor takes it.
            with contextlib.suppress(Exception):
                release = transitions.release(attempt=claimed.attempt, now=self._clock.now())
                await asyncio.shield(self._requests.apply(key, release))
            raise
        logger.info(
            "request finished",
            extra={
                **_extra(claimed),
                "outcome": outcome.value,
                "duration_ms": round((self._clock.monotonic() - started) * 1000),
            },
        )
        return outcome

    # -- one claimed request -----------------------------------------------------

    async def _execute(self, request: AsyncRequest, deadline: datetime | None) -> Outcome:
        spec = self._app.get(request.action)
        if spec is None:
            error = RequestError(ErrorCode.INVALID_ACTION, f"unknown action {request.action!r}")
            return await self._finish_failed(request, error, None)
        try:
            payload = _validated_payload(spec, request.payload)
        except ValidationError as exc:
            error = RequestError(
                ErrorCode.VALIDATION_ERROR,
                "payload is invalid",
                {"errors": validation_details(exc)},
            )
            return await self._finish_failed(request, error, None)

        progress = Progress(
            request=request,
            requests=self._requests,
            delivery=self._delivery,
            clock=self._clock,
            settings=self._settings,
        )
        try:
            return await self._run_attempts(request, spec, payload, progress, deadline)
        finally:
            # No snapshot write outlives the run, however it ended (even cancelled).
            await progress.close()

    async def _run_attempts(
        self,
        request: AsyncRequest,
        spec: ActionSpec,
        payload: Any,
        progress: Progress,
        deadline: datetime | None,
    ) -> Outcome:
        retry_count = request.retry_count
        while True:
            bound_s, bounded_by_deadline = self._time_bound(request.timeout_s, deadline)
            if bounded_by_deadline and bound_s <= 0:
                return await self._hand_back(request, progress)
            req: Request[Any] = _build_request(
                request, payload, run_number=request.attempt + retry_count, push=self._pusher
            )
            scope = asyncio.timeout(bound_s)
            try:
                async with scope:
                    result = await _call(spec, req, progress)
            except RequestCancelled as exc:
                return await self._after_cancel_signal(request, exc, progress)
            except OwnershipLost:
                logger.warning("ownership lost mid-run", extra=_extra(request))
                return Outcome.LOST
            except TimeoutError:
                if scope.expired() and bounded_by_deadline:
                    return await self._hand_back(request, progress)
                error = RequestError(
                    ErrorCode.TIMEOUT, f"action timed out after {request.timeout_s:g} s"
                )
            except Retryable as exc:
                error = RequestError(
                    ErrorCode.PROCESSING_FAILED, exc.message, _details(exc.details)
                )
            except StreamerError as exc:
                error = RequestError(exc.code, exc.message, _details(exc.details))
                return await self._finish_failed(request, error, progress)
            except OSError as exc:
                error = RequestError(
                    ErrorCode.PROCESSING_FAILED,
                    "action failed with a transient error",
                    {"exception": type(exc).__name__},
                )
            except Exception:
                logger.exception("action raised an unexpected exception", extra=_extra(request))
                error = RequestError(ErrorCode.INTERNAL_ERROR, "internal error")
                return await self._finish_failed(request, error, progress)
            else:
                return await self._finish_completed(request, result, progress)

            # A transient failure: retry while the budget lasts.
            if retry_count >= request.max_retries:
                logger.warning("retries exhausted", extra={**_extra(request), "code": error.code})
                return await self._finish_failed(request, error, progress)
            delay_s = self._backoff_s(retry_count)
            if deadline is not None and self.seconds_left(deadline) <= delay_s:
                return await self._hand_back(request, progress)
            logger.info(
                "transient failure; retrying in %.2f s",
                delay_s,
                extra={**_extra(request), "code": error.code},
            )
            now = self._clock.now()
            lease_until = now + timedelta(
                seconds=delay_s + request.timeout_s + self._settings.lease_grace_s
            )
            retry = transitions.record_retry(
                attempt=request.attempt,
                error=error,
                now=now,
                lease_until=lease_until,
                progress=progress.snapshot(),
            )
            recorded = await self._store_call(
                "record_retry", functools.partial(self._requests.apply, request.key, retry)
            )
            if recorded is None:
                return await self._after_refusal(request)
            retry_count += 1
            await self._clock.sleep(delay_s)

    async def _finish_completed(
        self, request: AsyncRequest, result: Any, progress: Progress
    ) -> Outcome:
        try:
            stored_result = to_jsonable_python(result)
        except PydanticSerializationError:
            logger.exception("action returned a value that is not JSON", extra=_extra(request))
            error = RequestError(ErrorCode.INTERNAL_ERROR, "internal error")
            return await self._finish_failed(request, error, progress)
        probe = Complete(
            timestamp=self._clock.now(), request_id=request.request_id, result=stored_result
        )
        size = encoded_size(encode(probe))
        if size > self._settings.max_message_bytes:
            # Stored, it could never be delivered: API Gateway refuses the POST,
            # and `status` would be refused the same way. Fail it while we can say why.
            error = RequestError(
                ErrorCode.PAYLOAD_TOO_LARGE,
                f"the result is {size} bytes as a message; the WebSocket limit is "
                f"{self._settings.max_message_bytes}: return a smaller result or a link to it",
                {"size": size, "limit": self._settings.max_message_bytes},
            )
            return await self._finish_failed(request, error, progress)
        await progress.flush()
        now = self._clock.now()
        complete = transitions.complete(
            attempt=request.attempt,
            result=stored_result,
            now=now,
            expires_at=self._expires_at(now),
            progress=progress.snapshot(),
        )
        try:
            completed = await self._store_call(
                "complete", lambda: self._requests.apply(request.key, complete)
            )
        except UnstorableValue as exc:
            # The action's own result: retrying or re-running cannot fix it.
            error = RequestError(ErrorCode.INTERNAL_ERROR, f"the result {exc.message}")
            return await self._finish_failed(request, error, progress)
        except ItemTooLarge:
            error = RequestError(
                ErrorCode.PAYLOAD_TOO_LARGE,
                "the result is too large to store (over the 400 KB item limit); "
                "return a smaller result or a link to it",
            )
            return await self._finish_failed(request, error, progress)
        if completed is None and not await self._already(request, RequestStatus.COMPLETED):
            return await self._after_refusal(request)
        message = Complete(
            timestamp=self._clock.now(), request_id=request.request_id, result=stored_result
        )
        await self._delivery.to_request(_as_written(completed, request), message)
        return Outcome.COMPLETED

    async def _finish_failed(
        self, request: AsyncRequest, error: RequestError, progress: Progress | None
    ) -> Outcome:
        if progress is not None:
            await progress.flush()
        now = self._clock.now()
        fail = transitions.fail(
            attempt=request.attempt,
            error=error,
            now=now,
            expires_at=self._expires_at(now),
            progress=progress.snapshot() if progress is not None else None,
        )
        failed = await self._store_call("fail", lambda: self._requests.apply(request.key, fail))
        if failed is None and not await self._already(request, RequestStatus.FAILED):
            return await self._after_refusal(request)
        target = _as_written(failed, request)
        message = ErrorMessage(
            timestamp=self._clock.now(),
            request_id=request.request_id,
            error=ErrorBody(
                code=ErrorCode(error.code), message=error.message, details=error.details
            ),
        )
        await self._delivery.to_request(target, message)
        return Outcome.FAILED

    async def _hand_back(self, request: AsyncRequest, progress: Progress) -> Outcome:
        """Release the request before the deadline, unless that would loop forever.

        Every hand-back is followed by a new claim, and every claim is an attempt:
        once a request has had `max_retries + 1` claims (the sweeper's budget
        too), an action that cannot finish inside one processor invocation fails
        with TIMEOUT instead of being handed back and restarted endlessly.
        """
        if request.attempt > request.max_retries:
            logger.warning("deadline near and attempts spent; failing", extra=_extra(request))
            error = RequestError(
                ErrorCode.TIMEOUT,
                f"the action did not finish within the processor's time limit in "
                f"{request.attempt} attempts; its timeout ({request.timeout_s:g} s) must "
                "fit in one processor invocation",
            )
            return await self._finish_failed(request, error, progress)
        logger.info("deadline near; handing the request back", extra=_extra(request))
        # The last report goes with it (not waiting for a snapshot write in flight):
        # the next run starts from it, not from an older one (percentages never go back).
        release = transitions.release(
            attempt=request.attempt, now=self._clock.now(), progress=progress.snapshot()
        )
        released = await self._store_call(
            "release", lambda: self._requests.apply(request.key, release)
        )
        if released is None:
            return await self._after_refusal(request)
        return Outcome.HANDED_BACK

    async def _after_cancel_signal(
        self, request: AsyncRequest, exc: RequestCancelled, progress: Progress
    ) -> Outcome:
        stored = await self._store_call("get", lambda: self._requests.get(request.key))
        if stored is not None and stored.status is RequestStatus.CANCELLED:
            # The router already told the followers.
            return Outcome.CANCELLED
        if _is_ours(stored, request):
            # The action raised RequestCancelled on its own: a failure with its code.
            error = RequestError(exc.code, exc.message, _details(exc.details))
            return await self._finish_failed(request, error, progress)
        return Outcome.LOST

    async def _after_refusal(self, request: AsyncRequest) -> Outcome:
        """A conditional write was refused: cancelled meanwhile, or not ours any more."""
        stored = await self._store_call("get", lambda: self._requests.get(request.key))
        if stored is not None and stored.status is RequestStatus.CANCELLED:
            return Outcome.CANCELLED
        logger.warning("write refused; ownership lost", extra=_extra(request))
        return Outcome.LOST

    async def _already(self, request: AsyncRequest, status: RequestStatus) -> bool:
        """Whether a refused write had in fact landed (a retried call whose first
        try succeeded but whose answer was lost)."""
        stored = await self._store_call("get", lambda: self._requests.get(request.key))
        return stored is not None and stored.status is status and stored.attempt == request.attempt

    # -- time and retries --------------------------------------------------------

    def _time_bound(self, timeout_s: float, deadline: datetime | None) -> tuple[float, bool]:
        """How long the next run may take, and whether the deadline is what limits it."""
        if deadline is None:
            return timeout_s, False
        left_s = self.seconds_left(deadline)
        if left_s < timeout_s:
            return left_s, True
        return timeout_s, False

    def seconds_left(self, deadline: datetime) -> float:
        """How long work may still run before `deadline`, less `DEADLINE_MARGIN_S`
        (at or below 0: there is no time to start anything)."""
        return (deadline - self._clock.now()).total_seconds() - DEADLINE_MARGIN_S

    def _backoff_s(self, retry_index: int) -> float:
        """Exponential backoff with equal jitter: half fixed, half random."""
        ceiling = min(self._backoff_max_s, self._backoff_base_s * 2.0**retry_index)
        return ceiling / 2 + self._rng.uniform(0, ceiling / 2)

    def _expires_at(self, now: datetime) -> int:
        return int((now + timedelta(days=self._settings.request_ttl_days)).timestamp())

    async def _store_call(self, operation: str, call: Callable[[], Awaitable[T]]) -> T:
        """One store call, retried with backoff on store errors; the last error
        propagates. `ItemTooLarge` and `UnstorableValue` are not transient and
        propagate at once."""
        for attempt in range(1, STORE_ATTEMPTS + 1):
            try:
                return await call()
            except (ItemTooLarge, UnstorableValue):
                raise
            except Exception:
                if attempt == STORE_ATTEMPTS:
                    raise
                logger.warning(
                    "store call failed; retrying",
                    extra={"reason": operation, "attempt": attempt},
                    exc_info=True,
                )
                await self._clock.sleep(
                    min(self._backoff_max_s, self._backoff_base_s * 2.0**attempt)
                )
        raise AssertionError("unreachable")  # pragma: no cover


def _as_written(written: AsyncRequest | None, request: AsyncRequest) -> AsyncRequest:
    """Who an outcome goes to: the request its write returned (which shows any
    `subscribe` mark made before it), or, when the write's answer was lost,
    `request` counted as followed."""
    return written if written is not None else dataclasses.replace(request, followed=True)


def _is_ours(stored: AsyncRequest | None, request: AsyncRequest) -> bool:
    return (
        stored is not None
        and stored.status is RequestStatus.PROCESSING
        and stored.attempt == request.attempt
    )


def _validated_payload(spec: ActionSpec, payload: dict[str, Any]) -> Any:
    if spec.payload_model is None:
        return dict(payload)
    return spec.payload_model.model_validate(payload)


def _build_request(
    request: AsyncRequest, payload: Any, *, run_number: int, push: Pusher
) -> Request[Any]:
    return Request(
        request_id=request.request_id,
        action=request.action,
        payload=payload,
        connection_id=request.connection_id,
        user_id=request.user_id,
        tenant_id=request.tenant_id,
        received_at=request.created_at,
        metadata=request_metadata(request),
        permissions=request_permissions(request),
        attempt=run_number,
        push=push,
    )


def request_metadata(request: AsyncRequest) -> dict[str, Any]:
    """The client's `metadata` of a stored request (the router keeps it under `client`)."""
    client = request.metadata.get("client", {})
    return dict(client) if isinstance(client, dict) else {}


def request_permissions(request: AsyncRequest) -> tuple[str, ...]:
    """The connection's permissions when the request was made (kept under `permissions`)."""
    permissions = request.metadata.get("permissions", [])
    if not isinstance(permissions, list):
        return ()
    return tuple(str(p) for p in permissions)


async def _call(spec: ActionSpec, req: Request[Any], progress: Progress) -> Any:
    if spec.takes_progress:
        return await spec.handler(req, progress)
    return await spec.handler(req)


def _details(details: dict[str, Any] | list[Any] | None) -> dict[str, Any] | None:
    """Error details as stored: a JSON object (a list is kept under `errors`)."""
    if details is None:
        return None
    if isinstance(details, list):
        return {"errors": to_jsonable_python(details, fallback=str)}
    safe: dict[str, Any] = to_jsonable_python(details, fallback=str)
    return safe


def validation_details(exc: ValidationError) -> list[Any]:
    """Pydantic's error list, JSON-safe, without inputs, URLs or context."""
    errors = exc.errors(include_url=False, include_input=False, include_context=False)
    safe: list[Any] = to_jsonable_python(errors, fallback=str)
    return safe


def _extra(request: AsyncRequest) -> dict[str, Any]:
    return {
        "request_id": request.request_id,
        "connection_id": request.connection_id,
        "action": request.action,
        "attempt": request.attempt,
    }
