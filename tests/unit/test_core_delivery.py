"""Delivery: fan-out to the origin and subscribers, with the subscriber list
reused for progress within an interval and looked up afresh for outcomes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from core_harness import Core, make_core

import streamer.delivery
from streamer import Progress, Streamer, transitions
from streamer.errors import StoreUnavailable
from streamer.models import AsyncRequest, RequestKey, Subscription
from streamer.protocol import Complete, ErrorBody, ErrorMessage, ProgressUpdate, ServerMessage
from streamer.testing import InMemorySubscriptionStore


class CountingSubscriptions(InMemorySubscriptionStore):
    """Counts lookups; a test may hold the next one until `release` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.lookups = 0
        self.hold: asyncio.Event | None = None
        self.holding = asyncio.Event()

    async def list_for_request(self, key: RequestKey) -> list[Subscription]:
        self.lookups += 1
        found = await super().list_for_request(key)
        if self.hold is not None:
            hold, self.hold = self.hold, None
            self.holding.set()
            await hold.wait()
        return found


def job_app() -> Streamer:
    app = Streamer()

    @app.action("job", mode="async")
    async def job(req: Any, progress: Progress) -> None:
        return None

    return app


@pytest.fixture
def core() -> Core:
    core = make_core(job_app())
    core.subscriptions = CountingSubscriptions()
    core.__post_init__()
    return core


def lookups(core: Core) -> int:
    assert isinstance(core.subscriptions, CountingSubscriptions)
    return core.subscriptions.lookups


async def running_request(core: Core, rid: str = "r1", *, followed: bool = True) -> AsyncRequest:
    """A claimed request; `followed`: marked as a `subscribe` marks it (the
    subscriber lookups these tests count are made for followed requests only)."""
    conn = await core.connect("c1")
    await core.send(conn, "job", {}, id=rid)
    if followed:
        await core.requests.apply(core.key(rid), transitions.follow())
    claimed = await core.requests.apply(
        core.key(rid),
        transitions.claim(now=core.clock.now(), lease_until=core.clock.now() + timedelta(hours=1)),
    )
    assert claimed is not None
    assert claimed.followed is followed
    return claimed


def progress(core: Core, request: AsyncRequest, percentage: float) -> ServerMessage:
    return ProgressUpdate(
        timestamp=core.clock.now(), request_id=request.request_id, percentage=percentage
    )


def complete(core: Core, request: AsyncRequest) -> ServerMessage:
    return Complete(timestamp=core.clock.now(), request_id=request.request_id, result=None)


def types(core: Core, cid: str) -> list[str]:
    return [m["type"] for m in core.received(cid)]


@contextlib.asynccontextmanager
async def held_lookup(core: Core, request: AsyncRequest) -> AsyncIterator[None]:
    """A progress message (10 %) whose subscriber lookup waits inside the block
    and finishes, with the message sent, when the block ends."""
    subscriptions = core.subscriptions
    assert isinstance(subscriptions, CountingSubscriptions)
    hold = subscriptions.hold = asyncio.Event()
    sending = asyncio.create_task(core.delivery.to_request(request, progress(core, request, 10)))
    await asyncio.wait_for(subscriptions.holding.wait(), 5)
    try:
        yield
    finally:
        hold.set()
        await sending


async def test_progress_reuses_the_subscriber_list_within_the_interval(core: Core) -> None:
    request = await running_request(core)
    await core.follow_elsewhere(request.key, "c2")
    for step in range(5):
        await core.delivery.to_request(request, progress(core, request, step))
        core.clock.advance(0.1)
    assert lookups(core) == 1
    core.clock.advance(0.5)  # 1.0 s after the lookup
    await core.delivery.to_request(request, progress(core, request, 9))
    assert lookups(core) == 2
    assert types(core, "c2") == ["progress"] * 6


async def test_a_lookup_slower_than_the_interval_is_still_reused(core: Core) -> None:
    """A busy store: the list is reused for an interval from when it arrived."""
    request = await running_request(core)
    async with held_lookup(core, request):
        core.clock.advance(3)  # the lookup takes three intervals
    for step in range(5):
        core.clock.advance(0.1)
        await core.delivery.to_request(request, progress(core, request, 20 + step))
    assert lookups(core) == 1


async def test_a_follower_added_elsewhere_misses_at_most_an_interval_never_the_outcome(
    core: Core,
) -> None:
    request = await running_request(core)
    await core.delivery.to_request(request, progress(core, request, 10))
    await core.follow_elsewhere(request.key, "c2")
    await core.delivery.to_request(request, progress(core, request, 20))
    assert types(core, "c2") == []
    await core.delivery.to_request(request, complete(core, request))
    assert types(core, "c2") == ["complete"]


async def test_outcomes_always_look_up_afresh(core: Core) -> None:
    request = await running_request(core)
    await core.delivery.to_request(request, progress(core, request, 10))
    failed = ErrorMessage(
        timestamp=core.clock.now(),
        request_id=request.request_id,
        error=ErrorBody(code="CANCELLED", message="request was cancelled"),
    )
    await core.delivery.to_request(request, failed)
    await core.delivery.to_request(request, complete(core, request))
    assert lookups(core) == 3


async def test_a_subscribe_routed_here_reaches_the_next_progress(core: Core) -> None:
    """The sender's copy predates the mark: this process counts the request followed."""
    request = await running_request(core, followed=False)
    await core.delivery.to_request(request, progress(core, request, 10))
    watcher = await core.connect("c2")
    reply = await core.send(watcher, "subscribe", {"request_id": "r1"})
    assert reply["data"]["subscribed"] is True
    await core.delivery.to_request(request, progress(core, request, 20))
    assert [m["percentage"] for m in core.received("c2")] == [20.0]


async def test_a_lookup_that_overlaps_a_subscribe_is_not_reused(core: Core) -> None:
    """A list read before a subscription landed is not cached after it."""
    request = await running_request(core)
    async with held_lookup(core, request):
        await core.send(await core.connect("c2"), "subscribe", {"request_id": "r1"})
    await core.delivery.to_request(request, progress(core, request, 20))
    assert [m["percentage"] for m in core.received("c2")] == [20.0]


async def test_a_failed_lookup_falls_back_to_the_last_known_followers(core: Core) -> None:
    request = await running_request(core)
    await core.follow_elsewhere(request.key, "c2")
    await core.delivery.to_request(request, progress(core, request, 10))
    core.clock.advance(1)
    core.subscriptions.inject_failure("list_for_request", StoreUnavailable())
    await core.delivery.to_request(request, progress(core, request, 20))
    assert [m["percentage"] for m in core.received("c2")] == [10.0, 20.0]


async def test_the_cache_keeps_the_newest_requests_only(
    core: Core, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(streamer.delivery, "CACHED_REQUESTS", 2)
    requests = [await running_request(core, f"r{i}") for i in range(3)]
    for request in requests:
        await core.delivery.to_request(request, progress(core, request, 10))
    assert lookups(core) == 3
    for request in requests[1:]:
        await core.delivery.to_request(request, progress(core, request, 20))
    assert lookups(core) == 3
    await core.delivery.to_request(requests[0], progress(core, requests[0], 20))
    assert lookups(core) == 4


async def test_an_unfollowed_request_goes_to_its_origin_without_a_lookup(core: Core) -> None:
    request = await running_request(core, followed=False)
    await core.delivery.to_request(request, progress(core, request, 10))
    await core.delivery.to_request(request, complete(core, request))
    assert lookups(core) == 0
    assert types(core, "c1") == ["progress", "complete"]


async def test_an_outcome_written_after_a_mark_elsewhere_reaches_the_follower(core: Core) -> None:
    """The sender's copy predates the subscribe; the outcome's own write shows the mark."""
    request = await running_request(core, followed=False)
    await core.delivery.to_request(request, progress(core, request, 10))
    await core.follow_elsewhere(request.key, "c2")
    written = await core.requests.apply(
        request.key,
        transitions.complete(
            attempt=request.attempt, result=None, now=core.clock.now(), expires_at=0
        ),
    )
    assert written is not None
    assert written.followed
    await core.delivery.to_request(written, complete(core, written))
    assert types(core, "c2") == ["complete"]


async def test_a_subscribe_marks_the_request_after_adding_the_subscription(core: Core) -> None:
    await running_request(core, followed=False)
    marks: list[int] = []
    original = core.requests.apply

    async def spy(key: RequestKey, transition: transitions.Transition) -> AsyncRequest | None:
        if transition.name == "follow":
            marks.append(len(await core.subscriptions.list_for_request(key)))
        return await original(key, transition)

    core.requests.apply = spy  # type: ignore[method-assign]
    reply = await core.send(await core.connect("c2"), "subscribe", {"request_id": "r1"})
    assert reply["data"]["subscribed"] is True
    assert marks == [1]
    stored = await core.stored("r1")
    assert stored.followed
