"""Faults at the core, on fakes with injected failures and a manual clock: throttled
writes, a failing notifier, a processor that dies mid-action, and a stream that
delivers records twice, out of order or again after a checkpoint rollback. Each
ends with every acknowledged request finished once and its client told once."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from core_harness import Core
from rel_support import (
    FlakyNotifier,
    ThrottledRequestStore,
    server_error,
    throttling_error,
)

from streamer import Progress, Request, Streamer
from streamer.errors import StoreUnavailable
from streamer.models import ConnectionId, RequestChange, RequestKey, RequestStatus
from streamer.processor import Outcome
from streamer.settings import Settings
from streamer.testing import InMemoryRequestStore, ManualClock

STEPS = 20
TIMEOUT_S = 60.0
LEASE_GRACE_S = 30.0


class Work:
    """An app whose async action counts its invocations and can be held mid-run."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.invocations: Counter[str] = Counter()
        self.started = asyncio.Event()
        self.hold: dict[int, asyncio.Event] = {}
        """Run number → an event the run waits on after its first report."""
        self.app = Streamer()

        @self.app.action("work", mode="async", timeout=TIMEOUT_S, max_retries=2)
        async def work(req: Request[dict[str, Any]], progress: Progress) -> dict[str, Any]:
            self.invocations[req.request_id] += 1
            run = sum(self.invocations.values())
            await progress.report(1, "started")
            self.started.set()
            gate = self.hold.get(run)
            if gate is not None:
                await gate.wait()
            for step in range(2, STEPS + 1):
                await self.clock.sleep(0.25)  # a quarter second of simulated work
                await progress.report(step * 100 / STEPS, f"step {step}", step=step)
            return {"request": req.request_id, "run": run}


def _rig(**kwargs: Any) -> tuple[Core, Work]:
    clock = ManualClock()
    work = Work(clock)
    settings = replace(Settings(), lease_grace_s=LEASE_GRACE_S)
    return Core(app=work.app, settings=settings, clock=clock, **kwargs), work


async def _enqueue(rig: Core, request_id: str, connection: str = "c1") -> RequestKey:
    origin = await rig.connections.get(ConnectionId(connection))
    if origin is None:
        origin = await rig.connect(connection)
    ack = await rig.send(origin, "work", {}, id=request_id)
    assert ack["type"] == "acknowledgment"
    return rig.key(request_id)


def _finals(messages: list[dict[str, Any]], request_id: str) -> list[dict[str, Any]]:
    return [
        m
        for m in messages
        if m.get("request_id") == request_id and m["type"] in ("complete", "error")
    ]


def _percentages(messages: list[dict[str, Any]], request_id: str) -> list[float]:
    return [
        m["percentage"]
        for m in messages
        if m["type"] == "progress" and m["request_id"] == request_id
    ]


# -- DynamoDB throttling on writes ---------------------------------------------------


async def test_throttled_progress_writes_drop_snapshots_but_never_the_completion() -> None:
    store = InMemoryRequestStore()
    throttled = ThrottledRequestStore(store, progress_failure_rate=0.5, complete_failures=2)
    rig, work = _rig(store=store, requests=throttled)
    key = await _enqueue(rig, "r1")

    outcome = await rig.processor.run(key)

    assert outcome is Outcome.COMPLETED
    assert throttled.throttled["record_progress"] > 0, "the fault was never injected"
    assert throttled.throttled["complete"] == 2
    stored = store.items[key]
    assert stored.status is RequestStatus.COMPLETED
    assert stored.result == {"request": "r1", "run": 1}
    assert work.invocations["r1"] == 1
    received = rig.received("c1")
    assert [m["type"] for m in _finals(received, "r1")] == ["complete"]
    percentages = _percentages(received, "r1")
    assert percentages == sorted(percentages)
    assert percentages[-1] == 100.0


async def test_completion_throttled_past_the_processors_retries_is_finished_by_the_sweeper() -> (
    None
):
    """The store refuses `complete` five times: more than one run retries, so the
    processor gives up, the lease expires, the sweeper requeues, and the second
    run completes; the client still sees exactly one `complete`."""
    store = InMemoryRequestStore()
    throttled = ThrottledRequestStore(store, complete_failures=5)
    rig, work = _rig(store=store, requests=throttled)
    key = await _enqueue(rig, "r1")

    with pytest.raises(StoreUnavailable):
        await rig.processor.run(key)
    assert store.items[key].status is RequestStatus.PROCESSING
    assert await rig.processor.run(key) is Outcome.SKIPPED  # the stream's retry

    rig.clock.advance(TIMEOUT_S + LEASE_GRACE_S + 1)
    report = await rig.sweeper.sweep_once()
    assert report.requeued == 1
    outcome = await rig.new_processor().run(key)

    assert outcome is Outcome.COMPLETED
    assert store.items[key].status is RequestStatus.COMPLETED
    assert work.invocations["r1"] == 2
    assert [m["type"] for m in _finals(rig.received("c1"), "r1")] == ["complete"]


# -- the notifier: Gone, throttling, 5xx ------------------------------------------------


async def test_a_gone_origin_is_cleaned_up_once_and_the_work_completes_for_subscribers() -> None:
    notifier = FlakyNotifier()
    rig, work = _rig(notifier=notifier)
    key = await _enqueue(rig, "r1")
    follower = await rig.connect("c2")
    await rig.send(follower, "subscribe", {"request_id": "r1"}, id="s1")
    origin = rig.connections.records[ConnectionId("c1")]
    await rig.send(origin, "subscribe", {"request_id": "r1"}, id="s0")
    notifier.mark_gone(ConnectionId("c1"))

    outcome = await rig.processor.run(key)

    assert outcome is Outcome.COMPLETED
    assert work.invocations["r1"] == 1
    assert ConnectionId("c1") not in rig.connections.records
    assert [s.connection_id for s in rig.subscriptions.subscriptions] == ["c2"]
    assert notifier.attempts.count(ConnectionId("c1")) == 1, "posted again to a gone connection"
    assert [m["type"] for m in _finals(rig.received("c2"), "r1")] == ["complete"]
    assert rig.store.items[key].status is RequestStatus.COMPLETED


@pytest.mark.parametrize("error", [throttling_error(), server_error()], ids=["429", "5xx"])
async def test_a_failing_notifier_neither_stops_the_work_nor_deletes_the_connection(
    error: Exception,
) -> None:
    notifier = FlakyNotifier()
    rig, work = _rig(notifier=notifier)
    key = await _enqueue(rig, "r1")
    notifier.fail_next("c1", error, times=5)

    outcome = await rig.processor.run(key)

    assert outcome is Outcome.COMPLETED
    assert work.invocations["r1"] == 1
    assert notifier.failed[ConnectionId("c1")] == 5
    assert ConnectionId("c1") in rig.connections.records
    # One attempt per message: the core does not multiply the adapter's retries.
    delivered = len(notifier.messages(ConnectionId("c1")))
    assert notifier.attempts.count(ConnectionId("c1")) == delivered + 5
    assert [m["type"] for m in _finals(rig.received("c1"), "r1")] == ["complete"]


async def test_a_notifier_that_always_fails_still_lets_the_request_complete_in_the_store() -> None:
    notifier = FlakyNotifier()
    notifier.fail_sends(server_error())
    rig, work = _rig(notifier=notifier)
    key = await _enqueue(rig, "r1")

    outcome = await rig.processor.run(key)

    assert outcome is Outcome.COMPLETED
    assert rig.store.items[key].status is RequestStatus.COMPLETED
    assert work.invocations["r1"] == 1
    # A new connection of the same user fetches the outcome.
    again = await rig.connect("c3")
    notifier.clear_failures()
    status = await rig.send(again, "status", {"request_id": "r1"}, id="q")
    assert status["data"]["status"] == "COMPLETED"
    assert status["data"]["result"] == {"request": "r1", "run": 1}


# -- the processor dies mid-action -------------------------------------------------------


class CrashableStore(ThrottledRequestStore):
    """A store wrapper that goes dark for one processor, as if its process died."""

    def __init__(self, inner: InMemoryRequestStore) -> None:
        super().__init__(inner)
        self.dead = False

    def _should_throttle(self, name: str) -> bool:
        return self.dead


async def test_a_processor_killed_mid_action_is_requeued_after_the_lease_and_completes_once() -> (
    None
):
    store = InMemoryRequestStore()
    doomed = CrashableStore(store)
    rig, work = _rig(store=store)
    crashing = Core(
        app=work.app,
        settings=rig.settings,
        clock=rig.clock,
        connections=rig.connections,
        store=store,
        subscriptions=rig.subscriptions,
        notifier=rig.notifier,
        requests=doomed,
    )
    key = await _enqueue(rig, "r1")
    work.hold[1] = asyncio.Event()  # the first run never gets past its first report

    running = asyncio.create_task(crashing.processor.run(key))
    async with asyncio.timeout(5):
        await work.started.wait()
    doomed.dead = True  # the process is gone: not even its hand-back reaches the store
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert store.items[key].status is RequestStatus.PROCESSING

    assert (await rig.sweeper.sweep_once()).requeued == 0, "requeued before the lease ran out"
    rig.clock.advance(TIMEOUT_S + LEASE_GRACE_S + 1)
    assert (await rig.sweeper.sweep_once()).requeued == 1
    outcome = await rig.new_processor().run(key)

    assert outcome is Outcome.COMPLETED
    assert work.invocations["r1"] == 2
    stored = store.items[key]
    assert stored.status is RequestStatus.COMPLETED
    assert stored.attempt == 2
    assert [m["type"] for m in _finals(rig.received("c1"), "r1")] == ["complete"]


async def test_a_stalled_processor_that_wakes_after_its_lease_was_taken_does_not_finish_twice() -> (
    None
):
    rig, work = _rig()
    key = await _enqueue(rig, "r1")
    stalled_gate = work.hold[1] = asyncio.Event()

    stalled = asyncio.create_task(rig.processor.run(key))
    async with asyncio.timeout(5):
        await work.started.wait()
    rig.clock.advance(TIMEOUT_S + LEASE_GRACE_S + 1)
    assert (await rig.sweeper.sweep_once()).requeued == 1
    assert await rig.new_processor().run(key) is Outcome.COMPLETED
    stalled_gate.set()  # the first processor wakes up and carries on

    async with asyncio.timeout(5):
        late = await stalled

    assert late is Outcome.LOST
    assert work.invocations["r1"] == 2
    assert rig.store.items[key].result == {"request": "r1", "run": 2}
    assert [m["type"] for m in _finals(rig.received("c1"), "r1")] == ["complete"]


async def test_a_request_whose_processor_keeps_dying_fails_once_its_attempts_are_spent() -> None:
    store = InMemoryRequestStore()
    rig, work = _rig(store=store)
    key = await _enqueue(rig, "r1")
    max_claims = 3  # max_retries=2 → three claims in all

    for run in range(1, max_claims + 1):
        doomed = CrashableStore(store)
        crashing = Core(
            app=work.app,
            settings=rig.settings,
            clock=rig.clock,
            connections=rig.connections,
            store=store,
            subscriptions=rig.subscriptions,
            notifier=rig.notifier,
            requests=doomed,
        )
        work.hold[run] = asyncio.Event()
        work.started.clear()
        running = asyncio.create_task(crashing.processor.run(key))
        async with asyncio.timeout(5):
            await work.started.wait()
        doomed.dead = True
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
        rig.clock.advance(TIMEOUT_S + LEASE_GRACE_S + 1)
        await rig.sweeper.sweep_once()

    stored = store.items[key]
    assert stored.status is RequestStatus.FAILED
    assert work.invocations["r1"] == max_claims
    finals = _finals(rig.received("c1"), "r1")
    assert [m["error"]["code"] for m in finals] == ["PROCESSING_FAILED"]


# -- the stream: duplicates, reordering, rollback ---------------------------------------------


def _insert(
    key: RequestKey, sequence: int, clock: ManualClock, timeout_s: float | None = TIMEOUT_S
) -> RequestChange:
    return RequestChange(
        event_id=f"ev-{sequence}",
        event_name="INSERT",
        sequence_number=f"{sequence:021d}",
        key=key,
        new_status=RequestStatus.PENDING,
        approximate_created_at=clock.now(),
        timeout_s=timeout_s,
    )


def _modify(
    key: RequestKey,
    sequence: int,
    status: RequestStatus,
    clock: ManualClock,
    timeout_s: float | None = TIMEOUT_S,
) -> RequestChange:
    return RequestChange(
        event_id=f"ev-{sequence}",
        event_name="MODIFY",
        sequence_number=f"{sequence:021d}",
        key=key,
        new_status=status,
        approximate_created_at=clock.now(),
        timeout_s=timeout_s,
    )


# The processor claims straight from an image that shows the timeout, and reads
# the item first when it does not: both paths must hold up.
image_timeout = pytest.mark.parametrize(
    "timeout_s", [TIMEOUT_S, None], ids=["claim-from-image", "read-first"]
)


@image_timeout
async def test_a_batch_delivered_twice_runs_each_request_once(timeout_s: float | None) -> None:
    rig, work = _rig()
    keys = [await _enqueue(rig, f"r{i}") for i in range(8)]
    batch = [_insert(key, i, rig.clock, timeout_s) for i, key in enumerate(keys)]

    first = [await rig.processor.handle(change) for change in batch]
    second = [await rig.new_processor().handle(change) for change in batch]

    assert first == [Outcome.COMPLETED] * len(keys)
    assert second == [Outcome.SKIPPED] * len(keys)
    assert set(work.invocations.values()) == {1}
    for i in range(8):
        assert [m["type"] for m in _finals(rig.received("c1"), f"r{i}")] == ["complete"]


@image_timeout
async def test_duplicate_records_handled_concurrently_claim_each_request_once(
    timeout_s: float | None,
) -> None:
    rig, work = _rig()
    keys = [await _enqueue(rig, f"r{i}") for i in range(6)]
    batch = [_insert(key, i, rig.clock, timeout_s) for i, key in enumerate(keys)]
    deliveries = batch * 3
    random.Random(3).shuffle(deliveries)

    processors = [rig.new_processor() for _ in range(3)]
    async with asyncio.timeout(10):
        outcomes = await asyncio.gather(
            *(processors[i % 3].handle(change) for i, change in enumerate(deliveries))
        )

    assert Counter(outcomes) == {Outcome.COMPLETED: 6, Outcome.SKIPPED: 12}
    assert set(work.invocations.values()) == {1}
    assert len(work.invocations) == 6


@image_timeout
async def test_records_out_of_order_across_requests_and_replayed_after_a_rollback_run_once(
    timeout_s: float | None,
) -> None:
    """The stream hands over requests in any order, then rolls its checkpoint back
    and replays everything, INSERTs and the MODIFY records the runs wrote."""
    rig, work = _rig()
    keys = [await _enqueue(rig, f"r{i}") for i in range(10)]
    inserts = [_insert(key, i, rig.clock, timeout_s) for i, key in enumerate(keys)]
    shuffled = inserts[:]
    random.Random(5).shuffle(shuffled)

    outcomes = [await rig.processor.handle(change) for change in shuffled[:6]]
    # The checkpoint rolls back to the start: everything is delivered again, with
    # the PROCESSING and COMPLETED images of what already ran.
    replay: list[RequestChange] = []
    sequence = 100
    for change in inserts:
        replay.append(change)
        stored = rig.store.items[change.key]
        if stored.status is not RequestStatus.PENDING:
            for status in (RequestStatus.PROCESSING, stored.status):
                sequence += 1
                replay.append(_modify(change.key, sequence, status, rig.clock, timeout_s))
    replayed = [await rig.new_processor().handle(change) for change in replay]

    assert outcomes == [Outcome.COMPLETED] * 6
    assert Counter(replayed)[Outcome.COMPLETED] == 4
    assert set(work.invocations.values()) == {1}
    assert len(work.invocations) == 10
    for i in range(10):
        assert rig.store.items[keys[i]].status is RequestStatus.COMPLETED
        assert [m["type"] for m in _finals(rig.received("c1"), f"r{i}")] == ["complete"]


@image_timeout
async def test_a_replayed_insert_of_a_cancelled_request_does_not_run_it(
    timeout_s: float | None,
) -> None:
    rig, work = _rig()
    key = await _enqueue(rig, "r1")
    origin = await rig.connections.get(ConnectionId("c1"))
    assert origin is not None
    cancelled = await rig.send(origin, "cancel", {"request_id": "r1"}, id="x")
    assert cancelled["data"]["cancelled"] is True

    outcome = await rig.processor.handle(_insert(key, 1, rig.clock, timeout_s))

    assert outcome is Outcome.SKIPPED
    assert work.invocations == Counter()
    assert rig.store.items[key].status is RequestStatus.CANCELLED
    assert rig.clock.now() - rig.store.items[key].created_at < timedelta(seconds=1)
