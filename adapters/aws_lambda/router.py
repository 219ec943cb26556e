"""`$default` entrypoint: one client frame in, the reply posted back to the client.

Every reply (a sync `response`, an `acknowledgment`, an `error`) is posted to
the connection through the management API, the same path progress and
completions take; the route response is not used (no route response is
configured, so API Gateway discards the returned `statusCode`, which is kept
for the logs: 200 delivered, 410 connection gone, 500 not delivered).

A frame from a connection that has no record (expired, or deleted after a
failed post) is answered `UNAUTHORIZED`: the client should reconnect.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from adapters.aws_lambda.events import WebSocketEvent
from adapters.aws_lambda.metrics import Metric
from adapters.aws_lambda.runtime import LambdaContext, Runtime, invoke
from streamer.errors import ConnectionGone, ErrorCode, StreamerError
from streamer.protocol import Acknowledgment, ServerMessage, decode_client_message, error_message

__all__ = ["handler"]

logger = logging.getLogger("streamer.lambda.router")

_NOT_REGISTERED = StreamerError(
    ErrorCode.UNAUTHORIZED, "connection is not registered; reconnect with a valid token"
)

_LOOKUP_FAILED = StreamerError(ErrorCode.INTERNAL_ERROR, "internal error; try again")


def handler(event: Mapping[str, Any], context: LambdaContext | None) -> dict[str, Any]:
    """Lambda entrypoint of the `$default` route."""
    return invoke("router", context, lambda runtime: route(runtime, event, context))


async def route(
    runtime: Runtime, raw: Mapping[str, Any], context: LambdaContext | None
) -> dict[str, Any]:
    """Route one frame and post the reply."""
    started = time.perf_counter()
    event = WebSocketEvent.parse(raw)
    frame = event.body if event.body is not None else ""
    metrics = runtime.metrics(context)
    reply: ServerMessage
    try:
        connection = await runtime.stores.connections.get(event.connection_id)
    except StreamerError:
        logger.exception("connection lookup failed", extra={"connection_id": event.connection_id})
        reply = error_message(_LOOKUP_FAILED, at=runtime.clock.now())
    else:
        if connection is None:
            reply = error_message(_NOT_REGISTERED, at=runtime.clock.now())
        else:
            reply = await runtime.services.router.route(connection, frame)
    status_code = await _post(runtime, event, reply)
    if isinstance(reply, Acknowledgment) and status_code != 410:
        metrics.add(Metric.REQUESTS_QUEUED)
    metrics.flush()
    logger.info(
        "message handled",
        extra={
            "connection_id": event.connection_id,
            "request_id": getattr(reply, "request_id", None),
            "action": _action_of(frame),
            "outcome": reply.type,
            "status": status_code,
            "duration_ms": round((time.perf_counter() - started) * 1000, 1),
        },
    )
    return {"statusCode": status_code}


async def _post(runtime: Runtime, event: WebSocketEvent, reply: ServerMessage) -> int:
    """Post the reply; a reply over the size limit is replaced by its error."""
    try:
        try:
            await runtime.notifier.send(event.connection_id, reply)
        except StreamerError as exc:
            if exc.code is not ErrorCode.PAYLOAD_TOO_LARGE:
                raise
            too_large = error_message(
                exc, at=runtime.clock.now(), request_id=getattr(reply, "request_id", None)
            )
            await runtime.notifier.send(event.connection_id, too_large)
    except ConnectionGone:
        # The client left before its answer: forget it, as a $disconnect would.
        await runtime.services.connections.disconnect(event.connection_id, reason="gone")
        return 410
    except StreamerError:
        logger.exception("reply not delivered", extra={"connection_id": event.connection_id})
        return 500
    return 200


def _action_of(frame: str | bytes) -> str | None:
    """The frame's action, for the log line (None when the frame is not valid)."""
    try:
        return decode_client_message(frame).action
    except StreamerError:
        return None
