"""`$disconnect` entrypoint: delete the connection record and its subscriptions.

API Gateway ignores the result (the socket is already closed) and calls this
best-effort; records it misses expire through their TTL or are deleted when a
post finds the connection gone.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from adapters.aws_lambda.events import WebSocketEvent
from adapters.aws_lambda.metrics import Metric
from adapters.aws_lambda.runtime import LambdaContext, Runtime, invoke

__all__ = ["handler"]

logger = logging.getLogger("streamer.lambda.disconnect")


def handler(event: Mapping[str, Any], context: LambdaContext | None) -> dict[str, Any]:
    """Lambda entrypoint of the `$disconnect` route."""
    return invoke("disconnect", context, lambda runtime: disconnect(runtime, event, context))


async def disconnect(
    runtime: Runtime, raw: Mapping[str, Any], context: LambdaContext | None
) -> dict[str, Any]:
    """Forget one connection (idempotent)."""
    started = time.perf_counter()
    event = WebSocketEvent.parse(raw)
    metrics = runtime.metrics(context)
    status_code = 200
    try:
        await runtime.services.connections.disconnect(
            event.connection_id, reason=event.disconnect_reason
        )
    except Exception:
        logger.exception("disconnect failed", extra={"connection_id": event.connection_id})
        status_code = 500
    else:
        metrics.add(Metric.CONNECTION_CLOSED)
        await runtime.record_active_connections(metrics)
    metrics.flush()
    logger.info(
        "disconnect handled",
        extra={
            "connection_id": event.connection_id,
            "action": event.route_key,
            "status": status_code,
            "code": event.disconnect_status_code,
            "reason": event.disconnect_reason,
            "duration_ms": round((time.perf_counter() - started) * 1000, 1),
        },
    )
    return {"statusCode": status_code}
