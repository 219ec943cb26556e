"""Server push on the fakes: targets, topic, bounded fan-out, gone cleanup, pages."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from core_harness import Core, make_core, wire

from streamer import Progress, Request, Streamer
from streamer.errors import ConnectionGone, ErrorCode, StoreUnavailable, StreamerError
from streamer.models import ConnectionId, RequestId, Subscription, TenantId, UserId, request_key
from streamer.protocol import Notification, ServerMessage, decode_server_message, encode
from streamer.push import Pusher, PushIncomplete, PushSummary
from streamer.testing import DEFAULT_START, RecordingNotifier


def push_app() -> Streamer:
    app = Streamer()

    @app.action("announce")
    async def announce(req: Request[Any]) -> dict[str, Any]:
        summary = await req.push.to_tenant(req.tenant_id, req.payload, topic="news")
        return summary.as_dict()

    @app.action("share", mode="async")
    async def share(req: Request[Any], progress: Progress) -> dict[str, Any]:
        summary = await req.push.to_user(req.tenant_id, req.payload["with"], {"shared": True})
        return summary.as_dict()

    return app


@pytest.fixture
def core() -> Core:
    return make_core(push_app())


async def population(core: Core) -> None:
    """Tenant t1: u1 on a1, a2; u2 on b1. Tenant t2: u1 (same user id) on z1."""
    await core.connect("a1", user="u1", tenant="t1")
    await core.connect("a2", user="u1", tenant="t1")
    await core.connect("b1", user="u2", tenant="t1")
    await core.connect("z1", user="u1", tenant="t2")


def notified(core: Core) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for cid, message in core.notifier.sent:
        if message.type == "notification":
            found.setdefault(cid, []).append(wire(message))
    return found


async def test_tenant_push_reaches_every_connection_of_that_tenant_only(core: Core) -> None:
    """Tenant t1's three sockets get it, once each; t2's does not."""
    await population(core)
    summary = await core.pusher.to_tenant("t1", {"hello": 1}, topic="news")
    assert summary == PushSummary(sent=3)
    got = notified(core)
    assert sorted(got) == ["a1", "a2", "b1"]
    for messages in got.values():
        assert len(messages) == 1
        (body,) = messages
        assert body["type"] == "notification"
        assert body["topic"] == "news"
        assert body["data"] == {"hello": 1}
        assert body["timestamp"].endswith("Z")


async def test_user_push_is_scoped_to_the_tenant(core: Core) -> None:
    """u1 in t1 means a1 and a2, never u1's connection in t2."""
    await population(core)
    summary = await core.pusher.to_user("t1", "u1", [1, 2])
    assert summary == PushSummary(sent=2)
    assert sorted(notified(core)) == ["a1", "a2"]


async def test_connection_push_reaches_that_connection(core: Core) -> None:
    await population(core)
    summary = await core.pusher.to_connection("b1", "ping")
    assert summary == PushSummary(sent=1)
    assert list(notified(core)) == ["b1"]
    assert notified(core)["b1"][0]["data"] == "ping"


async def test_without_topic_the_topic_is_null(core: Core) -> None:
    await core.connect("a1")
    await core.pusher.to_connection("a1", {"x": 1})
    (body,) = notified(core)["a1"]
    assert body["topic"] is None


async def test_notification_round_trips_through_the_client_decoder(core: Core) -> None:
    await core.connect("a1")
    await core.pusher.to_connection("a1", {"x": [1, "two"]}, topic="t")
    (_, message) = core.notifier.sent[0]
    decoded = decode_server_message(encode(message))
    assert isinstance(decoded, Notification)
    assert (decoded.topic, decoded.data) == ("t", {"x": [1, "two"]})


async def test_nobody_to_push_to_is_an_empty_summary(core: Core) -> None:
    summary = await core.pusher.to_tenant("nobody", {"x": 1})
    assert summary == PushSummary()
    assert not summary.is_delivered


async def test_gone_connection_is_cleaned_up_and_counted_not_raised(core: Core) -> None:
    """A gone socket's record and subscriptions are deleted; the rest still get it."""
    await population(core)
    key = request_key("t1", "u1", "r1")
    await core.subscriptions.add(
        Subscription(
            key=key, connection_id=ConnectionId("a2"), created_at=core.clock.now(), expires_at=0
        )
    )
    core.notifier.mark_gone(ConnectionId("a2"))
    summary = await core.pusher.to_tenant("t1", {"x": 1})
    assert summary == PushSummary(sent=2, gone=1)
    assert "a2" not in core.connections.records
    assert core.subscriptions.subscriptions == []
    assert sorted(notified(core)) == ["a1", "b1"]


async def test_gone_single_connection_is_a_summary_not_an_error(core: Core) -> None:
    await core.connect("a1")
    core.notifier.mark_gone(ConnectionId("a1"))
    assert await core.pusher.to_connection("a1", 1) == PushSummary(gone=1)
    assert core.connections.records == {}


async def test_other_failures_are_counted_as_failed(core: Core) -> None:
    await population(core)
    core.notifier.fail_sends(
        StreamerError(ErrorCode.INTERNAL_ERROR, "throttled"), connection_id=ConnectionId("b1")
    )
    summary = await core.pusher.to_tenant("t1", {"x": 1})
    assert summary == PushSummary(sent=2, failed=1)
    assert "b1" in core.connections.records


class HeldNotifier(RecordingNotifier):
    """Holds every send until `release` is set; tracks how many are in flight."""

    def __init__(self, wait_for_in_flight: int) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.in_flight = 0
        self.most_in_flight = 0
        self.reached = asyncio.Event()
        self._wait_for = wait_for_in_flight

    async def send(self, connection_id: ConnectionId, message: ServerMessage) -> None:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        if self.in_flight >= self._wait_for:
            self.reached.set()
        try:
            await self.release.wait()
            await super().send(connection_id, message)
        finally:
            self.in_flight -= 1


async def test_fan_out_keeps_at_most_the_concurrency_in_flight() -> None:
    """200 targets, concurrency 50: exactly 50 wait at once, then all 200 are sent."""
    core = make_core(push_app())
    core.notifier = HeldNotifier(wait_for_in_flight=50)
    core.__post_init__()
    for i in range(200):
        await core.connect(f"c{i:03d}", user=f"u{i % 7}", tenant="big")
    push = asyncio.create_task(core.pusher.to_tenant("big", {"n": 1}))
    await asyncio.wait_for(core.notifier.reached.wait(), timeout=5)
    for _ in range(50):  # let every runnable task run: none may start a 51st send
        await asyncio.sleep(0)
    assert core.notifier.in_flight == 50
    core.notifier.release.set()
    summary = await asyncio.wait_for(push, timeout=5)
    assert summary == PushSummary(sent=200)
    assert core.notifier.most_in_flight == 50
    assert sorted(cid for cid, _ in core.notifier.sent) == [f"c{i:03d}" for i in range(200)]


async def test_concurrency_is_configurable() -> None:
    core = make_core(push_app())
    notifier = HeldNotifier(wait_for_in_flight=3)
    core.notifier = notifier
    core.__post_init__()
    for i in range(10):
        await core.connect(f"c{i}", tenant="t")
    pusher = Pusher(
        connections=core.connections, delivery=core.delivery, clock=core.clock, concurrency=3
    )
    push = asyncio.create_task(pusher.to_tenant("t", 1))
    await asyncio.wait_for(notifier.reached.wait(), timeout=5)
    for _ in range(20):
        await asyncio.sleep(0)
    assert notifier.in_flight == 3
    notifier.release.set()
    assert await asyncio.wait_for(push, timeout=5) == PushSummary(sent=10)
    assert notifier.most_in_flight == 3


async def test_the_index_is_read_page_by_page(core: Core) -> None:
    """1,050 connections at pages of 100: eleven pages, every one sent to once."""
    for i in range(1050):
        await core.connect(f"c{i:04d}", user=f"u{i % 13}", tenant="big")
    pusher = Pusher(
        connections=core.connections, delivery=core.delivery, clock=core.clock, page_size=100
    )
    summary = await pusher.to_tenant("big", {"n": 1})
    assert summary == PushSummary(sent=1050)
    assert core.connections.pages_served == 11
    attempts = core.notifier.attempts
    assert len(attempts) == len(set(attempts)) == 1050


async def test_the_next_page_is_read_only_when_sends_make_room() -> None:
    """With every send held, the pusher has not read past the page it is sending."""
    core = make_core(push_app())
    core.notifier = HeldNotifier(wait_for_in_flight=5)
    core.__post_init__()
    for i in range(100):
        await core.connect(f"c{i:03d}", tenant="t")
    pusher = Pusher(
        connections=core.connections,
        delivery=core.delivery,
        clock=core.clock,
        concurrency=5,
        page_size=10,
    )
    push = asyncio.create_task(pusher.to_tenant("t", 1))
    await asyncio.wait_for(core.notifier.reached.wait(), timeout=5)
    for _ in range(20):
        await asyncio.sleep(0)
    assert core.connections.pages_served == 1
    core.notifier.release.set()
    assert await asyncio.wait_for(push, timeout=5) == PushSummary(sent=100)
    assert core.connections.pages_served == 10


async def test_an_index_failure_part_way_reports_what_was_sent(core: Core) -> None:
    for i in range(30):
        await core.connect(f"c{i:02d}", tenant="t")
    pusher = Pusher(
        connections=core.connections, delivery=core.delivery, clock=core.clock, page_size=10
    )
    pages = core.connections.pages_by_tenant

    def failing_after_one_page(tenant_id: Any, *, page_size: int = 10) -> Any:
        async def walk() -> Any:
            async for page in pages(tenant_id, page_size=page_size):
                yield page
                raise StoreUnavailable("the index is down")

        return walk()

    core.connections.pages_by_tenant = failing_after_one_page  # type: ignore[method-assign]
    with pytest.raises(PushIncomplete) as caught:
        await pusher.to_tenant("t", 1)
    assert caught.value.summary == PushSummary(sent=10)
    assert caught.value.code is ErrorCode.INTERNAL_ERROR


@pytest.mark.parametrize("topic", ["", "x" * 129, "line\nbreak"])
async def test_a_bad_topic_is_refused_before_anything_is_sent(core: Core, topic: str) -> None:
    await core.connect("a1")
    with pytest.raises(StreamerError) as caught:
        await core.pusher.to_connection("a1", 1, topic=topic)
    assert caught.value.code is ErrorCode.VALIDATION_ERROR
    assert core.notifier.attempts == []


@pytest.mark.parametrize("data", [float("nan"), {"x": object()}, {"n": float("inf")}])
async def test_data_that_is_not_json_is_refused(core: Core, data: Any) -> None:
    await core.connect("a1")
    with pytest.raises(StreamerError) as caught:
        await core.pusher.to_connection("a1", data)
    assert caught.value.code is ErrorCode.VALIDATION_ERROR
    assert core.notifier.attempts == []


async def test_a_notification_over_128_kb_is_refused(core: Core) -> None:
    await core.connect("a1")
    with pytest.raises(StreamerError) as caught:
        await core.pusher.to_connection("a1", "x" * (128 * 1024))
    assert caught.value.code is ErrorCode.PAYLOAD_TOO_LARGE
    assert core.notifier.attempts == []


async def test_a_sync_action_pushes_through_req_push(core: Core) -> None:
    await population(core)
    origin = await core.connections.get(ConnectionId("b1"))
    assert origin is not None
    reply = await core.send(origin, "announce", {"v": 2})
    assert reply["type"] == "response"
    assert reply["data"] == {"sent": 3, "gone": 0, "failed": 0}
    assert sorted(notified(core)) == ["a1", "a2", "b1"]
    assert notified(core)["a1"][0]["data"] == {"v": 2}


async def test_an_async_action_pushes_through_req_push(core: Core) -> None:
    await population(core)
    origin = await core.connections.get(ConnectionId("b1"))
    assert origin is not None
    await core.send(origin, "share", {"with": "u1"}, id="r1")
    await core.processor.run(request_key("t1", "u2", "r1"))
    assert sorted(notified(core)) == ["a1", "a2"]
    complete = [wire(m) for m in core.notifier.messages(ConnectionId("b1")) if m.type == "complete"]
    assert complete[0]["result"] == {"sent": 2, "gone": 0, "failed": 0}


async def test_a_hand_built_request_says_push_is_not_wired() -> None:
    req: Request[Any] = Request(
        request_id=RequestId("r"),
        action="a",
        payload={},
        connection_id=ConnectionId("c"),
        user_id=UserId("u"),
        tenant_id=TenantId("t"),
        received_at=DEFAULT_START,
    )
    with pytest.raises(StreamerError, match="no pusher"):
        await req.push.to_tenant("t", 1)


async def test_gone_connection_is_not_asked_again_in_the_same_process(core: Core) -> None:
    await core.connect("a1", tenant="t")
    core.notifier.mark_gone(ConnectionId("a1"))
    await core.pusher.to_connection("a1", 1)
    await core.pusher.to_connection("a1", 2)
    assert core.notifier.attempts == ["a1"]


async def test_connection_gone_raised_by_the_notifier_is_never_propagated(core: Core) -> None:
    await core.connect("a1")
    core.notifier.fail_sends(ConnectionGone("a1"))
    assert await core.pusher.to_tenant("t1", 1) == PushSummary(gone=1)
