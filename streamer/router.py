"""The router: one client message in, one verdict out (plus fan-out on cancel)."""

from __future__ import annotations

import contextlib
import logging
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError
from pydantic_core import PydanticSerializationError, to_jsonable_python

from streamer import transitions
from streamer.app import RESERVED_ACTIONS, ActionSpec, Request, Streamer
from streamer.delivery import Delivery
from streamer.eager import LazyTimeout
from streamer.errors import (
    ErrorCode,
    ItemTooLarge,
    StoreUnavailable,
    StreamerError,
    UnstorableValue,
)
from streamer.frames import Close, FrameKind, Verdict
from streamer.ids import new_request_id
from streamer.models import (
    AsyncRequest,
    Connection,
    RequestId,
    RequestKey,
    RequestStatus,
    Subscription,
    request_key,
)
from streamer.ports import Clock, RequestStore, SubscriptionStore
from streamer.processor import validation_details
from streamer.progress import DetachedProgress
from streamer.protocol import (
    MAX_CLIENT_ID_CHARS,
    MAX_PARTITION_KEY_BYTES,
    Acknowledgment,
    ClientMessage,
    ErrorBody,
    ErrorMessage,
    Response,
    ServerMessage,
    decode_client_message,
    encoded_size,
    error_message,
    format_timestamp,
    is_valid_request_id,
)
from streamer.push import UNWIRED_PUSHER, Pusher
from streamer.ratelimit import RateLimiter
from streamer.settings import Settings

__all__ = ["Router", "request_snapshot"]

logger = logging.getLogger(__name__)

_NOT_FOUND = "request not found"
_INTERNAL = "internal error"


class Router:
    """Decodes a frame, applies the rate limit, answers built-ins (`ping`,
    `status`, `subscribe`, `cancel`), runs sync actions with their timeout, and
    validates and enqueues async ones.

    Every frame counts against the rate limit, even one that does not decode;
    a frame that does not decode is answered with its decoding error first.
    A reply's `request_id` is the frame's `id`, or a server-made one when the
    frame has none (an async request is stored under that id).

    Args:
        app: the user's actions.
        requests, subscriptions: the stores.
        delivery: fan-out to a request's followers (used by `cancel`).
        limiter: per-connection rate limit.
        clock: time source.
        settings: async threshold, TTLs, the frame policy's limits.
        pusher: handed to sync actions as `req.push` (optional).
    """

    def __init__(
        self,
        *,
        app: Streamer,
        requests: RequestStore,
        subscriptions: SubscriptionStore,
        delivery: Delivery,
        limiter: RateLimiter,
        clock: Clock,
        settings: Settings,
        pusher: Pusher | None = None,
    ) -> None:
        self._app = app
        self._requests = requests
        self._subscriptions = subscriptions
        self._delivery = delivery
        self._limiter = limiter
        self._clock = clock
        self._settings = settings
        self._policy = settings.frame_policy
        self._pusher = pusher if pusher is not None else UNWIRED_PUSHER

    async def route(
        self, connection: Connection, frame: str | bytes, *, is_fragmented: bool = False
    ) -> Verdict:
        """The verdict on one client message: `Close` for a binary frame (1003) or
        one over the size limits (1009); otherwise `Send` with the one reply
        (`response`, `acknowledgment` or `error`), encoded and within the limit.

        Args:
            connection: whose message it is.
            frame: the message as received: `str` for text, `bytes` for binary.
            is_fragmented: it came in several frames (only the message limit
                applies to its total).

        Never raises: every failure becomes an `error` message (internal ones as
        INTERNAL_ERROR, logged with the request id, no details leaked).
        """
        kind = FrameKind.BINARY if isinstance(frame, bytes) else FrameKind.TEXT
        closing = self._policy.check(kind, encoded_size(frame), is_fragmented=is_fragmented)
        if isinstance(closing, Close):
            logger.info(
                "frame refused",
                extra={
                    "connection_id": connection.connection_id,
                    "outcome": f"close {int(closing.code)}",
                },
            )
            return closing
        return self._policy.reply(await self._answer(connection, frame))

    async def _answer(self, connection: Connection, frame: str | bytes) -> ServerMessage:
        allowed = self._limiter.allow(connection.connection_id)
        try:
            message = decode_client_message(frame)
        except StreamerError as exc:
            return error_message(exc, at=self._clock.now())
        reply_id = RequestId(message.id) if message.id is not None else new_request_id()
        if not allowed:
            logger.info(
                "rate limited",
                extra={"connection_id": connection.connection_id, "action": message.action},
            )
            return self._error(
                reply_id, ErrorCode.RATE_LIMITED, "too many messages; slow down", None
            )
        started = self._clock.monotonic()
        try:
            reply = await self._dispatch(connection, message, reply_id)
        except StoreUnavailable:
            # The store's own words (AWS error codes) are for the log, not the client.
            logger.exception(
                "state store unavailable",
                extra={
                    "request_id": reply_id,
                    "connection_id": connection.connection_id,
                    "action": message.action,
                },
            )
            reply = self._error(reply_id, ErrorCode.INTERNAL_ERROR, _INTERNAL, None)
        except StreamerError as exc:
            details = to_jsonable_python(exc.details, fallback=str)
            reply = self._error(reply_id, exc.code, exc.message, details)
        except Exception:
            logger.exception(
                "routing failed",
                extra={
                    "request_id": reply_id,
                    "connection_id": connection.connection_id,
                    "action": message.action,
                },
            )
            reply = self._error(reply_id, ErrorCode.INTERNAL_ERROR, _INTERNAL, None)
        # Per message, so DEBUG (and not even built otherwise): at INFO this one
        # line was a third of a sync round trip's CPU. Queued, finished, failed
        # and refused requests keep their INFO lines.
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "message routed",
                extra={
                    "request_id": reply_id,
                    "connection_id": connection.connection_id,
                    "action": message.action,
                    "outcome": reply.type,
                    "duration_ms": round((self._clock.monotonic() - started) * 1000),
                },
            )
        return reply

    async def _dispatch(
        self, connection: Connection, message: ClientMessage, reply_id: RequestId
    ) -> ServerMessage:
        action = message.action
        if action in RESERVED_ACTIONS:
            return await self._builtin(connection, message, reply_id)
        spec = self._app.get(action)
        if spec is None:
            raise StreamerError(
                ErrorCode.INVALID_ACTION, f"unknown action {action!r}", {"action": action}
            )
        try:
            payload = (
                spec.payload_model.model_validate(message.payload)
                if spec.payload_model is not None
                else dict(message.payload)
            )
        except ValidationError as exc:
            raise StreamerError(
                ErrorCode.VALIDATION_ERROR, "payload is invalid", validation_details(exc)
            ) from None
        if spec.resolved_mode(self._settings.async_threshold_s) == "sync":
            return await self._run_sync(connection, message, spec, payload, reply_id)
        return await self._enqueue(connection, message, spec, reply_id)

    # -- built-ins -----------------------------------------------------------------

    async def _builtin(
        self, connection: Connection, message: ClientMessage, reply_id: RequestId
    ) -> ServerMessage:
        if message.action == "ping":
            pong = {"pong": True, "connection_id": connection.connection_id}
            return Response(timestamp=self._clock.now(), request_id=reply_id, data=pong)

        target = message.payload.get("request_id")
        if not is_valid_request_id(target):
            raise StreamerError(
                ErrorCode.VALIDATION_ERROR,
                "payload.request_id must be a non-empty string",
                [
                    {
                        "type": "string_type",
                        "loc": ["request_id"],
                        "msg": f"a string of 1 to {MAX_CLIENT_ID_CHARS} printable characters"
                        " is required",
                    }
                ],
            )
        key = _storable_key(connection, target)
        now = self._clock.now()

        data: dict[str, Any]
        if message.action == "cancel":
            cancelled = await self._requests.apply(
                key, transitions.cancel(now=now, expires_at=self._request_expiry(now))
            )
            if cancelled is None:
                current = await self._requests.get(key)
                if current is None:
                    raise StreamerError(ErrorCode.NOT_FOUND, _NOT_FOUND)
                data = {
                    "request_id": target,
                    "status": current.status.value,
                    "cancelled": False,
                }
                return Response(timestamp=now, request_id=reply_id, data=data)
            logger.info(
                "request cancelled",
                extra={
                    "request_id": target,
                    "connection_id": connection.connection_id,
                    "action": cancelled.action,
                },
            )
            notice = ErrorMessage(
                timestamp=now,
                request_id=target,
                error=ErrorBody(code=ErrorCode.CANCELLED, message="request was cancelled"),
            )
            await self._delivery.to_request(cancelled, notice)
            data = {
                "request_id": target,
                "status": RequestStatus.CANCELLED.value,
                "cancelled": True,
            }
            return Response(timestamp=self._clock.now(), request_id=reply_id, data=data)

        stored = await self._requests.get(key)
        if stored is None:
            raise StreamerError(ErrorCode.NOT_FOUND, _NOT_FOUND)
        if message.action == "status":
            return Response(timestamp=now, request_id=reply_id, data=request_snapshot(stored))

        # subscribe
        subscribed = False
        if not stored.status.is_terminal:
            ttl = timedelta(hours=self._settings.connection_ttl_hours)
            await self._subscriptions.add(
                Subscription(
                    key=key,
                    connection_id=connection.connection_id,
                    created_at=now,
                    expires_at=int((now + ttl).timestamp()),
                )
            )
            self._delivery.subscribed(key)
            subscribed = True
            # Marked after the subscription exists: an outcome written after the mark
            # looks the subscribers up; one written before it (the final message sent
            # before this connection was on the list) is in the snapshot returned.
            try:
                marked = await self._requests.apply(key, transitions.follow())
            except Exception:
                # Unmarked, an outcome written elsewhere would skip this follower:
                # take the subscription back, and the client sees the store error.
                with contextlib.suppress(Exception):
                    await self._subscriptions.remove(key, connection.connection_id)
                raise
            stored = marked or await self._requests.get(key) or stored
        data = {**request_snapshot(stored), "subscribed": subscribed}
        return Response(timestamp=self._clock.now(), request_id=reply_id, data=data)

    # -- app actions -----------------------------------------------------------------

    async def _run_sync(
        self,
        connection: Connection,
        message: ClientMessage,
        spec: ActionSpec,
        payload: Any,
        reply_id: RequestId,
    ) -> ServerMessage:
        req = Request(
            request_id=reply_id,
            action=spec.name,
            payload=payload,
            connection_id=connection.connection_id,
            user_id=connection.user_id,
            tenant_id=connection.tenant_id,
            received_at=self._clock.now(),
            metadata=dict(message.metadata),
            permissions=connection.metadata.permissions,
            push=self._pusher,
        )
        timeout_s = spec.effective_timeout_s(self._settings.async_threshold_s)
        scope = LazyTimeout(timeout_s)
        try:
            if spec.takes_progress:
                result = await scope.run(spec.handler(req, DetachedProgress()))
            else:
                result = await scope.run(spec.handler(req))
            data = to_jsonable_python(result)
        except StreamerError:
            raise
        except TimeoutError:
            extra = _log_extra(reply_id, connection, spec.name)
            if not scope.expired():
                logger.exception("sync action raised TimeoutError", extra=extra)
                raise StreamerError(ErrorCode.INTERNAL_ERROR, _INTERNAL) from None
            logger.warning("sync action timed out", extra=extra)
            raise StreamerError(
                ErrorCode.TIMEOUT, f"action timed out after {timeout_s:g} s"
            ) from None
        except PydanticSerializationError:
            extra = _log_extra(reply_id, connection, spec.name)
            logger.exception("sync action returned a value that is not JSON", extra=extra)
            raise StreamerError(ErrorCode.INTERNAL_ERROR, _INTERNAL) from None
        except Exception:
            extra = _log_extra(reply_id, connection, spec.name)
            logger.exception("sync action raised an unexpected exception", extra=extra)
            raise StreamerError(ErrorCode.INTERNAL_ERROR, _INTERNAL) from None
        return Response(timestamp=self._clock.now(), request_id=reply_id, data=data)

    async def _enqueue(
        self,
        connection: Connection,
        message: ClientMessage,
        spec: ActionSpec,
        reply_id: RequestId,
    ) -> ServerMessage:
        now = self._clock.now()
        request = AsyncRequest(
            key=_storable_key(connection, reply_id),
            request_id=reply_id,
            connection_id=connection.connection_id,
            user_id=connection.user_id,
            tenant_id=connection.tenant_id,
            action=spec.name,
            payload=dict(message.payload),
            status=RequestStatus.PENDING,
            created_at=now,
            updated_at=now,
            max_retries=spec.max_retries,
            timeout_s=spec.effective_timeout_s(self._settings.async_threshold_s),
            # The processor reads these back (`processor.request_metadata/permissions`).
            metadata={
                "client": dict(message.metadata),
                "permissions": list(connection.metadata.permissions),
            },
            followed=False,
        )
        extra = {
            "request_id": reply_id,
            "connection_id": connection.connection_id,
            "action": spec.name,
        }
        try:
            result = await self._requests.enqueue(request)
        except ItemTooLarge:
            raise StreamerError(
                ErrorCode.PAYLOAD_TOO_LARGE, "the request is too large to store"
            ) from None
        except UnstorableValue:
            raise  # VALIDATION_ERROR, saying which value cannot be kept
        except Exception:
            logger.exception("could not enqueue the request", extra=extra)
            raise StreamerError(ErrorCode.INTERNAL_ERROR, _INTERNAL) from None
        if result.created:
            logger.info("request queued", extra=extra)
            return Acknowledgment(timestamp=self._clock.now(), request_id=reply_id)
        status = result.request.status.value.lower()
        return Acknowledgment(
            timestamp=self._clock.now(),
            request_id=reply_id,
            status=status,
            message=f"Request already received ({status})",
        )

    # -- helpers -------------------------------------------------------------------------

    def _error(
        self, request_id: str | None, code: ErrorCode, message: str, details: Any
    ) -> ErrorMessage:
        return ErrorMessage(
            timestamp=self._clock.now(),
            request_id=request_id,
            error=ErrorBody(code=code, message=message, details=details),
        )

    def _request_expiry(self, now: datetime) -> int:
        return int((now + timedelta(days=self._settings.request_ttl_days)).timestamp())


def _log_extra(request_id: str, connection: Connection, action: str) -> dict[str, str]:
    """The ids a log line about one request carries (built only when one is written)."""
    return {"request_id": request_id, "connection_id": connection.connection_id, "action": action}


def _storable_key(connection: Connection, request_id: str) -> RequestKey:
    """The request's key, refused when DynamoDB could not hold it (the tenant and
    user come from the token, and may be long)."""
    key = request_key(connection.tenant_id, connection.user_id, request_id)
    if len(key.encode("utf-8")) > MAX_PARTITION_KEY_BYTES:
        raise StreamerError(
            ErrorCode.VALIDATION_ERROR,
            f"the request key (tenant, user and id) is over {MAX_PARTITION_KEY_BYTES} bytes",
        )
    return key


def request_snapshot(request: AsyncRequest) -> dict[str, Any]:
    """What `status` and `subscribe` show of a stored request: no storage key,
    tenant or user."""
    snapshot: dict[str, Any] = {
        "request_id": request.request_id,
        "action": request.action,
        "status": request.status.value,
        "progress": request.progress,
        "message": request.progress_message,
        "details": request.progress_details,
        "created_at": format_timestamp(request.created_at),
        "updated_at": format_timestamp(request.updated_at),
    }
    if request.status is RequestStatus.COMPLETED:
        snapshot["result"] = request.result
    elif request.status in (RequestStatus.FAILED, RequestStatus.CANCELLED):
        error = request.error
        if error is None and request.status is RequestStatus.CANCELLED:
            snapshot["error"] = {"code": "CANCELLED", "message": "request was cancelled"}
        elif error is not None:
            snapshot["error"] = {
                "code": error.code,
                "message": error.message,
                "details": error.details,
            }
    return snapshot
