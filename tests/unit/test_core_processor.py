"""The processor: claim, run, retry, time out, cancel, persist then notify."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from core_harness import Core, HeldWrites, make_core
from pydantic import BaseModel

from streamer import Progress, Request, Retryable, Streamer, StreamerError, transitions
from streamer.errors import StoreUnavailable
from streamer.models import (
    AsyncRequest,
    ConnectionId,
    RequestChange,
    RequestKey,
    RequestStatus,
    Subscription,
)
from streamer.processor import DEADLINE_MARGIN_S, Outcome
from streamer.protocol import ServerMessage
from streamer.testing import InMemoryRequestStore, RecordingNotifier
from streamer.transitions import Transition


class Numbers(BaseModel):
    values: list[int]


class Calls:
    """What the test actions saw."""

    def __init__(self) -> None:
        self.attempts: list[int] = []
        self.gate = asyncio.Event()
        self.reported = asyncio.Event()
        self.gate_again = asyncio.Event()
        self.reported_again = asyncio.Event()
        self.failures_left = 0


def build_app(calls: Calls) -> Streamer:
    app = Streamer()

    @app.action("total", mode="async")
    async def total(req: Request[Numbers], progress: Progress) -> dict[str, Any]:
        calls.attempts.append(req.attempt)
        await progress.report(50, "adding")
        return {"total": sum(req.payload.values)}

    @app.action("flaky", mode="async", max_retries=3)
    async def flaky(req: Request[dict[str, Any]], progress: Progress) -> str:
        calls.attempts.append(req.attempt)
        if calls.failures_left:
            calls.failures_left -= 1
            raise ConnectionResetError("peer reset")
        return "ok"

    @app.action("always_retryable", mode="async", max_retries=3)
    async def always_retryable(req: Request[dict[str, Any]], progress: Progress) -> None:
        calls.attempts.append(req.attempt)
        raise Retryable("upstream busy")

    @app.action("hang", mode="async", timeout=0, max_retries=1)
    async def hang(req: Request[dict[str, Any]], progress: Progress) -> None:
        calls.attempts.append(req.attempt)
        await asyncio.Event().wait()

    @app.action("refuses", mode="async")
    async def refuses(req: Request[dict[str, Any]], progress: Progress) -> None:
        calls.attempts.append(req.attempt)
        raise StreamerError("VALIDATION_ERROR", "start date is a Sunday", {"field": "start"})

    @app.action("crash", mode="async")
    async def crash(req: Request[dict[str, Any]], progress: Progress) -> None:
        calls.attempts.append(req.attempt)
        raise KeyError("secret-column")

    @app.action("stepwise", mode="async")
    async def stepwise(req: Request[dict[str, Any]], progress: Progress) -> str:
        await progress.report(10, "first")
        calls.reported.set()
        await calls.gate.wait()
        await progress.report(20, "second")
        calls.reported_again.set()
        await calls.gate_again.wait()
        await progress.report(30, "third")
        return "finished"

    @app.action("ignores_cancel", mode="async")
    async def ignores_cancel(req: Request[dict[str, Any]], progress: Progress) -> str:
        calls.reported.set()
        await calls.gate.wait()
        return "finished anyway"

    @app.action("waits_then_refuses", mode="async")
    async def waits_then_refuses(req: Request[dict[str, Any]], progress: Progress) -> None:
        calls.reported.set()
        await calls.gate.wait()
        raise StreamerError("VALIDATION_ERROR", "start date is a Sunday")

    @app.action("reports_then_retries", mode="async")
    async def reports_then_retries(req: Request[dict[str, Any]], progress: Progress) -> None:
        await progress.report(10, "started")
        raise Retryable("upstream busy")

    @app.action("huge", mode="async")
    async def huge(req: Request[dict[str, Any]], progress: Progress) -> str:
        return "x" * (400 * 1024 + 1)

    @app.action("untyped_sync_arity", mode="async")
    async def one_argument(req: Request[dict[str, Any]], progress: Progress) -> int:
        return 1

    return app


@pytest.fixture
def calls() -> Calls:
    return Calls()


@pytest.fixture
def core(calls: Calls) -> Core:
    return make_core(build_app(calls))


async def enqueue(core: Core, action: str, payload: dict[str, Any], rid: str = "r1") -> None:
    conn = core.connections.records.get(ConnectionId("c1")) or await core.connect("c1")
    reply = await core.send(conn, action, payload, id=rid)
    assert reply["type"] == "acknowledgment", reply


def change(
    key: RequestKey,
    event: str = "INSERT",
    status: RequestStatus | None = None,
    *,
    timeout_s: float | None = None,
) -> RequestChange:
    return RequestChange(
        event_id="e1",
        event_name=event,
        sequence_number="100",
        key=key,
        new_status=status,
        approximate_created_at=DEFAULT_NOW,
        timeout_s=timeout_s,
    )


class CountedStore(InMemoryRequestStore):
    """Records which store calls were made, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    async def get(self, key: RequestKey) -> AsyncRequest | None:
        self.calls.append("get")
        return await super().get(key)

    async def apply(self, key: RequestKey, transition: Transition) -> AsyncRequest | None:
        if transition.name == "claim":
            self.calls.append("claim")
        return await super().apply(key, transition)


@pytest.fixture
def counted(core: Core) -> CountedStore:
    store = CountedStore()
    core.requests = store
    core.__post_init__()
    return store


DEFAULT_NOW = make_core(Streamer()).clock.now()


# -- success ---------------------------------------------------------------------------


async def test_success_persists_completed_then_sends_complete(core: Core, calls: Calls) -> None:
    await enqueue(core, "total", {"values": [1, 2, 3]})
    outcome = await core.process("r1")
    assert outcome is Outcome.COMPLETED
    stored = await core.stored("r1")
    assert (stored.status, stored.result, stored.attempt) == (
        RequestStatus.COMPLETED,
        {"total": 6},
        1,
    )
    expected_ttl = core.clock.now() + timedelta(days=7)
    assert stored.expires_at == int(expected_ttl.timestamp())
    messages = core.received("c1")
    assert [m["type"] for m in messages] == ["progress", "complete"]
    assert messages[-1]["result"] == {"total": 6}
    assert calls.attempts == [1]


async def test_a_status_asked_on_receiving_complete_sees_completed(core: Core) -> None:
    """Persist first, then notify."""
    seen: list[str] = []

    class StatusOnComplete(RecordingNotifier):
        async def send(self, connection_id: ConnectionId, message: ServerMessage) -> None:
            await super().send(connection_id, message)
            if message.type == "complete":
                conn = await core.connections.get(connection_id)
                assert conn is not None
                reply = await core.send(conn, "status", {"request_id": message.request_id})
                seen.append(reply["data"]["status"])

    core.notifier = StatusOnComplete()
    core.__post_init__()
    await enqueue(core, "total", {"values": [1]})
    await core.process("r1")
    assert seen == ["COMPLETED"]


async def test_only_claimable_records_are_processed(core: Core) -> None:
    await enqueue(core, "total", {"values": [1]})
    key = core.key("r1")
    for record in (
        change(key, "REMOVE", None),
        change(key, "MODIFY", RequestStatus.PROCESSING),
        change(key, "MODIFY", RequestStatus.COMPLETED),
    ):
        assert await core.processor.handle(record) is Outcome.SKIPPED
    assert (await core.stored("r1")).status is RequestStatus.PENDING
    assert await core.processor.handle(change(key, "INSERT", RequestStatus.PENDING)) is (
        Outcome.COMPLETED
    )


async def test_a_duplicate_delivery_after_completion_is_skipped(core: Core) -> None:
    await enqueue(core, "total", {"values": [1]})
    key = core.key("r1")
    assert await core.processor.handle(change(key, status=RequestStatus.PENDING)) is (
        Outcome.COMPLETED
    )
    assert await core.processor.handle(change(key, status=RequestStatus.PENDING)) is (
        Outcome.SKIPPED
    )


async def test_a_stream_image_is_claimed_without_reading_the_item_first(
    core: Core, counted: CountedStore
) -> None:
    await enqueue(core, "total", {"values": [1]})
    record = change(core.key("r1"), status=RequestStatus.PENDING, timeout_s=120.0)
    claims: list[AsyncRequest] = []
    original = counted.apply

    async def spy(key: RequestKey, transition: Transition) -> AsyncRequest | None:
        changed = await original(key, transition)
        if transition.name == "claim":
            assert changed is not None
            claims.append(changed)
        return changed

    counted.apply = spy  # type: ignore[method-assign]

    assert await core.processor.handle(record) is Outcome.COMPLETED

    assert counted.calls == ["claim"]
    # The lease comes from the image's timeout plus the grace.
    assert claims[0].lease_until == DEFAULT_NOW + timedelta(seconds=120 + 60)


async def test_a_duplicate_image_fails_the_claim_and_changes_nothing(
    core: Core, calls: Calls, counted: CountedStore
) -> None:
    await enqueue(core, "total", {"values": [1]})
    record = change(core.key("r1"), status=RequestStatus.PENDING, timeout_s=840.0)
    assert await core.processor.handle(record) is Outcome.COMPLETED
    before, sent = counted.items, len(core.notifier.sent)
    counted.calls.clear()

    assert await core.processor.handle(record) is Outcome.SKIPPED

    assert counted.calls == ["claim"]
    assert counted.items == before
    assert len(core.notifier.sent) == sent
    assert calls.attempts == [1]


async def test_two_processors_handed_one_image_run_it_once(core: Core, calls: Calls) -> None:
    await enqueue(core, "total", {"values": [2]})
    record = change(core.key("r1"), status=RequestStatus.PENDING, timeout_s=840.0)
    outcomes = await asyncio.gather(
        core.processor.handle(record), core.new_processor().handle(record)
    )
    assert sorted(outcomes) == sorted([Outcome.COMPLETED, Outcome.SKIPPED])
    assert calls.attempts == [1]


async def test_without_the_timeout_the_item_is_read_and_one_not_pending_is_not_claimed(
    core: Core, counted: CountedStore
) -> None:
    await enqueue(core, "total", {"values": [1]})
    assert await core.process("r1") is Outcome.COMPLETED
    assert counted.calls[:2] == ["get", "claim"]
    counted.calls.clear()

    assert await core.process("r1") is Outcome.SKIPPED

    assert counted.calls == ["get"]


async def test_two_processors_racing_for_one_request_run_it_once(core: Core, calls: Calls) -> None:
    """Both read it PENDING; the conditional claim lets exactly one through."""

    class YieldingStore(InMemoryRequestStore):
        async def get(self, key: RequestKey) -> AsyncRequest | None:
            found = await super().get(key)
            await asyncio.sleep(0)
            return found

    core.requests = YieldingStore()
    core.__post_init__()
    await enqueue(core, "total", {"values": [2]})
    outcomes = await asyncio.gather(
        core.processor.run(core.key("r1")), core.new_processor().run(core.key("r1"))
    )
    assert sorted(outcomes) == sorted([Outcome.COMPLETED, Outcome.SKIPPED])
    assert calls.attempts == [1]
    assert [m["type"] for m in core.received("c1")].count("complete") == 1


# -- retries -----------------------------------------------------------------------------


async def test_transient_errors_are_retried_with_backoff_then_succeed(
    core: Core, calls: Calls
) -> None:
    calls.failures_left = 2
    await enqueue(core, "flaky", {})
    assert await core.process("r1") is Outcome.COMPLETED
    assert calls.attempts == [1, 2, 3]
    stored = await core.stored("r1")
    assert (stored.retry_count, stored.result) == (2, "ok")
    first, second = core.clock.sleeps
    assert 0.25 <= first <= 0.5
    assert 0.5 <= second <= 1.0


async def test_retries_exhausted_fail_with_processing_failed(core: Core, calls: Calls) -> None:
    await enqueue(core, "always_retryable", {})
    assert await core.process("r1") is Outcome.FAILED
    assert calls.attempts == [1, 2, 3, 4]
    assert len(core.clock.sleeps) == 3
    for index, waited in enumerate(core.clock.sleeps):
        ceiling = 0.5 * 2**index
        assert ceiling / 2 <= waited <= ceiling
    stored = await core.stored("r1")
    assert stored.status is RequestStatus.FAILED
    assert stored.retry_count == 3
    assert stored.error is not None
    assert (stored.error.code, stored.error.message) == ("PROCESSING_FAILED", "upstream busy")
    (message,) = core.received("c1")
    assert (message["type"], message["error"]["code"]) == ("error", "PROCESSING_FAILED")


async def test_each_retry_extends_the_lease(core: Core) -> None:
    await enqueue(core, "always_retryable", {})
    leases, _ = core.spy_transitions("record_retry", "lease_until")
    await core.process("r1")
    assert len(leases) == 3
    assert leases == sorted(leases)
    # Recorded before the first wait: backoff + the action's timeout + the grace.
    assert leases[0] == DEFAULT_NOW + timedelta(seconds=core.clock.sleeps[0] + 840 + 60)


async def test_a_timeout_is_retried_then_fails_with_timeout(core: Core, calls: Calls) -> None:
    await enqueue(core, "hang", {})
    assert await core.process("r1") is Outcome.FAILED
    assert calls.attempts == [1, 2]
    stored = await core.stored("r1")
    assert stored.error is not None
    assert stored.error.code == "TIMEOUT"
    assert core.received("c1")[-1]["error"]["code"] == "TIMEOUT"


async def test_streamer_error_fails_at_once_with_its_own_code(core: Core, calls: Calls) -> None:
    await enqueue(core, "refuses", {})
    assert await core.process("r1") is Outcome.FAILED
    assert calls.attempts == [1]
    assert core.received("c1")[-1]["error"] == {
        "code": "VALIDATION_ERROR",
        "message": "start date is a Sunday",
        "details": {"field": "start"},
    }


async def test_unexpected_exception_fails_with_a_generic_internal_error(
    core: Core, calls: Calls, caplog: pytest.LogCaptureFixture
) -> None:
    await enqueue(core, "crash", {})
    with caplog.at_level(logging.ERROR, logger="streamer.processor"):
        assert await core.process("r1") is Outcome.FAILED
    assert calls.attempts == [1]
    error = core.received("c1")[-1]["error"]
    assert error == {"code": "INTERNAL_ERROR", "message": "internal error", "details": None}
    assert any(getattr(r, "request_id", None) == "r1" for r in caplog.records)


async def test_a_payload_that_no_longer_validates_fails_with_validation_error(
    core: Core,
) -> None:
    await enqueue(core, "total", {"values": [1]})
    item = core.requests._items[core.key("r1")]
    core.requests._items[item.key] = type(item)(**{**_fields(item), "payload": {"values": "x"}})
    assert await core.process("r1") is Outcome.FAILED
    error = core.received("c1")[-1]["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert error["details"]["errors"][0]["loc"] == ["values"]


def _fields(item: AsyncRequest) -> dict[str, Any]:
    return {name: getattr(item, name) for name in item.__dataclass_fields__}


# -- store trouble ------------------------------------------------------------------------


async def test_store_errors_during_claim_are_retried(core: Core) -> None:
    await enqueue(core, "total", {"values": [1]})
    core.requests.inject_failure("claim", StoreUnavailable(), times=2)
    assert await core.process("r1") is Outcome.COMPLETED


async def test_store_errors_that_persist_propagate_to_the_caller(core: Core) -> None:
    await enqueue(core, "total", {"values": [1]})
    core.requests.inject_failure("complete", StoreUnavailable(), times=3)
    with pytest.raises(StoreUnavailable):
        await core.process("r1")
    assert "complete" not in [m["type"] for m in core.received("c1")]


async def test_a_result_too_large_to_store_fails_cleanly(calls: Calls) -> None:
    # A message limit above the item limit (MAX_MESSAGE_BYTES raised), so the
    # store's 400 KB limit is the one that refuses.
    core = make_core(build_app(calls), max_message_bytes=1024 * 1024)
    await enqueue(core, "huge", {})
    assert await core.process("r1") is Outcome.FAILED
    stored = await core.stored("r1")
    assert (stored.status, stored.result) == (RequestStatus.FAILED, None)
    assert stored.error is not None
    assert stored.error.code == "PAYLOAD_TOO_LARGE"
    (message,) = core.received("c1")
    assert message["error"]["code"] == "PAYLOAD_TOO_LARGE"
    assert "400 KB" in message["error"]["message"]


async def test_progress_that_cannot_be_saved_does_not_stop_the_work(core: Core) -> None:
    await enqueue(core, "total", {"values": [4]})
    core.requests.inject_failure("record_progress", StoreUnavailable())
    assert await core.process("r1") is Outcome.COMPLETED
    assert [m["type"] for m in core.received("c1")] == ["progress", "complete"]


async def test_a_gone_origin_is_cleaned_up_and_processing_continues(core: Core) -> None:
    await enqueue(core, "total", {"values": [1]})
    watcher = await core.connect("c2")
    await core.send(watcher, "subscribe", {"request_id": "r1"})
    await core.subscriptions.add(
        Subscription(
            key=core.key("other"),
            connection_id=ConnectionId("c1"),
            created_at=core.clock.now(),
            expires_at=0,
        )
    )
    core.notifier.mark_gone(ConnectionId("c1"))

    assert await core.process("r1") is Outcome.COMPLETED

    assert await core.connections.get(ConnectionId("c1")) is None
    assert await core.subscriptions.list_for_connection(ConnectionId("c1")) == []
    assert [m["type"] for m in core.received("c2")] == ["progress", "complete"]
    # Known gone after the first failure: not posted to again for the complete.
    assert core.notifier.attempts.count(ConnectionId("c1")) == 1


# -- cancellation, ownership and deadlines ---------------------------------------------------


async def test_cancel_mid_run_stops_the_action_at_the_report_after_the_refused_write(
    core: Core, calls: Calls
) -> None:
    """The snapshot write of the first report after the cancel is refused in the
    background; the report after that raises RequestCancelled."""
    refusal_checked = asyncio.Event()
    original_get = core.requests.get

    async def get(key: RequestKey) -> AsyncRequest | None:
        found = await original_get(key)
        refusal_checked.set()
        return found

    core.requests.get = get  # type: ignore[method-assign]
    await enqueue(core, "stepwise", {})
    run = asyncio.create_task(core.process("r1"))
    await asyncio.wait_for(calls.reported.wait(), 5)
    conn = await core.connect("c1")
    reply = await core.send(conn, "cancel", {"request_id": "r1"})
    assert reply["data"]["cancelled"] is True
    core.clock.advance(1.0)
    calls.gate.set()
    await asyncio.wait_for(calls.reported_again.wait(), 5)
    await asyncio.wait_for(refusal_checked.wait(), 5)
    calls.gate_again.set()

    assert await run is Outcome.CANCELLED
    assert (await core.stored("r1")).status is RequestStatus.CANCELLED
    types = [(m["type"], m.get("percentage")) for m in core.received("c1")]
    assert types == [("progress", 10.0), ("error", None), ("progress", 20.0)]


async def test_an_action_that_ignores_a_cancel_has_its_completion_refused(
    core: Core, calls: Calls
) -> None:
    await enqueue(core, "ignores_cancel", {})
    run = asyncio.create_task(core.process("r1"))
    await asyncio.wait_for(calls.reported.wait(), 5)
    await core.send(await core.connect("c1"), "cancel", {"request_id": "r1"})
    calls.gate.set()

    assert await run is Outcome.CANCELLED
    stored = await core.stored("r1")
    assert (stored.status, stored.result) == (RequestStatus.CANCELLED, None)
    assert "complete" not in [m["type"] for m in core.received("c1")]


async def test_a_run_whose_lease_was_taken_over_ends_lost(core: Core, calls: Calls) -> None:
    await enqueue(core, "stepwise", {})
    run = asyncio.create_task(core.process("r1"))
    await asyncio.wait_for(calls.reported.wait(), 5)
    # The lease runs out; the sweeper requeues it and another processor claims it.
    core.clock.advance(900 + 60 + 1)
    assert (await core.sweeper.sweep_once()).requeued == 1
    assert await core.requests.apply(
        core.key("r1"),
        transitions.claim(now=core.clock.now(), lease_until=core.clock.now() + timedelta(hours=1)),
    )
    calls.gate.set()
    calls.gate_again.set()

    assert await run is Outcome.LOST
    stored = await core.stored("r1")
    assert (stored.status, stored.attempt) == (RequestStatus.PROCESSING, 2)


async def test_too_close_to_the_deadline_the_request_is_handed_back(
    core: Core, calls: Calls
) -> None:
    await enqueue(core, "total", {"values": [1]})
    deadline = core.clock.now() + timedelta(seconds=DEADLINE_MARGIN_S)
    assert await core.processor.run(core.key("r1"), deadline=deadline) is Outcome.HANDED_BACK
    stored = await core.stored("r1")
    assert (stored.status, stored.lease_until) == (RequestStatus.PENDING, None)
    assert calls.attempts == []
    assert await core.process("r1") is Outcome.COMPLETED
    assert calls.attempts == [2]


async def test_an_unstorable_result_fails_at_once_without_rerunning_the_action(
    core: Core,
) -> None:
    """NaN cannot be stored: not a store outage to retry, nor a reason to run again."""
    runs: list[int] = []

    @core.app.action("nan", mode="async")
    async def nan(req: Request[dict[str, Any]], progress: Progress) -> dict[str, float]:
        runs.append(req.attempt)
        return {"ratio": float("nan")}

    await enqueue(core, "nan", {})
    assert await core.process("r1") is Outcome.FAILED
    stored = await core.stored("r1")
    assert stored.error is not None
    assert (stored.status, stored.error.code) == (RequestStatus.FAILED, "INTERNAL_ERROR")
    assert "cannot be stored" in stored.error.message
    assert runs == [1]
    assert core.clock.sleeps == []


async def test_a_result_over_the_message_limit_fails_instead_of_completing_undeliverably(
    core: Core,
) -> None:
    """Under the 400 KB item limit but over the 128 KB message limit: stored, it
    could never reach the client, so it fails with PAYLOAD_TOO_LARGE."""

    @core.app.action("big", mode="async")
    async def big(req: Request[dict[str, Any]], progress: Progress) -> dict[str, str]:
        return {"blob": "x" * (200 * 1024)}

    await enqueue(core, "big", {})
    assert await core.process("r1") is Outcome.FAILED
    stored = await core.stored("r1")
    assert stored.status is RequestStatus.FAILED
    assert stored.error is not None
    assert stored.error.code == "PAYLOAD_TOO_LARGE"
    assert stored.result is None
    (sent,) = core.notifier.messages(ConnectionId("c1"))
    assert sent.type == "error"


async def test_an_action_longer_than_the_deadline_fails_once_its_attempts_are_spent(
    core: Core, calls: Calls
) -> None:
    """Handed back, re-claimed and handed back again would loop forever; each claim
    is an attempt, so after max_retries + 1 of them the request fails with TIMEOUT."""
    await enqueue(core, "total", {"values": [1]})
    outcomes = []
    for _ in range(10):
        deadline = core.clock.now() + timedelta(seconds=DEADLINE_MARGIN_S)
        outcome = await core.processor.run(core.key("r1"), deadline=deadline)
        outcomes.append(outcome)
        if outcome is not Outcome.HANDED_BACK:
            break
    stored = await core.stored("r1")
    budget = stored.max_retries + 1
    assert outcomes == [Outcome.HANDED_BACK] * (budget - 1) + [Outcome.FAILED]
    assert stored.status is RequestStatus.FAILED
    assert stored.error is not None
    assert stored.error.code == "TIMEOUT"
    (last,) = [m for m in core.notifier.messages(ConnectionId("c1")) if m.type == "error"]
    assert last.error.code == "TIMEOUT"


async def test_request_attempt_counts_claims_and_retries(core: Core, calls: Calls) -> None:
    calls.failures_left = 1
    await enqueue(core, "flaky", {})
    deadline = core.clock.now() + timedelta(seconds=DEADLINE_MARGIN_S)
    await core.processor.run(core.key("r1"), deadline=deadline)  # claim 1, handed back
    assert await core.process("r1") is Outcome.COMPLETED
    assert calls.attempts == [2, 3]


# -- background snapshot writes ----------------------------------------------------------


def snapshot_writes_running() -> list[asyncio.Task[Any]]:
    return [
        task
        for task in asyncio.all_tasks()
        if task.get_name().startswith("persist-progress-") and not task.done()
    ]


@pytest.fixture
def held(core: Core) -> HeldWrites:
    """Snapshot writes held; every report writes one (no interval, so the first
    report after the claim does too)."""
    store = HeldWrites()
    core.requests = store
    core.settings = replace(core.settings, progress_persist_interval_s=0)
    core.__post_init__()
    return store


async def test_completion_waits_for_the_snapshot_write_in_flight(
    core: Core, held: HeldWrites
) -> None:
    held.hold = asyncio.Event()
    await enqueue(core, "total", {"values": [1]})
    run = asyncio.create_task(core.process("r1"))
    await asyncio.wait_for(held.started.wait(), 5)
    await core.notifier.wait_for(lambda n: len(n.sent) == 1)  # the progress, not yet saved
    assert (await core.stored("r1")).status is RequestStatus.PROCESSING
    held.hold.set()
    assert await run is Outcome.COMPLETED
    stored = await core.stored("r1")
    # The held write (50 %) landed before the completion, which then stored 100 %
    # with the action's last message (a late snapshot write would be refused).
    assert held.writes == [(50.0, "adding")]
    assert (stored.status, stored.progress, stored.progress_message) == (
        RequestStatus.COMPLETED,
        100.0,
        "adding",
    )
    assert [m["type"] for m in core.received("c1")] == ["progress", "complete"]


async def test_a_run_cancelled_mid_write_leaves_no_write_running(
    core: Core, calls: Calls, held: HeldWrites
) -> None:
    held.hold = asyncio.Event()  # never set: the write hangs
    await enqueue(core, "stepwise", {})
    run = asyncio.create_task(core.process("r1"))
    await asyncio.wait_for(calls.reported.wait(), 5)
    await asyncio.wait_for(held.started.wait(), 5)
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert snapshot_writes_running() == []
    assert held.in_flight == 0
    assert (await core.stored("r1")).status is RequestStatus.PENDING  # handed back


async def test_a_run_handed_back_mid_write_leaves_no_write_running(
    core: Core, held: HeldWrites
) -> None:
    held.hold = asyncio.Event()  # never set: the write hangs
    await enqueue(core, "reports_then_retries", {})
    # Time for one run, not for the backoff before a second: handed back.
    deadline = core.clock.now() + timedelta(seconds=DEADLINE_MARGIN_S + 0.2)
    assert await core.processor.run(core.key("r1"), deadline=deadline) is Outcome.HANDED_BACK
    assert held.writes == [(10.0, "started")]
    assert snapshot_writes_running() == []
    assert held.in_flight == 0


# --- the progress a finished request keeps ---------------------------------------------


def finishing_app() -> Streamer:
    app = Streamer()

    @app.action("quiet", mode="async")
    async def quiet(req: Request[dict[str, Any]], progress: Progress) -> dict[str, Any]:
        return dict(req.payload)

    @app.action("report", mode="async")
    async def report(req: Request[dict[str, Any]], progress: Progress) -> str:
        await progress.report(40, "Generating")
        # Within the persist interval: reported, not yet written.
        await progress.report(95, "Uploading report", part=2)
        return "s3://r"

    @app.action("breaks", mode="async")
    async def breaks(req: Request[dict[str, Any]], progress: Progress) -> str:
        await progress.report(40, "step 4")
        await progress.report(70, "step 7")
        raise StreamerError("PROCESSING_FAILED", "upstream refused")

    return app


@pytest.mark.parametrize(
    ("action", "message", "details"),
    [("quiet", "", {}), ("report", "Uploading report", {"part": 2})],
)
async def test_a_completed_request_stores_100_with_its_last_message(
    action: str, message: str, details: dict[str, Any]
) -> None:
    core = make_core(finishing_app())
    await enqueue(core, action, {})

    assert await core.process("r1") is Outcome.COMPLETED

    stored = await core.stored("r1")
    assert (stored.progress, stored.progress_message, stored.progress_details) == (
        100.0,
        message,
        details,
    )


async def test_a_failed_request_stores_the_last_progress_it_reported() -> None:
    core = make_core(finishing_app())
    await enqueue(core, "breaks", {})

    assert await core.process("r1") is Outcome.FAILED

    stored = await core.stored("r1")
    assert (stored.status, stored.progress, stored.progress_message) == (
        RequestStatus.FAILED,
        70.0,
        "step 7",
    )


async def running_then_followed(core: Core, calls: Calls) -> asyncio.Task[Outcome]:
    """Run r1 until its action reports, then add c2 as another process's
    `subscribe` would (this processor's copy of the request predates the mark)."""
    run = asyncio.create_task(core.process("r1"))
    await asyncio.wait_for(calls.reported.wait(), 5)
    await core.connect("c2")
    await core.follow_elsewhere(core.key("r1"), "c2")
    return run


async def test_a_follower_marked_elsewhere_gets_progress_after_the_next_snapshot_and_the_outcome(
    core: Core, calls: Calls
) -> None:
    """Another process's `subscribe` (the subscription, then the mark): this
    processor's copy of the request predates it. The next snapshot write returns
    the mark, so the reports after it reach the follower, as does the outcome."""
    await enqueue(core, "stepwise", {})
    run = await running_then_followed(core, calls)
    core.clock.advance(1.0)  # the second report makes a snapshot write due
    calls.gate.set()
    await asyncio.wait_for(calls.reported_again.wait(), 5)
    calls.gate_again.set()
    assert await run is Outcome.COMPLETED
    seen = [(m["type"], m.get("percentage")) for m in core.received("c2")]
    assert seen == [("progress", 30.0), ("complete", None)]


async def test_a_run_that_ends_within_a_persist_interval_writes_claim_and_outcome_only(
    core: Core,
) -> None:
    """The claim counts as the first snapshot write and the outcome holds the last
    report: a quick action costs two writes, whatever it reports."""
    await enqueue(core, "total", {"values": [1]})
    changes: list[str] = []
    original = core.requests.apply

    async def spy(key: RequestKey, transition: Transition) -> AsyncRequest | None:
        changes.append(transition.name)
        return await original(key, transition)

    core.requests.apply = spy  # type: ignore[method-assign]
    assert await core.process("r1") is Outcome.COMPLETED
    assert changes == ["claim", "complete"]
    stored = await core.stored("r1")
    assert (stored.progress, stored.progress_message) == (100.0, "adding")


async def test_a_failure_reaches_a_follower_marked_after_the_claim(
    core: Core, calls: Calls
) -> None:
    """The outcome goes by the copy its own write returned, not the claimed one."""
    await enqueue(core, "waits_then_refuses", {})
    run = await running_then_followed(core, calls)
    calls.gate.set()
    assert await run is Outcome.FAILED
    assert [m["type"] for m in core.received("c2")] == ["error"]


class LostAnswers(InMemoryRequestStore):
    """The first `complete` lands, but its answer is lost (the call raises)."""

    def __init__(self) -> None:
        super().__init__()
        self.lost = False

    async def apply(self, key: RequestKey, transition: Transition) -> AsyncRequest | None:
        applied = await super().apply(key, transition)
        if transition.name == "complete" and not self.lost:
            self.lost = True
            raise StoreUnavailable("the answer was lost")
        return applied


async def test_an_outcome_whose_write_answer_was_lost_still_reaches_followers(
    calls: Calls,
) -> None:
    """Its retry is refused (already completed): with no copy from the write, the
    request counts as followed and its subscribers are looked up."""
    core = make_core(build_app(calls))
    core.requests = LostAnswers()
    core.__post_init__()
    await enqueue(core, "stepwise", {})
    run = await running_then_followed(core, calls)
    calls.gate.set()
    calls.gate_again.set()
    assert await run is Outcome.COMPLETED
    assert core.requests.lost
    assert [m["type"] for m in core.received("c2")][-1] == "complete"


async def test_a_request_handed_back_keeps_the_last_report_for_its_next_run(core: Core) -> None:
    """Reported within the claim's interval (so not written yet), then handed back:
    the release stores it, and the next run starts from it."""
    await enqueue(core, "reports_then_retries", {})
    deadline = core.clock.now() + timedelta(seconds=DEADLINE_MARGIN_S + 0.2)
    assert await core.processor.run(core.key("r1"), deadline=deadline) is Outcome.HANDED_BACK
    stored = await core.stored("r1")
    assert (stored.status, stored.progress, stored.progress_message) == (
        RequestStatus.PENDING,
        10.0,
        "started",
    )


async def test_a_recorded_retry_keeps_the_last_report(core: Core, calls: Calls) -> None:
    seen, _ = core.spy_transitions("record_retry", "progress")
    await enqueue(core, "reports_then_retries", {})
    assert await core.process("r1") is Outcome.FAILED  # Retryable every time
    assert seen == [10.0] * 3  # each retry stored the report its run made
