"""`$connect` entrypoint: authenticate the handshake and store the connection.

Returns `{"statusCode": 200}` to accept, or the refusal's status (401 bad or
missing token, or two `Authorization` values; 403 tenant not allowed, 429 too
many connections) with nothing stored; API Gateway then fails the upgrade with
that status. Every value of the query and headers is handed to the core
(`multiValue...`), which decides which token, or that it is ambiguous.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from adapters.aws_lambda.events import WebSocketEvent
from adapters.aws_lambda.metrics import Metric
from adapters.aws_lambda.runtime import LambdaContext, Runtime, invoke
from streamer.connections import Handshake
from streamer.errors import ConnectRefused

__all__ = ["handler"]

logger = logging.getLogger("streamer.lambda.connect")


def handler(event: Mapping[str, Any], context: LambdaContext | None) -> dict[str, Any]:
    """Lambda entrypoint of the `$connect` route."""
    return invoke("connect", context, lambda runtime: connect(runtime, event, context))


async def connect(
    runtime: Runtime, raw: Mapping[str, Any], context: LambdaContext | None
) -> dict[str, Any]:
    """Accept or refuse one handshake."""
    started = time.perf_counter()
    event = WebSocketEvent.parse(raw)
    metrics = runtime.metrics(context)
    handshake = Handshake(
        connection_id=event.connection_id,
        endpoint=runtime.settings.websocket_endpoint or event.endpoint,
        query=event.query_values,
        headers=event.header_values,
        source_ip=event.source_ip,
        user_agent=event.user_agent,
    )
    status_code = 200
    try:
        await runtime.services.connections.connect(handshake)
    except ConnectRefused as exc:
        status_code = exc.status_code
        if status_code in (401, 403):
            metrics.add(Metric.AUTHENTICATION_FAILED)
    except Exception:
        logger.exception("connect failed", extra={"connection_id": event.connection_id})
        status_code = 500
    else:
        metrics.add(Metric.CONNECTION_ESTABLISHED)
        await runtime.record_active_connections(metrics)
    metrics.flush()
    logger.info(
        "connect handled",
        extra={
            "connection_id": event.connection_id,
            "action": event.route_key,
            "status": status_code,
            "duration_ms": round((time.perf_counter() - started) * 1000, 1),
        },
    )
    return {"statusCode": status_code}
