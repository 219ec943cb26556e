"""DynamoDB Streams entrypoint: claim and run the queued requests of a batch.

The records of a batch are independent requests, so they run concurrently (up
to `MAX_CONCURRENT_RECORDS`): one long action does not hold up the others, as
it would one at a time. The function returns a partial batch response,
`{"batchItemFailures": [{"itemIdentifier": <SequenceNumber>}, ...]}`: the first
record that failed (unreadable: any error of the parser; a store error escaping
the processor; or not started for lack of time) is reported with every later
one, so the lowest reported sequence number becomes the checkpoint and nothing
before it is replayed. A later record that did complete is replayed harmlessly:
records that are not a claimable PENDING image are skipped, and so is a request
already claimed (the claim is a conditional write), so a replayed batch does
nothing twice.

Each action is bounded by the invocation's end less the core's one margin
(`streamer.processor.DEADLINE_MARGIN_S`): a request still running then is handed
back to PENDING. That write is itself a claimable stream record, so the
handed-back record is not reported.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, Final

from adapters.aws_lambda.events import StreamBatch, StreamRecord
from adapters.aws_lambda.metrics import Metric, MetricsBatch, Unit
from adapters.aws_lambda.runtime import LambdaContext, Runtime, invoke
from adapters.streams.records import UnreadableRecord, read_stream_record
from streamer.models import parse_request_key
from streamer.processor import Outcome

__all__ = ["MAX_CONCURRENT_RECORDS", "handler"]

logger = logging.getLogger("streamer.lambda.processor")

MAX_CONCURRENT_RECORDS: Final = 10
"""Records of one batch run at once (the mapping's batch size is 10)."""


def handler(event: Mapping[str, Any], context: LambdaContext | None) -> dict[str, Any]:
    """Lambda entrypoint of the requests table's stream."""
    return invoke("processor", context, lambda runtime: process(runtime, event, context))


async def process(
    runtime: Runtime, raw: Mapping[str, Any], context: LambdaContext | None
) -> dict[str, Any]:
    """Handle one batch; report the tail from the first record that must come again."""
    batch = StreamBatch.parse(raw)
    # The invocation's real end: the core processor keeps its one margin before it.
    deadline = runtime.deadline(context, margin=timedelta(0))
    processor = runtime.services.processor
    metrics = runtime.metrics(context)
    slots = asyncio.Semaphore(MAX_CONCURRENT_RECORDS)

    async def settle(record: StreamRecord) -> bool:
        """True when the stream need not deliver the record again."""
        async with slots:
            if processor.seconds_left(deadline) <= 0:
                return False
            return await _handle(runtime, record, deadline, metrics) is not None

    settled = await asyncio.gather(*(settle(record) for record in batch.records))
    first = next((i for i, ok in enumerate(settled) if not ok), len(settled))
    failed = batch.records[first:]
    if failed:
        logger.warning(
            f"records from {failed[0].sequence_number} on go back to the stream",
            extra={"count": len(failed)},
        )
    metrics.flush()
    return {"batchItemFailures": [{"itemIdentifier": r.sequence_number} for r in failed]}


async def _handle(
    runtime: Runtime, record: StreamRecord, deadline: datetime, metrics: MetricsBatch
) -> Outcome | None:
    """Handle one record; None when it failed and must be retried."""
    started = time.perf_counter()
    change = read_stream_record(record.raw, table_name=runtime.settings.requests_table)
    if isinstance(change, UnreadableRecord):
        logger.error(f"unreadable stream record {record.sequence_number}: {change.reason}")
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
    """The client-visible request id in a `<tenant>#<user>#<id>` storage key (the
    whole key, for a log line, when it is not one)."""
    try:
        return parse_request_key(key).request_id
    except ValueError:
        return key
