"""DynamoDB Streams entrypoint: claim and run the queued requests of a batch.

Returns a partial batch response, `{"batchItemFailures": [{"itemIdentifier":
<SequenceNumber>}, ...]}`. At the first record that fails (unparseable, or a
store error escaping the processor) that record and every later one are
reported and nothing after it is started: the lowest reported sequence number
becomes the checkpoint, so records already done are not replayed and the
failed one is retried first. Records that are not a claimable PENDING image are
skipped; a replayed record whose request was already claimed is skipped too
(the claim is a conditional write), so a replayed batch does nothing twice.

Each action is bounded by the invocation's remaining time less a margin: a
request still running then is handed back to PENDING (that write is itself a
claimable stream record, so the request is picked up again), and records not
yet started are reported for retry.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, Final

from adapters.aws_lambda.events import StreamBatch, StreamRecord
from adapters.aws_lambda.metrics import Metric, MetricsBatch, Unit
from adapters.aws_lambda.runtime import LambdaContext, Runtime, invoke
from adapters.streams import parse_stream_record
from streamer.processor import Outcome

__all__ = ["DEADLINE_MARGIN", "handler"]

logger = logging.getLogger("streamer.lambda.processor")

DEADLINE_MARGIN: Final = timedelta(seconds=3)
"""Time kept back from the invocation's remaining time to hand work back and
return the batch response before Lambda stops the function."""


def handler(event: Mapping[str, Any], context: LambdaContext | None) -> dict[str, Any]:
    """Lambda entrypoint of the requests table's stream."""
    return invoke("processor", context, lambda runtime: process(runtime, event, context))


async def process(
    runtime: Runtime, raw: Mapping[str, Any], context: LambdaContext | None
) -> dict[str, Any]:
    """Handle one batch in order; report the failed tail."""
    batch = StreamBatch.parse(raw)
    deadline = runtime.deadline(context, margin=DEADLINE_MARGIN)
    metrics = runtime.metrics(context)
    failed: tuple[StreamRecord, ...] = ()
    for index, record in enumerate(batch.records):
        if runtime.clock.now() >= deadline:
            logger.warning(
                "no time left, records handed back to the stream",
                extra={"count": len(batch.records) - index},
            )
            failed = batch.records[index:]
            break
        outcome = await _handle(runtime, record, deadline, metrics)
        if outcome is None:
            failed = batch.records[index:]
            break
        if outcome is Outcome.HANDED_BACK:
            # The hand-back wrote PENDING, a new claimable record: only the
            # records after this one still need the stream to deliver them again.
            failed = batch.records[index + 1 :]
            break
    metrics.flush()
    return {"batchItemFailures": [{"itemIdentifier": r.sequence_number} for r in failed]}


async def _handle(
    runtime: Runtime, record: StreamRecord, deadline: datetime, metrics: MetricsBatch
) -> Outcome | None:
    """Handle one record; None when it failed and must be retried."""
    started = time.perf_counter()
    try:
        change = parse_stream_record(record.raw, table_name=runtime.settings.requests_table)
    except ValueError as exc:
        logger.error(f"unreadable stream record {record.sequence_number}: {exc}")
        return None
    try:
        outcome = await runtime.services.processor.handle(change, deadline=deadline)
    except Exception:
        logger.exception(
            f"stream record {record.sequence_number} failed",
            extra={"request_id": _client_id_of(change.key)},
        )
        return None
    duration_ms = round((time.perf_counter() - started) * 1000, 1)
    if outcome is Outcome.COMPLETED:
        metrics.add(Metric.REQUESTS_COMPLETED)
    elif outcome is Outcome.FAILED:
        metrics.add(Metric.REQUESTS_FAILED)
    if outcome in (Outcome.COMPLETED, Outcome.FAILED):
        metrics.add(Metric.PROCESSING_LATENCY, duration_ms, Unit.MILLISECONDS)
    if outcome is not Outcome.SKIPPED:
        logger.info(
            "stream record handled",
            extra={
                "request_id": _client_id_of(change.key),
                "outcome": outcome.value,
                "duration_ms": duration_ms,
            },
        )
    return outcome


def _client_id_of(key: str) -> str:
    """The client-visible request id in a `<tenant>#<user>#<id>` storage key."""
    return key.split("#", 2)[-1]
