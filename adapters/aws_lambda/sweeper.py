"""Scheduled entrypoint (an EventBridge rule, e.g. every minute): recover requests
whose processor died or whose stream record was lost, and publish `ActiveConnections`
(the counter item, corrected from a scan at most hourly)."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from datetime import timedelta
from typing import Any, Final

from adapters.aws_lambda.metrics import Metric
from adapters.aws_lambda.runtime import LambdaContext, Runtime, invoke

__all__ = ["BATCH_LIMIT", "handler"]

logger = logging.getLogger("streamer.lambda.sweeper")

BATCH_LIMIT: Final = 100
"""Expired leases and stale PENDING requests recovered per pass (each); passes
repeat while a pass moves that many."""
_MARGIN: Final = timedelta(seconds=5)


def handler(event: Mapping[str, Any], context: LambdaContext | None) -> dict[str, Any]:
    """Lambda entrypoint of the scheduled sweep."""
    return invoke("sweeper", context, lambda runtime: sweep(runtime, event, context))


async def sweep(
    runtime: Runtime, raw: Mapping[str, Any], context: LambdaContext | None
) -> dict[str, Any]:
    """Sweep expired leases and stale PENDING requests until none are left or time
    runs short."""
    started = time.perf_counter()
    deadline = runtime.deadline(context, margin=_MARGIN)
    metrics = runtime.metrics(context)
    requeued = failed = kicked = 0
    while True:
        report = await runtime.services.sweeper.sweep_once(limit=BATCH_LIMIT)
        requeued += report.requeued
        failed += report.failed
        kicked += report.kicked
        moved = report.requeued + report.failed + report.kicked
        if moved < BATCH_LIMIT or runtime.clock.now() >= deadline:
            break
    if failed:
        metrics.add(Metric.REQUESTS_FAILED, failed)
    try:
        metrics.set(Metric.ACTIVE_CONNECTIONS, await runtime.active_connections.refresh())
    except Exception:
        logger.warning("could not count active connections", exc_info=True)
    metrics.flush()
    logger.info(
        "sweep done",
        extra={
            "count": requeued + failed + kicked,
            "outcome": f"requeued={requeued} kicked={kicked} failed={failed}",
            "duration_ms": round((time.perf_counter() - started) * 1000, 1),
        },
    )
    return {"requeued": requeued, "failed": failed, "kicked": kicked}
