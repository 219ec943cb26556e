"""The stream poller on moto's DynamoDB Streams, like Lambda's event-source mapping:
order per request, concurrency across requests, checkpoints that only move past
finished records, retries, iterator expiry and restarts."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from adapters.aws import client_kwargs, get_session
from adapters.dynamodb import DynamoDBStores, create_tables, open_stores
from adapters.streams.reader import ShardReader
from emulator.checkpoints import CheckpointFile
from emulator.streams import StreamPoller
from streamer import transitions
from streamer.clock import SystemClock
from streamer.models import (
    AsyncRequest,
    ConnectionId,
    RequestChange,
    RequestId,
    RequestKey,
    RequestStatus,
    TenantId,
    UserId,
    request_key,
)
from streamer.processor import Outcome
from streamer.settings import Settings

WAIT_S = 15.0
ARN = "arn:aws:dynamodb:us-east-1:123456789012:table/requests/stream/2026-01-01T00:00:00.000"


class ScriptedProcessor:
    """Stands in for the core `Processor`: records what it is handed, can hold a
    request at a gate, and can fail a request's first attempts."""

    def __init__(self) -> None:
        self.started: list[tuple[RequestKey, str]] = []
        self.finished: list[tuple[RequestKey, str]] = []
        self.gates: dict[RequestKey, asyncio.Event] = {}
        self.failures: dict[RequestKey, int] = {}
        self._changed = asyncio.Condition()

    async def handle(self, change: RequestChange, *, deadline: datetime | None = None) -> Outcome:
        async with self._changed:
            self.started.append((change.key, change.sequence_number))
            self._changed.notify_all()
        if self.failures.get(change.key, 0) > 0:
            self.failures[change.key] -= 1
            raise RuntimeError("store unavailable")
        gate = self.gates.get(change.key)
        if gate is not None:
            await gate.wait()
        async with self._changed:
            self.finished.append((change.key, change.sequence_number))
            self._changed.notify_all()
        return Outcome.COMPLETED

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        async with asyncio.timeout(WAIT_S), self._changed:
            await self._changed.wait_for(predicate)

    def finished_keys(self) -> list[RequestKey]:
        return [key for key, _ in self.finished]

    def started_keys(self) -> list[RequestKey]:
        return [key for key, _ in self.started]


def _pending(name: str) -> AsyncRequest:
    now = datetime.now(UTC)
    return AsyncRequest(
        key=request_key("t", "u", name),
        request_id=RequestId(name),
        connection_id=ConnectionId("c"),
        user_id=UserId("u"),
        tenant_id=TenantId("t"),
        action="count",
        payload={},
        status=RequestStatus.PENDING,
        created_at=now,
        updated_at=now,
    )


async def _requeue(stores: DynamoDBStores, key: RequestKey) -> None:
    """PENDING → PROCESSING → PENDING: a second claimable record for the same request."""
    now = datetime.now(UTC)
    claimed = await stores.requests.apply(
        key, transitions.claim(now=now, lease_until=now + timedelta(minutes=5))
    )
    assert claimed is not None
    assert await stores.requests.apply(key, transitions.release(attempt=claimed.attempt, now=now))


class FailingReads:
    """Chosen `GetRecords` calls of the real streams client fail first, with
    `ExpiredIteratorException` or a 500; records of `poisoned` request keys come
    with a creation time no datetime can hold."""

    def __init__(self, failures: list[str], poisoned: frozenset[str] = frozenset()) -> None:
        self.failures = failures
        self.poisoned = poisoned
        self.get_records_calls = 0
        self.limits: list[int] = []
        self.failures_served = asyncio.Event()


class _FailingStreams:
    def __init__(self, client: Any, owner: FailingReads) -> None:
        self._client = client
        self._owner = owner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    async def get_records(self, **kwargs: Any) -> Any:
        self._owner.get_records_calls += 1
        self._owner.limits.append(kwargs["Limit"])
        if self._owner.failures:
            code = self._owner.failures.pop(0)
            if not self._owner.failures:
                self._owner.failures_served.set()
            status = 400 if code == "ExpiredIteratorException" else 500
            raise ClientError(
                {
                    "Error": {"Code": code, "Message": code},
                    "ResponseMetadata": {"HTTPStatusCode": status},
                },
                "GetRecords",
            )
        page = await self._client.get_records(**kwargs)
        for record in page.get("Records", []):
            if record["dynamodb"]["Keys"]["RequestID"]["S"] in self._owner.poisoned:
                record["dynamodb"]["ApproximateCreationDateTime"] = 1e300
        return page


@contextlib.asynccontextmanager
async def running_poller(
    settings: Settings,
    stores: DynamoDBStores,
    processor: ScriptedProcessor,
    checkpoint_path: Path,
    failing: FailingReads | None = None,
    **options: Any,
) -> AsyncIterator[StreamPoller]:
    """A poller over a reader of the real stream, its clients made here as the
    emulator's composition root makes them."""
    async with get_session().client("dynamodbstreams", **client_kwargs(settings)) as streams:
        reader = ShardReader(
            streams=streams if failing is None else _FailingStreams(streams, failing),
            dynamodb=stores.client,
            table_name=settings.requests_table,
        )
        async with _polling(reader, processor, checkpoint_path, **options) as poller:
            yield poller


@contextlib.asynccontextmanager
async def _polling(
    reader: ShardReader, processor: ScriptedProcessor, checkpoint_path: Path, **options: Any
) -> AsyncIterator[StreamPoller]:
    poller = StreamPoller(
        reader=reader,
        processor=processor,  # type: ignore[arg-type]
        clock=SystemClock(),
        checkpoint_path=checkpoint_path,
        **(
            {
                "poll_interval_s": 0.01,
                "shard_refresh_s": 0.2,
                "retry_base_s": 0.01,
                "retry_max_s": 0.05,
            }
            | options
        ),
    )
    task = asyncio.create_task(poller.run())
    try:
        async with asyncio.timeout(WAIT_S):
            await poller.wait_ready()
        yield poller
    finally:
        await poller.stop(drain_timeout_s=0)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.fixture
async def stores(dynamodb_settings: Settings) -> AsyncIterator[DynamoDBStores]:
    async with open_stores(dynamodb_settings) as opened:
        yield opened


async def test_records_written_before_the_first_start_are_skipped_like_latest(
    dynamodb_settings: Settings, stores: DynamoDBStores, tmp_path: Path
) -> None:
    processor = ScriptedProcessor()
    await stores.requests.enqueue(_pending("old"))
    async with running_poller(dynamodb_settings, stores, processor, tmp_path / "cp.json"):
        await stores.requests.enqueue(_pending("new"))
        await processor.wait_for(lambda: len(processor.finished) == 1)
    assert processor.started_keys() == [request_key("t", "u", "new")]


async def test_a_backlog_is_read_in_growing_pages_and_an_idle_stream_in_batches(
    dynamodb_settings: Settings, stores: DynamoDBStores, tmp_path: Path
) -> None:
    """70 records waiting, batch size 5: each full page doubles the next read's
    Limit (5, 10, 20, 40), so the backlog takes 4 reads rather than 14; after a
    page that came back short, reads go back to the batch size."""
    checkpoint = tmp_path / "cp.json"
    async with running_poller(dynamodb_settings, stores, ScriptedProcessor(), checkpoint):
        pass  # a checkpoint at the stream's end
    for n in range(70):
        await stores.requests.enqueue(_pending(f"backlog-{n}"))
    processor = ScriptedProcessor()
    reads = FailingReads([])
    async with running_poller(
        dynamodb_settings, stores, processor, checkpoint, failing=reads, batch_size=5
    ):
        await processor.wait_for(lambda: len(processor.finished) == 70)
        await stores.requests.enqueue(_pending("after"))
        await processor.wait_for(lambda: len(processor.finished) == 71)
    assert reads.limits[:4] == [5, 10, 20, 40]  # the fourth came back with 35: short
    assert reads.limits[4:]
    assert set(reads.limits[4:]) == {5}


async def test_a_wake_reads_a_new_record_without_waiting_for_the_poll_interval(
    dynamodb_settings: Settings, stores: DynamoDBStores, tmp_path: Path
) -> None:
    processor = ScriptedProcessor()
    async with running_poller(
        dynamodb_settings, stores, processor, tmp_path / "cp.json", poll_interval_s=600.0
    ) as poller:
        await stores.requests.enqueue(_pending("woken"))
        poller.wake()
        await processor.wait_for(lambda: len(processor.finished) == 1)  # WAIT_S << 600 s
    assert processor.finished_keys() == [request_key("t", "u", "woken")]


async def test_a_record_from_another_writer_is_read_while_the_poller_backs_off(
    dynamodb_settings: Settings, stores: DynamoDBStores, tmp_path: Path
) -> None:
    """No wake: the idle poll still finds what another process wrote."""
    processor = ScriptedProcessor()
    async with running_poller(
        dynamodb_settings,
        stores,
        processor,
        tmp_path / "cp.json",
        idle_poll_interval_s=0.05,
        idle_polls_before_backoff=0,
    ):
        await stores.requests.enqueue(_pending("first"))
        await processor.wait_for(lambda: len(processor.finished) == 1)
        await stores.requests.enqueue(_pending("second"))
        await processor.wait_for(lambda: len(processor.finished) == 2)
    assert processor.finished_keys() == [request_key("t", "u", n) for n in ("first", "second")]


def test_idle_pauses_double_from_the_poll_interval_up_to_the_idle_cap(tmp_path: Path) -> None:
    poller = StreamPoller(
        reader=None,  # type: ignore[arg-type]
        processor=ScriptedProcessor(),  # type: ignore[arg-type]
        clock=SystemClock(),
        checkpoint_path=tmp_path / "cp.json",
        poll_interval_s=0.05,
        idle_poll_interval_s=0.5,
        idle_polls_before_backoff=3,
    )
    pauses = [poller.pause_after_empty_reads(n) for n in range(1, 10)]
    assert pauses[:3] == [0.05] * 3
    assert pauses[3:6] == [0.1, 0.2, 0.4]
    assert pauses[6:] == [0.5] * 3
    assert poller.pause_after_empty_reads(10**6) == 0.5


def test_the_idle_cap_is_never_below_the_poll_interval(tmp_path: Path) -> None:
    poller = StreamPoller(
        reader=None,  # type: ignore[arg-type]
        processor=ScriptedProcessor(),  # type: ignore[arg-type]
        clock=SystemClock(),
        checkpoint_path=tmp_path / "cp.json",
        poll_interval_s=2.0,
        idle_poll_interval_s=0.5,
    )
    assert poller.pause_after_empty_reads(1) == poller.pause_after_empty_reads(1000) == 2.0


async def test_one_request_runs_in_order_while_others_run_concurrently(
    dynamodb_settings: Settings, stores: DynamoDBStores, tmp_path: Path
) -> None:
    processor = ScriptedProcessor()
    slow, fast = request_key("t", "u", "slow"), request_key("t", "u", "fast")
    processor.gates[slow] = asyncio.Event()
    async with running_poller(dynamodb_settings, stores, processor, tmp_path / "cp.json") as p:
        await stores.requests.enqueue(_pending("slow"))
        await _requeue(stores, slow)
        await stores.requests.enqueue(_pending("fast"))
        await processor.wait_for(lambda: fast in processor.finished_keys())
        # `slow`'s second record waits behind its first, which holds the checkpoint.
        assert processor.started_keys().count(slow) == 1
        (shard_position,) = p.checkpoints().values()
        assert shard_position is None
        processor.gates[slow].set()
        await processor.wait_for(lambda: processor.finished_keys().count(slow) == 2)
        await processor.wait_for(lambda: p.in_flight == 0)
        (shard_position,) = p.checkpoints().values()
    last = max(seq for _, seq in processor.finished)
    assert shard_position == last


async def test_a_failed_record_is_retried_until_it_succeeds(
    dynamodb_settings: Settings, stores: DynamoDBStores, tmp_path: Path
) -> None:
    processor = ScriptedProcessor()
    flaky = request_key("t", "u", "flaky")
    processor.failures[flaky] = 2
    async with running_poller(dynamodb_settings, stores, processor, tmp_path / "cp.json") as p:
        await stores.requests.enqueue(_pending("flaky"))
        await processor.wait_for(lambda: flaky in processor.finished_keys())
        await processor.wait_for(lambda: p.in_flight == 0)
    assert processor.started_keys() == [flaky] * 3


async def test_an_expired_iterator_or_a_failed_read_is_survived(
    dynamodb_settings: Settings, stores: DynamoDBStores, tmp_path: Path
) -> None:
    processor = ScriptedProcessor()
    failing = FailingReads([])
    async with running_poller(
        dynamodb_settings, stores, processor, tmp_path / "cp.json", failing=failing
    ):
        await stores.requests.enqueue(_pending("one"))
        await processor.wait_for(lambda: len(processor.finished) == 1)
        failing.failures.extend(["ExpiredIteratorException", "InternalServerError"])
        # Both failures hit the poller before "two" exists, so "two" can only be
        # read by a poller that survived them (a read already in flight could
        # otherwise fetch it first).
        async with asyncio.timeout(10):
            await failing.failures_served.wait()
        await stores.requests.enqueue(_pending("two"))
        await processor.wait_for(lambda: len(processor.finished) == 2)
    assert not failing.failures
    assert processor.started_keys() == [request_key("t", "u", "one"), request_key("t", "u", "two")]


async def test_an_unreadable_record_is_stepped_over_and_the_checkpoint_moves_past_it(
    dynamodb_settings: Settings, stores: DynamoDBStores, tmp_path: Path
) -> None:
    """The poller gets an `UnreadableRecord` from the shared parser: it neither
    crashes the shard nor blocks the records behind it."""
    poison = request_key("t", "u", "poison")
    failing = FailingReads([], poisoned=frozenset({poison}))
    processor = ScriptedProcessor()
    async with running_poller(
        dynamodb_settings, stores, processor, tmp_path / "cp.json", failing=failing
    ) as poller:
        await stores.requests.enqueue(_pending("poison"))
        await stores.requests.enqueue(_pending("after"))
        await processor.wait_for(lambda: len(processor.finished) == 1)
        await processor.wait_for(lambda: poller.in_flight == 0)
        [after_sequence] = [seq for _, seq in processor.finished]
        checkpoints = poller.checkpoints()

    assert processor.started_keys() == [request_key("t", "u", "after")]
    assert list(checkpoints.values()) == [after_sequence]


async def test_a_restart_resumes_after_the_last_finished_record(
    dynamodb_settings: Settings, stores: DynamoDBStores, tmp_path: Path
) -> None:
    checkpoint = tmp_path / "cp.json"
    first = ScriptedProcessor()
    held = request_key("t", "u", "held")
    first.gates[held] = asyncio.Event()  # never opened: cut by the shutdown
    async with running_poller(dynamodb_settings, stores, first, checkpoint):
        await stores.requests.enqueue(_pending("done"))
        await first.wait_for(lambda: len(first.finished) == 1)
        await stores.requests.enqueue(_pending("held"))
        await first.wait_for(lambda: held in first.started_keys())
    await stores.requests.enqueue(_pending("meanwhile"))

    second = ScriptedProcessor()
    async with running_poller(dynamodb_settings, stores, second, checkpoint):
        await second.wait_for(lambda: len(second.finished) == 2)
    assert second.started_keys() == [held, request_key("t", "u", "meanwhile")]


async def test_a_table_made_again_gets_its_new_stream_read_from_the_start(
    dynamodb_settings: Settings, stores: DynamoDBStores, tmp_path: Path
) -> None:
    processor = ScriptedProcessor()
    async with running_poller(dynamodb_settings, stores, processor, tmp_path / "cp.json") as p:
        await stores.requests.enqueue(_pending("before"))
        await processor.wait_for(lambda: len(processor.finished) == 1)
        old_stream = p.stream_arn
        kwargs = client_kwargs(dynamodb_settings)
        async with get_session().client("dynamodb", **kwargs) as client:
            await client.delete_table(TableName=dynamodb_settings.requests_table)
        await create_tables(dynamodb_settings)
        await stores.requests.enqueue(_pending("after"))
        await processor.wait_for(lambda: len(processor.finished) == 2)
    assert p.stream_arn != old_stream
    assert processor.finished_keys() == [
        request_key("t", "u", "before"),
        request_key("t", "u", "after"),
    ]


async def test_shutdown_leaves_another_processors_live_claim_alone(
    dynamodb_settings: Settings, stores: DynamoDBStores, tmp_path: Path
) -> None:
    """A record cut by shutdown is handed back by the processor that claimed it;
    the poller never releases a claim it does not hold (two emulators on one table)."""
    processor = ScriptedProcessor()
    theirs = request_key("t", "u", "theirs")
    processor.gates[theirs] = asyncio.Event()  # never opened: cut by the shutdown
    async with running_poller(dynamodb_settings, stores, processor, tmp_path / "cp.json"):
        await stores.requests.enqueue(_pending("theirs"))
        await processor.wait_for(lambda: theirs in processor.started_keys())
        now = datetime.now(UTC)
        claimed = await stores.requests.apply(
            theirs, transitions.claim(now=now, lease_until=now + timedelta(minutes=5))
        )
        assert claimed is not None
    stored = await stores.requests.get(theirs)
    assert stored is not None
    assert stored.status is RequestStatus.PROCESSING
    assert stored.attempt == claimed.attempt


async def test_concurrent_checkpoint_flushes_leave_the_newest_positions_on_disk(
    tmp_path: Path,
) -> None:
    """Flushes run off the loop and may overlap; an older snapshot never
    overwrites a newer one."""
    path = tmp_path / "cp.json"
    checkpoints = CheckpointFile(path, ARN, min_interval_s=0)
    flushes = []
    for n in range(20):
        checkpoints.set_position("shard-1", str(n))
        flushes.append(asyncio.create_task(checkpoints.flush(force=True)))
    await asyncio.gather(*flushes)
    assert json.loads(path.read_text())["streams"][ARN]["shards"] == {"shard-1": "19"}
    assert CheckpointFile(path, ARN).state.positions == {"shard-1": "19"}


async def test_a_checkpoint_is_fsynced_before_it_replaces_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    steps: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        steps.append("fsync")
        real_fsync(fd)

    def replace(source: Any, target: Any) -> None:
        steps.append("replace")
        real_replace(source, target)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    checkpoints = CheckpointFile(tmp_path / "cp.json", ARN)
    checkpoints.set_position("shard-1", "7")
    await checkpoints.flush()
    assert steps == ["fsync", "replace"]
    assert checkpoints.state.is_known


async def test_records_trimmed_unread_are_stepped_over_from_the_oldest_kept(
    dynamodb_settings: Settings,
    stores: DynamoDBStores,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A restart whose checkpoint's next record is past DynamoDB's 24 hours: moto
    refuses `AFTER_SEQUENCE_NUMBER` with `TrimmedDataAccessException`, and the
    poller reads on from `TRIM_HORIZON` rather than asking again for ever."""
    from adapters import moto_streams

    checkpoint = tmp_path / "cp.json"
    first = ScriptedProcessor()
    async with running_poller(dynamodb_settings, stores, first, checkpoint):
        await stores.requests.enqueue(_pending("done"))
        await first.wait_for(lambda: len(first.finished) == 1)
    now = [moto_streams.clock()]
    monkeypatch.setattr(moto_streams, "clock", lambda: now[0])
    await stores.requests.enqueue(_pending("lost"))  # never read
    now[0] += moto_streams.RECORD_RETENTION_S + 60
    await stores.requests.enqueue(_pending("kept"))  # this write trims "done" and "lost"

    second = ScriptedProcessor()
    async with running_poller(dynamodb_settings, stores, second, checkpoint):
        await second.wait_for(lambda: len(second.finished) == 1)
    assert second.started_keys() == [request_key("t", "u", "kept")]
