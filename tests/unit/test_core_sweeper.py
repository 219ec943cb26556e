"""The sweeper, the delivery fan-out and the rate limiter."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from core_harness import Core, make_core

from streamer import Streamer, transitions
from streamer.errors import StoreUnavailable
from streamer.models import AsyncRequest, ConnectionId, RequestStatus
from streamer.progress import Progress
from streamer.protocol import Response
from streamer.ratelimit import RateLimiter
from streamer.sweeper import EXHAUSTED_MESSAGE, NOT_PICKED_UP_MESSAGE, SweepReport
from streamer.testing import ManualClock


def job_app() -> Streamer:
    app = Streamer()

    @app.action("job", mode="async", max_retries=1, timeout=60)
    async def job(req: Any, progress: Progress) -> str:
        return "done"

    return app


@pytest.fixture
def core() -> Core:
    return make_core(job_app(), lease_grace_s=30)


async def claim(core: Core, rid: str = "r1") -> None:
    now = core.clock.now()
    lease = now + timedelta(seconds=90)
    assert (
        await core.requests.apply(core.key(rid), transitions.claim(now=now, lease_until=lease))
        is not None
    )


async def test_nothing_to_do_before_a_lease_expires(core: Core) -> None:
    conn = await core.connect()
    await core.send(conn, "job", {}, id="r1")
    await claim(core)
    core.clock.advance(89)
    assert await core.sweeper.sweep_once() == SweepReport()
    assert (await core.stored("r1")).status is RequestStatus.PROCESSING


async def test_an_expired_lease_with_attempts_left_goes_back_to_pending(core: Core) -> None:
    conn = await core.connect()
    await core.send(conn, "job", {}, id="r1")
    await claim(core)
    core.clock.advance(91)
    assert await core.sweeper.sweep_once() == SweepReport(requeued=1)
    assert (await core.stored("r1")).status is RequestStatus.PENDING
    assert await core.process("r1") == "COMPLETED"


async def test_an_expired_lease_with_attempts_spent_fails_and_tells_the_followers(
    core: Core,
) -> None:
    conn = await core.connect()
    await core.send(conn, "job", {}, id="r1")
    for _ in range(2):  # max_retries=1: two claims in all
        await claim(core)
        core.clock.advance(91)
        report = await core.sweeper.sweep_once()
    assert report == SweepReport(failed=1)
    stored = await core.stored("r1")
    assert stored.status is RequestStatus.FAILED
    assert stored.error is not None
    assert (stored.error.code, stored.error.message) == ("PROCESSING_FAILED", EXHAUSTED_MESSAGE)
    assert stored.expires_at == int((core.clock.now() + timedelta(days=7)).timestamp())
    (message,) = core.received("c1")
    assert (message["request_id"], message["error"]["code"]) == ("r1", "PROCESSING_FAILED")


def marked_after_listing(core: Core, lister: str, cid: str) -> None:
    """The sweeper's list is read, then another process's `subscribe` lands: the
    sweeper holds copies that predate the mark."""
    original = getattr(core.requests, lister)

    async def listed(**kwargs: Any) -> list[AsyncRequest]:
        found = await original(**kwargs)
        for request in found:
            await core.follow_elsewhere(request.key, cid)
        return found

    setattr(core.requests, lister, listed)


async def test_an_exhausted_lease_fails_to_a_follower_marked_after_the_listing(
    core: Core,
) -> None:
    conn = await core.connect()
    await core.send(conn, "job", {}, id="r1")
    await core.connect("c2")
    for sweep in range(2):  # max_retries=1: two claims in all
        await claim(core)
        core.clock.advance(91)
        if sweep == 1:
            marked_after_listing(core, "list_expired_leases", "c2")
        await core.sweeper.sweep_once()
    assert [m["type"] for m in core.received("c2")] == ["error"]


async def test_a_request_never_picked_up_fails_to_a_follower_marked_after_the_listing(
    lossy: Core,
) -> None:
    conn = await lossy.connect()
    await lossy.send(conn, "job", {}, id="r1")
    await lossy.connect("c2")
    for sweep in range(3):
        lossy.clock.advance(61)
        if sweep == 2:
            marked_after_listing(lossy, "list_stale_pending", "c2")
        await lossy.sweeper.sweep_once()
    assert [m["error"]["message"] for m in lossy.received("c2")] == [NOT_PICKED_UP_MESSAGE]


async def test_one_failing_item_does_not_stop_the_sweep(core: Core) -> None:
    conn = await core.connect()
    for rid in ("r1", "r2"):
        await core.send(conn, "job", {}, id=rid)
        await claim(core, rid)
    core.clock.advance(91)
    core.requests.inject_failure("requeue_expired", StoreUnavailable())
    assert await core.sweeper.sweep_once() == SweepReport(requeued=1)


# -- stale PENDING requests (their stream record was lost) ------------------------------


@pytest.fixture
def lossy() -> Core:
    """Stale after 60 s; failed after two kicks."""
    return make_core(job_app(), pending_stale_s=60, pending_max_kicks=2)


async def test_a_pending_request_younger_than_the_threshold_is_left_alone(lossy: Core) -> None:
    conn = await lossy.connect()
    await lossy.send(conn, "job", {}, id="r1")
    lossy.clock.advance(60)
    assert await lossy.sweeper.sweep_once() == SweepReport()
    assert (await lossy.stored("r1")).kicks == 0


async def test_a_stale_pending_request_is_kicked_and_can_then_be_processed(lossy: Core) -> None:
    conn = await lossy.connect()
    await lossy.send(conn, "job", {}, id="r1")
    lossy.clock.advance(61)
    assert await lossy.sweeper.sweep_once() == SweepReport(kicked=1)
    stored = await lossy.stored("r1")
    assert (stored.status, stored.kicks, stored.updated_at) == (
        RequestStatus.PENDING,
        1,
        lossy.clock.now(),
    )
    assert await lossy.sweeper.sweep_once() == SweepReport()  # just kicked: not stale
    assert await lossy.process("r1") == "COMPLETED"


async def test_a_request_never_picked_up_after_its_kicks_fails_and_tells_the_followers(
    lossy: Core,
) -> None:
    conn = await lossy.connect()
    await lossy.send(conn, "job", {}, id="r1")
    reports = []
    for _ in range(3):
        lossy.clock.advance(61)
        reports.append(await lossy.sweeper.sweep_once())
    assert reports == [SweepReport(kicked=1), SweepReport(kicked=1), SweepReport(failed=1)]
    stored = await lossy.stored("r1")
    assert stored.status is RequestStatus.FAILED
    assert stored.error is not None
    assert (stored.error.code, stored.error.message) == ("PROCESSING_FAILED", NOT_PICKED_UP_MESSAGE)
    assert stored.expires_at == int((lossy.clock.now() + timedelta(days=7)).timestamp())
    (message,) = lossy.received("c1")
    assert (message["request_id"], message["error"]["message"]) == ("r1", NOT_PICKED_UP_MESSAGE)
    assert await lossy.process("r1") != "COMPLETED"


async def test_the_failure_is_stored_before_the_followers_hear_of_it(
    lossy: Core, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = await lossy.connect()
    await lossy.send(conn, "job", {}, id="r1")
    for _ in range(2):
        lossy.clock.advance(61)
        await lossy.sweeper.sweep_once()
    seen: list[RequestStatus] = []
    send = lossy.notifier.send

    async def send_noting_the_stored_status(connection_id: Any, message: Any) -> None:
        seen.append((await lossy.stored("r1")).status)
        await send(connection_id, message)

    monkeypatch.setattr(lossy.notifier, "send", send_noting_the_stored_status)
    lossy.clock.advance(61)
    assert await lossy.sweeper.sweep_once() == SweepReport(failed=1)
    assert seen == [RequestStatus.FAILED]


async def test_a_request_claimed_meanwhile_is_neither_kicked_nor_failed(lossy: Core) -> None:
    """The sweeper's write is conditional on the UpdatedAt it listed."""
    conn = await lossy.connect()
    await lossy.send(conn, "job", {}, id="r1")
    lossy.clock.advance(61)
    listed = await lossy.requests.list_stale_pending(older_than=lossy.clock.now(), limit=10)
    await claim(lossy)
    assert not await lossy.requests.apply(
        listed[0].key, transitions.kick(seen_updated_at=listed[0].updated_at, now=lossy.clock.now())
    )
    assert await lossy.sweeper.sweep_once() == SweepReport()
    assert (await lossy.stored("r1")).status is RequestStatus.PROCESSING


async def test_one_failing_kick_does_not_stop_the_sweep(lossy: Core) -> None:
    conn = await lossy.connect()
    for rid in ("r1", "r2"):
        await lossy.send(conn, "job", {}, id=rid)
    lossy.clock.advance(61)
    lossy.requests.inject_failure("kick", StoreUnavailable())
    assert await lossy.sweeper.sweep_once() == SweepReport(kicked=1)


# -- delivery ---------------------------------------------------------------------------


async def test_delivery_reaches_origin_and_subscribers_once_each(core: Core) -> None:
    conn = await core.connect("c1")
    await core.send(conn, "job", {}, id="r1")
    await core.follow_elsewhere(core.key("r1"), "c1", "c2", "c3")
    message = Response(timestamp=core.clock.now(), request_id="r1")
    delivered = await core.delivery.to_request(await core.stored("r1"), message)
    assert delivered == 3
    assert sorted(core.notifier.attempts) == ["c1", "c2", "c3"]


async def test_a_failing_connection_is_skipped_and_the_rest_still_receive(core: Core) -> None:
    conn = await core.connect("c1")
    await core.send(conn, "job", {}, id="r1")
    await core.follow_elsewhere(core.key("r1"), "c2")
    core.notifier.fail_sends(RuntimeError("throttled"), connection_id=ConnectionId("c1"))
    message = Response(timestamp=core.clock.now(), request_id="r1")
    assert await core.delivery.to_request(await core.stored("r1"), message) == 1
    assert core.notifier.types(ConnectionId("c2")) == ["response"]
    assert await core.connections.get(ConnectionId("c1")) is not None


async def test_subscribers_unreadable_still_reaches_the_origin(core: Core) -> None:
    conn = await core.connect("c1")
    await core.send(conn, "job", {}, id="r1")
    await core.follow_elsewhere(core.key("r1"))
    core.subscriptions.inject_failure("list_for_request", StoreUnavailable())
    message = Response(timestamp=core.clock.now(), request_id="r1")
    assert await core.delivery.to_request(await core.stored("r1"), message) == 1


# -- rate limiter --------------------------------------------------------------------------


def test_rate_limiter_allows_a_burst_then_refills_continuously() -> None:
    clock = ManualClock()
    limiter = RateLimiter(per_minute=60, clock=clock)
    cid = ConnectionId("c1")
    assert all(limiter.allow(cid) for _ in range(60))
    assert not limiter.allow(cid)
    clock.advance(1)
    assert limiter.allow(cid)
    assert not limiter.allow(cid)


def test_rate_limit_of_zero_is_off() -> None:
    limiter = RateLimiter(per_minute=0, clock=ManualClock())
    assert all(limiter.allow(ConnectionId("c1")) for _ in range(1000))


def test_forgetting_a_connection_resets_its_bucket() -> None:
    limiter = RateLimiter(per_minute=1, clock=ManualClock())
    cid = ConnectionId("c1")
    assert limiter.allow(cid)
    assert not limiter.allow(cid)
    limiter.forget(cid)
    assert limiter.allow(cid)
