"""Server push over real sockets: exactly the targeted connections get the
notification, whether it is pushed inside the emulator, from a backend process
through the management API, or from a Lambda function."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import pytest
from lambda_events import LambdaContext

from adapters.aws_lambda import pusher as lambda_pusher
from adapters.aws_lambda import runtime
from adapters.push import open_pusher
from emulator.testing import EmulatorHarness
from streamer.client import StreamerClient
from streamer.models import Connection, ConnectionId, TenantId, UserId
from streamer.protocol import Notification
from streamer.push import Pusher, PushSummary
from streamer.settings import Settings

if TYPE_CHECKING:
    from conftest import EmulatorFactory

WAIT_S = 15.0
FENCE = "fence"
T = TypeVar("T")

# Two tenants, several users, several connections each.
POPULATION = [
    ("acme", "alice"),
    ("acme", "alice"),
    ("acme", "bob"),
    ("acme", "bob"),
    ("globex", "alice"),
    ("globex", "carol"),
]


@dataclass
class Listener:
    """One connected client and the notifications it has been pushed."""

    tenant: str
    user: str
    client: StreamerClient
    inbox: AsyncIterator[Notification]

    async def until_fence(self) -> list[Notification]:
        """Every notification up to the fence (excluded)."""
        received: list[Notification] = []
        async with asyncio.timeout(WAIT_S):
            async for note in self.inbox:
                if note.topic == FENCE:
                    return received
                received.append(note)
        raise AssertionError("the client closed before the fence")


@pytest.fixture
async def listeners(emulator: EmulatorHarness) -> AsyncIterator[list[Listener]]:
    async with AsyncExitStack() as stack:
        found: list[Listener] = []
        for tenant, user in POPULATION:
            client = StreamerClient(emulator.ws_url, token=emulator.mint_token(user, tenant))
            await stack.enter_async_context(client)
            await client.ping(timeout=WAIT_S)  # the connection record is stored
            found.append(Listener(tenant, user, client, client.notifications()))
        yield found


async def fence(pusher: Pusher) -> None:
    """Push a fence to everyone: what each socket got before it is all it got."""
    for tenant in {tenant for tenant, _ in POPULATION}:
        await pusher.to_tenant(tenant, None, topic=FENCE)


async def received(listeners: list[Listener]) -> list[list[Notification]]:
    return list(await asyncio.gather(*(listener.until_fence() for listener in listeners)))


def emulator_pusher(harness: EmulatorHarness) -> Pusher:
    services = harness.emulator.services
    assert services is not None
    return services.push


async def test_tenant_push_reaches_exactly_that_tenants_sockets(
    emulator: EmulatorHarness, listeners: list[Listener]
) -> None:
    pusher = emulator_pusher(emulator)
    summary = await pusher.to_tenant("acme", {"hello": 1}, topic="news")
    await fence(pusher)
    assert summary == PushSummary(sent=4)
    for listener, notes in zip(listeners, await received(listeners), strict=True):
        if listener.tenant == "acme":
            assert [(n.topic, n.data) for n in notes] == [("news", {"hello": 1})]
        else:
            assert notes == []


async def test_user_push_reaches_exactly_that_users_sockets_in_that_tenant(
    emulator: EmulatorHarness, listeners: list[Listener]
) -> None:
    """alice in acme: her two sockets there, not her socket in globex."""
    pusher = emulator_pusher(emulator)
    summary = await pusher.to_user("acme", "alice", {"shared": "report-7"}, topic="shares")
    await fence(pusher)
    assert summary == PushSummary(sent=2)
    for listener, notes in zip(listeners, await received(listeners), strict=True):
        expected = [("shares", {"shared": "report-7"})]
        targeted = (listener.tenant, listener.user) == ("acme", "alice")
        assert [(n.topic, n.data) for n in notes] == (expected if targeted else [])


async def test_connection_push_reaches_that_socket_only(
    emulator: EmulatorHarness, listeners: list[Listener]
) -> None:
    pusher = emulator_pusher(emulator)
    target = listeners[3]
    connection_id = target.client.connection_id
    assert connection_id is not None
    summary = await pusher.to_connection(connection_id, [1, 2, 3])
    await fence(pusher)
    assert summary == PushSummary(sent=1)
    for listener, notes in zip(listeners, await received(listeners), strict=True):
        assert [n.data for n in notes] == ([[1, 2, 3]] if listener is target else [])


async def test_when_every_connection_is_here_a_push_reads_no_index(
    emulator: EmulatorHarness, listeners: list[Listener], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The counter says the six sockets are every connection: the targets come from
    the sockets, so a push works with the indexes unreadable."""
    stores = emulator.emulator.stores
    assert stores is not None
    assert (await stores.connections.count()).count == len(POPULATION)

    def unreadable(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the index was read")

    monkeypatch.setattr(stores.connections, "pages_by_tenant", unreadable)
    monkeypatch.setattr(stores.connections, "pages_by_user", unreadable)
    pusher = emulator_pusher(emulator)
    by_tenant = await pusher.to_tenant("acme", {"hello": 1}, topic="news")
    by_user = await pusher.to_user("globex", "alice", {"hi": 2}, topic="dm")
    await fence(pusher)
    assert (by_tenant, by_user) == (PushSummary(sent=4), PushSummary(sent=1))
    for listener, notes in zip(listeners, await received(listeners), strict=True):
        expected = {"acme": [("news", {"hello": 1})], "globex": []}[listener.tenant]
        if (listener.tenant, listener.user) == ("globex", "alice"):
            expected = [("dm", {"hi": 2})]
        assert [(n.topic, n.data) for n in notes] == expected


async def test_a_push_reaches_the_sockets_another_emulator_holds(
    emulator_factory: EmulatorFactory,
) -> None:
    """Two emulators on one table: the counter (2) is more than either holds (1), so
    the push reads the index and reaches the other one's socket through its
    management API."""
    async with emulator_factory() as first, emulator_factory() as second:
        here = StreamerClient(first.ws_url, token=first.mint_token("erin", "hooli"))
        there = StreamerClient(second.ws_url, token=second.mint_token("frank", "hooli"))
        async with here, there:
            await here.ping(timeout=WAIT_S)
            await there.ping(timeout=WAIT_S)
            inboxes = [here.notifications(), there.notifications()]
            summary = await emulator_pusher(first).to_tenant("hooli", {"all": True})
            notes = [await asyncio.wait_for(anext(inbox), WAIT_S) for inbox in inboxes]
    assert summary == PushSummary(sent=2)
    assert [n.data for n in notes] == [{"all": True}, {"all": True}]


async def test_a_record_without_a_socket_is_counted_gone_and_deleted(
    emulator: EmulatorHarness,
) -> None:
    """A record left by a process that died: the push cleans it up, the live one gets it."""
    stores = emulator.emulator.stores
    assert stores is not None
    now = datetime.now(UTC)
    stale = Connection(
        connection_id=ConnectionId("c3RhbGUtY29ubmVjdGlvbg=="),
        user_id=UserId("dave"),
        tenant_id=TenantId("initech"),
        endpoint=emulator.http_url,
        connected_at=now,
        last_ping=now,
        expires_at=int(now.timestamp()) + 3600,
    )
    await stores.connections.put(stale)
    client = StreamerClient(emulator.ws_url, token=emulator.mint_token("dave", "initech"))
    async with client:
        await client.ping(timeout=WAIT_S)
        inbox = client.notifications()
        summary = await emulator_pusher(emulator).to_tenant("initech", {"x": 1})
        note = await asyncio.wait_for(anext(inbox), WAIT_S)
    assert summary == PushSummary(sent=1, gone=1)
    assert note.data == {"x": 1}
    assert await stores.connections.get(stale.connection_id) is None


async def test_the_client_callback_sees_every_notification(emulator: EmulatorHarness) -> None:
    seen: list[Notification] = []
    got_two = asyncio.Event()

    def on_notification(note: Notification) -> None:
        seen.append(note)
        if len(seen) == 2:
            got_two.set()

    client = StreamerClient(
        emulator.ws_url, token=emulator.mint_token("erin", "hooli"), on_notification=on_notification
    )
    async with client:
        await client.ping(timeout=WAIT_S)
        pusher = emulator_pusher(emulator)
        await pusher.to_user("hooli", "erin", {"n": 1}, topic="a")
        await pusher.to_user("hooli", "erin", {"n": 2}, topic="b")
        await asyncio.wait_for(got_two.wait(), WAIT_S)
    assert [(n.topic, n.data) for n in seen] == [("a", {"n": 1}), ("b", {"n": 2})]


async def test_the_iterator_can_follow_one_topic_and_ends_when_the_client_closes(
    emulator: EmulatorHarness,
) -> None:
    client = StreamerClient(emulator.ws_url, token=emulator.mint_token("erin", "hooli"))
    async with client:
        await client.ping(timeout=WAIT_S)
        news = client.notifications(topic="news")
        pusher = emulator_pusher(emulator)
        await pusher.to_user("hooli", "erin", 1, topic="sports")
        await pusher.to_user("hooli", "erin", 2, topic="news")
        first = await asyncio.wait_for(anext(news), WAIT_S)
    assert (first.topic, first.data) == ("news", 2)
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(anext(news), WAIT_S)


# -- from outside the emulator, through its management API ------------------------------


async def test_a_backend_process_pushes_through_the_management_api(
    emulator: EmulatorHarness, listeners: list[Listener], dynamodb_settings: Settings
) -> None:
    """`open_pusher` with the Lambda functions' settings, pointed at the emulator."""
    settings = dataclasses.replace(dynamodb_settings, websocket_endpoint=emulator.http_url)
    async with open_pusher(settings) as pusher:
        summary = await pusher.to_user("acme", "bob", {"invoice": 42}, topic="billing")
        await fence(pusher)
    assert summary == PushSummary(sent=2)
    for listener, notes in zip(listeners, await received(listeners), strict=True):
        targeted = (listener.tenant, listener.user) == ("acme", "bob")
        assert [(n.topic, n.data) for n in notes] == (
            [("billing", {"invoice": 42})] if targeted else []
        )


def _context() -> LambdaContext:
    return LambdaContext(function_name="payments-settled")


def payment_settled_handler(event: dict[str, Any], context: Any) -> dict[str, int]:
    """The example of docs/push.md: a Lambda reacting to a payment event."""
    payment = event["detail"]
    summary = lambda_pusher.push(
        context,
        lambda pusher: pusher.to_user(
            payment["tenant_id"],
            payment["user_id"],
            {"payment_id": payment["id"], "status": "settled"},
            topic="payments",
        ),
    )
    return summary.as_dict()


class LambdaThread:
    """Runs synchronous handlers off the test's loop, on one thread, as a container."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lambda")

    async def call(self, function: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, function, *args)


async def test_a_lambda_function_pushes_through_the_management_api(
    emulator: EmulatorHarness,
    listeners: list[Listener],
    dynamodb_settings: Settings,
    moto_endpoint: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in {
        "CONNECTIONS_TABLE": dynamodb_settings.connections_table,
        "REQUESTS_TABLE": dynamodb_settings.requests_table,
        "SUBSCRIPTIONS_TABLE": dynamodb_settings.subscriptions_table,
        "DYNAMODB_ENDPOINT_URL": moto_endpoint,
        "AWS_REGION": "us-east-1",
        "WEBSOCKET_ENDPOINT": emulator.http_url,
    }.items():
        monkeypatch.setenv(name, value)
    thread = LambdaThread()
    await thread.call(runtime.reset_for_tests)
    event = {
        "source": "payments",
        "detail-type": "PaymentSettled",
        "detail": {"id": "pay_1", "tenant_id": "globex", "user_id": "carol"},
    }
    try:
        first = await thread.call(payment_settled_handler, event, _context())
        second = await thread.call(payment_settled_handler, event, _context())  # warm
    finally:
        await thread.call(runtime.reset_for_tests)
    assert first == second == {"sent": 1, "gone": 0, "failed": 0}
    await fence(emulator_pusher(emulator))
    for listener, notes in zip(listeners, await received(listeners), strict=True):
        targeted = (listener.tenant, listener.user) == ("globex", "carol")
        expected = [{"payment_id": "pay_1", "status": "settled"}] * 2
        assert [n.data for n in notes] == (expected if targeted else [])
