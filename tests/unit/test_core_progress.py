"""Progress: clamped, never decreasing, throttled with the last update kept,
persisted at most once per interval, cancellation noticed."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from core_harness import Core, HeldWrites, make_core

from streamer import RequestCancelled, Streamer, transitions
from streamer.errors import StoreUnavailable
from streamer.models import AsyncRequest
from streamer.progress import OwnershipLost, Progress


async def claimed_progress(
    core: Core, rid: str = "r1", *, first_write_due: bool = True
) -> tuple[Progress, AsyncRequest]:
    """A request enqueued and claimed, and the Progress the processor would hand out;
    `first_write_due`: the clock then moves one persist interval on, so the first
    report is written at once (the claim counts as a write)."""
    conn = await core.connect("c1")
    reply = await core.send(conn, "job", {}, id=rid)
    assert reply["type"] == "acknowledgment"
    claimed = await core.requests.apply(
        core.key(rid),
        transitions.claim(now=core.clock.now(), lease_until=core.clock.now() + timedelta(hours=1)),
    )
    assert claimed is not None
    progress = Progress(
        request=claimed,
        requests=core.requests,
        delivery=core.delivery,
        clock=core.clock,
        settings=core.settings,
    )
    if first_write_due:
        core.clock.advance(core.settings.progress_persist_interval_s)
    return progress, claimed


def spied_writes(core: Core) -> tuple[list[Any], asyncio.Event]:
    """The percentage of every snapshot write, and an event set by each."""
    return core.spy_transitions("record_progress", "progress")


def job_app() -> Streamer:
    app = Streamer()

    @app.action("job", mode="async")
    async def job(req: Any, progress: Progress) -> None:
        return None

    return app


@pytest.fixture
def core() -> Core:
    return make_core(job_app())


def updates(core: Core) -> list[tuple[float, str]]:
    return [(m["percentage"], m["message"]) for m in core.received("c1") if m["type"] == "progress"]


async def test_updates_faster_than_the_limit_are_coalesced_and_the_last_is_flushed(
    core: Core,
) -> None:
    progress, _ = await claimed_progress(core)
    for step in range(1, 11):
        await progress.report(step * 10, f"step {step}")
        core.clock.advance(0.01)
    assert updates(core) == [(10.0, "step 1")]
    await progress.flush()
    assert updates(core) == [(10.0, "step 1"), (100.0, "step 10")]
    await progress.flush()
    assert len(updates(core)) == 2


async def test_at_most_ten_updates_a_second_are_delivered(core: Core) -> None:
    progress, _ = await claimed_progress(core)
    for step in range(100):
        await progress.report(step, "")
        core.clock.advance(0.02)
    # 100 reports over 2 s at 50/s: one every 0.1 s gets through.
    assert len(updates(core)) == 20


async def test_throttling_off_delivers_every_update() -> None:
    core = make_core(job_app(), progress_max_per_s=0)
    progress, _ = await claimed_progress(core)
    for step in range(5):
        await progress.report(step * 10)
    assert [p for p, _ in updates(core)] == [0.0, 10.0, 20.0, 30.0, 40.0]


async def test_percentages_are_clamped_and_never_decrease(core: Core) -> None:
    progress, _ = await claimed_progress(core)
    for value, message in [(-5, "a"), (40, "b"), (30, "c"), (250, "d"), (90, "e")]:
        await progress.report(value, message)
        core.clock.advance(1)
    assert updates(core) == [(0.0, "a"), (40.0, "b"), (40.0, "c"), (100.0, "d"), (100.0, "e")]


async def test_metadata_travels_with_the_update_and_is_made_json_safe(core: Core) -> None:
    progress, _ = await claimed_progress(core)
    await progress.report(30, "querying", items=120, since=timedelta(seconds=3))
    (message,) = core.received("c1")
    assert message["metadata"] == {"items": 120, "since": "PT3S"}


async def test_the_snapshot_is_persisted_at_most_once_per_interval(core: Core) -> None:
    progress, _ = await claimed_progress(core)
    writes, _ = spied_writes(core)
    for step in range(10):
        await progress.report(step * 10, f"step {step}")
        core.clock.advance(0.25)
    # Reports at 1.0, 1.25 … 3.25 s after the claim: written at 1.0, 2.0 and 3.0 s.
    assert writes == [0.0, 40.0, 80.0]
    stored = await core.stored("r1")
    assert (stored.progress, stored.progress_message) == (80.0, "step 8")


async def test_a_cancel_is_noticed_at_the_next_report_after_the_refused_write(
    core: Core,
) -> None:
    progress, _ = await claimed_progress(core)
    await progress.report(10)
    await core.requests.apply(
        core.key("r1"), transitions.cancel(now=core.clock.now(), expires_at=0)
    )
    core.clock.advance(1)
    await progress.report(20)  # its snapshot write is refused in the background
    await progress.flush()
    with pytest.raises(RequestCancelled):
        await progress.report(30)
    with pytest.raises(RequestCancelled):
        await progress.check_cancelled()
    assert [p for p, _ in updates(core)] == [10.0, 20.0]


async def test_a_refused_write_found_cancelled_stops_check_cancelled_too(core: Core) -> None:
    progress, _ = await claimed_progress(core)
    await core.requests.apply(
        core.key("r1"), transitions.cancel(now=core.clock.now(), expires_at=0)
    )
    await progress.report(10)
    await progress.flush()
    core.requests.inject_failure("get", StoreUnavailable())
    with pytest.raises(RequestCancelled):
        await progress.check_cancelled()


async def test_check_cancelled_always_asks_the_store(core: Core) -> None:
    progress, _ = await claimed_progress(core)
    await progress.check_cancelled()
    await core.requests.apply(
        core.key("r1"), transitions.cancel(now=core.clock.now(), expires_at=0)
    )
    with pytest.raises(RequestCancelled):
        await progress.check_cancelled()


async def test_a_request_claimed_by_someone_else_raises_ownership_lost(core: Core) -> None:
    progress, claimed = await claimed_progress(core)
    await core.requests.apply(claimed.key, transitions.release(attempt=1, now=core.clock.now()))
    await core.requests.apply(
        claimed.key, transitions.claim(now=core.clock.now(), lease_until=core.clock.now())
    )
    await progress.report(50)  # refused in the background
    await progress.flush()
    with pytest.raises(OwnershipLost):
        await progress.report(60)


async def test_a_report_does_not_wait_for_the_snapshot_write(core: Core) -> None:
    store = HeldWrites()
    core.requests = store
    core.__post_init__()
    progress, _ = await claimed_progress(core)
    store.hold = asyncio.Event()
    await progress.report(10, "started")
    await asyncio.wait_for(store.started.wait(), 5)
    assert updates(core) == [(10.0, "started")]
    assert (await core.stored("r1")).progress == 0.0
    store.hold.set()
    await progress.flush()
    assert (await core.stored("r1")).progress == 10.0


async def test_one_write_in_flight_and_the_latest_value_wins(core: Core) -> None:
    store = HeldWrites()
    core.requests = store
    core.__post_init__()
    progress, _ = await claimed_progress(core)
    store.hold = asyncio.Event()
    await progress.report(10, "a")
    await asyncio.wait_for(store.started.wait(), 5)
    for value, message in [(20, "b"), (30, "c"), (40, "d")]:
        core.clock.advance(1)  # each due while the first is still in flight
        await progress.report(value, message)
    store.hold.set()
    await progress.flush()
    assert store.writes == [(10.0, "a"), (40.0, "d")]
    assert store.most_in_flight == 1
    stored = await core.stored("r1")
    assert (stored.progress, stored.progress_message) == (40.0, "d")


async def test_flush_waits_for_the_write_in_flight(core: Core) -> None:
    store = HeldWrites()
    core.requests = store
    core.__post_init__()
    progress, _ = await claimed_progress(core)
    store.hold = asyncio.Event()
    await progress.report(10)
    flushing = asyncio.create_task(progress.flush())
    await asyncio.wait_for(store.started.wait(), 5)
    await asyncio.sleep(0)
    assert not flushing.done()
    store.hold.set()
    await asyncio.wait_for(flushing, 5)
    assert store.in_flight == 0


async def test_flush_sends_nothing_once_a_refused_write_found_the_request_cancelled(
    core: Core,
) -> None:
    store = HeldWrites()
    core.requests = store
    core.__post_init__()
    progress, _ = await claimed_progress(core)
    await core.requests.apply(
        core.key("r1"), transitions.cancel(now=core.clock.now(), expires_at=0)
    )
    store.hold = asyncio.Event()
    await progress.report(10)
    await asyncio.wait_for(store.started.wait(), 5)
    core.clock.advance(0.01)
    await progress.report(20)  # coalesced: would be flushed
    store.hold.set()
    await progress.flush()
    assert [p for p, _ in updates(core)] == [10.0]


async def test_close_cancels_the_write_in_flight_and_writes_no_more(core: Core) -> None:
    store = HeldWrites()
    core.requests = store
    core.__post_init__()
    progress, _ = await claimed_progress(core)
    store.hold = asyncio.Event()
    await progress.report(10)
    await asyncio.wait_for(store.started.wait(), 5)
    await progress.close()
    assert store.in_flight == 0
    core.clock.advance(1)
    await progress.report(20)
    await progress.flush()
    assert store.writes == [(10.0, "")]
    assert (await core.stored("r1")).progress == 0.0


async def test_a_store_outage_drops_the_snapshot_and_keeps_delivering(core: Core) -> None:
    progress, _ = await claimed_progress(core)
    core.requests.inject_failure("record_progress", StoreUnavailable())
    await progress.report(10, "still going")
    assert updates(core) == [(10.0, "still going")]
    assert (await core.stored("r1")).progress == 0.0
    core.requests.inject_failure("get", StoreUnavailable())
    await progress.check_cancelled()


async def test_a_reclaimed_request_continues_from_its_stored_percentage(core: Core) -> None:
    progress, claimed = await claimed_progress(core)
    await progress.report(60, "most of it")
    await progress.flush()
    await core.requests.apply(claimed.key, transitions.release(attempt=1, now=core.clock.now()))
    again = await core.requests.apply(
        claimed.key, transitions.claim(now=core.clock.now(), lease_until=core.clock.now())
    )
    assert again is not None
    resumed = Progress(
        request=again,
        requests=core.requests,
        delivery=core.delivery,
        clock=core.clock,
        settings=core.settings,
    )
    await resumed.report(5, "restarted")
    assert resumed.percentage == 60.0


# -- the claim counts as the first write ---------------------------------------------


async def test_reports_within_an_interval_of_the_claim_write_nothing(core: Core) -> None:
    progress, _ = await claimed_progress(core, first_write_due=False)
    writes, _ = spied_writes(core)
    for step in range(4):
        await progress.report(step * 20, f"step {step}")
        core.clock.advance(0.2)
    await progress.flush()  # the processor's last word before the outcome: no write
    await progress.close()
    assert writes == []
    assert [p for p, _ in updates(core)] == [0.0, 20.0, 40.0, 60.0]
    assert (await core.stored("r1")).progress == 0.0


async def test_a_report_due_after_the_claims_interval_is_written_at_once(core: Core) -> None:
    progress, _ = await claimed_progress(core, first_write_due=False)
    writes, _ = spied_writes(core)
    await progress.report(10)
    core.clock.advance(core.settings.progress_persist_interval_s)
    await progress.report(20)
    await progress.flush()
    assert writes == [20.0]


async def test_a_report_not_due_is_written_when_the_interval_ends() -> None:
    """The action reports once and keeps working: the snapshot still follows."""
    core = make_core(job_app(), progress_persist_interval_s=0.05)
    progress, _ = await claimed_progress(core, first_write_due=False)
    writes, written = spied_writes(core)
    await progress.report(10, "downloading")
    await asyncio.wait_for(written.wait(), 5)
    await progress.close()
    assert writes == [10.0]
    stored = await core.stored("r1")
    assert (stored.progress, stored.progress_message) == (10.0, "downloading")


@pytest.mark.parametrize("ending", ["flush", "close"])
async def test_the_run_ending_cancels_a_write_not_yet_due(ending: str) -> None:
    """`flush` (the outcome's write holds the last report) and `close` leave no
    timer to write it afterwards."""
    core = make_core(job_app(), progress_persist_interval_s=0.05)
    progress, _ = await claimed_progress(core, first_write_due=False)
    writes, written = spied_writes(core)
    await progress.report(10)
    await getattr(progress, ending)()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(written.wait(), 0.2)
    await progress.close()
    assert writes == []
