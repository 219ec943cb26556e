"""`$default` entrypoint: one client message in, the core's verdict obeyed.

A `Send` verdict (a sync `response`, an `acknowledgment`, an `error`) is posted
to the connection through the management API, the same path progress and
completions take. A `Close` verdict (a binary frame: 1003; over 128 KB: 1009)
deletes the connection through the management API, which is how a Lambda
closes a socket; API Gateway itself already closes on these frames before any
Lambda runs, so this is the same rule applied once more, never a second one.
The message reaches Lambda whole: API Gateway applied the 32 KB frame limit.

The route response is not used (no route response is configured, so API
Gateway discards the returned `statusCode`, which is kept for the logs: 200
delivered or closed, 410 connection gone, 500 not delivered; `closeCode` says
which close the verdict asked for).

A message from a connection that has no record (expired, or deleted after a
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
from streamer.frames import Close, Send, Verdict
from streamer.protocol import Acknowledgment, decode_client_message, error_message

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
    """Route one message and obey the verdict: post the reply, or close."""
    started = time.perf_counter()
    event = WebSocketEvent.parse(raw)
    frame = event.body if event.body is not None else ""
    metrics = runtime.metrics(context)
    policy = runtime.settings.frame_policy
    verdict: Verdict
    try:
        connection = await runtime.stores.connections.get(event.connection_id)
    except StreamerError:
        logger.exception("connection lookup failed", extra={"connection_id": event.connection_id})
        verdict = policy.reply(error_message(_LOOKUP_FAILED, at=runtime.clock.now()))
    else:
        if connection is None:
            verdict = policy.reply(error_message(_NOT_REGISTERED, at=runtime.clock.now()))
        else:
            verdict = await runtime.services.router.route(connection, frame, is_fragmented=True)
    result: dict[str, Any]
    if isinstance(verdict, Close):
        status_code = await _close(runtime, event, verdict)
        result = {"statusCode": status_code, "closeCode": int(verdict.code)}
        outcome, request_id = f"close {int(verdict.code)}", None
    else:
        status_code = await _post(runtime, event, verdict)
        result = {"statusCode": status_code}
        outcome, request_id = verdict.message.type, getattr(verdict.message, "request_id", None)
        if isinstance(verdict.message, Acknowledgment) and status_code != 410:
            metrics.add(Metric.REQUESTS_QUEUED)
    metrics.flush()
    logger.info(
        "message handled",
        extra={
            "connection_id": event.connection_id,
            "request_id": request_id,
            "action": _action_of(frame),
            "outcome": outcome,
            "status": status_code,
            "duration_ms": round((time.perf_counter() - started) * 1000, 1),
        },
    )
    return result


async def _post(runtime: Runtime, event: WebSocketEvent, verdict: Send) -> int:
    """Post the reply (the core made sure it is within the message limit)."""
    try:
        await runtime.notifier.send(event.connection_id, verdict.message)
    except ConnectionGone:
        # The client left before its answer: forget it, as a $disconnect would.
        await runtime.services.connections.disconnect(event.connection_id, reason="gone")
        return 410
    except StreamerError:
        logger.exception("reply not delivered", extra={"connection_id": event.connection_id})
        return 500
    return 200


async def _close(runtime: Runtime, event: WebSocketEvent, verdict: Close) -> int:
    """Close the socket (`DeleteConnection`); API Gateway then runs `$disconnect`."""
    management = runtime.management
    if management is None:
        logger.error(
            "cannot close the connection: WEBSOCKET_ENDPOINT is not configured",
            extra={"connection_id": event.connection_id},
        )
        return 500
    try:
        deleted = await management.delete_connection(event.connection_id)
    except StreamerError:
        logger.exception("close not delivered", extra={"connection_id": event.connection_id})
        return 500
    return 200 if deleted else 410


def _action_of(frame: str | bytes) -> str | None:
    """The frame's action, for the log line (None when the frame is not valid)."""
    if isinstance(frame, bytes):
        return None
    try:
        return decode_client_message(frame).action
    except StreamerError:
        return None
