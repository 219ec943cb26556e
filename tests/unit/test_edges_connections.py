"""`ConnectionService`: who may connect, what is stored, and cleaning up after."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any

import pytest
from core_harness import key_pair, make_core

from streamer import transitions
from streamer.app import Streamer
from streamer.connections import Handshake
from streamer.errors import ConnectRefused
from streamer.models import (
    AsyncRequest,
    ConnectionId,
    RequestId,
    RequestStatus,
    Subscription,
    TenantId,
    UserId,
    request_key,
)
from streamer.tokens import mint_token

KeyPair = tuple[str, str]


@pytest.fixture(scope="module")
def keys() -> KeyPair:
    return key_pair()


class World:
    """The connection service of the core harness, with helpers to mint tokens
    (with the harness's key) and shake hands."""

    def __init__(self, keys: KeyPair, **settings: Any) -> None:
        self.private_pem = keys[0]
        core = make_core(Streamer(), **settings)
        self.clock = core.clock
        self.connections = core.connections
        self.requests = core.store
        self.subscriptions = core.subscriptions
        self.notifier = core.notifier
        self.settings = core.settings
        self.service = core.connection_service

    def token(self, sub: str = "user-1", tenant_id: str = "tenant-1", **kwargs: Any) -> str:
        return mint_token(
            self.private_pem, sub=sub, tenant_id=tenant_id, now=self.clock.now(), **kwargs
        )

    def handshake(self, cid: str = "conn-1", token: str | None = None, **kwargs: Any) -> Handshake:
        query = {"Authorization": token} if token is not None else {}
        return Handshake(
            connection_id=ConnectionId(cid),
            endpoint="https://abc.execute-api.us-east-1.amazonaws.com/prod",
            query=query,
            **kwargs,
        )

    async def refused(self, handshake: Handshake) -> ConnectRefused:
        with pytest.raises(ConnectRefused) as caught:
            await self.service.connect(handshake)
        return caught.value


@pytest.fixture
def world(keys: KeyPair) -> World:
    return World(keys)


async def test_valid_token_stores_the_connection_record(world: World) -> None:
    handshake = dataclasses.replace(
        world.handshake(token=world.token(permissions=["reports:read"])),
        source_ip="203.0.113.7",
        user_agent="pytest/1.0",
    )
    connection = await world.service.connect(handshake)
    assert world.connections.records == {ConnectionId("conn-1"): connection}
    assert connection.user_id == "user-1"
    assert connection.tenant_id == "tenant-1"
    assert connection.endpoint == "https://abc.execute-api.us-east-1.amazonaws.com/prod"
    assert connection.connected_at == connection.last_ping == world.clock.now()
    assert connection.metadata.user_agent == "pytest/1.0"
    assert connection.metadata.ip_address == "203.0.113.7"
    assert connection.metadata.permissions == ("reports:read",)


async def test_ttl_is_now_plus_connection_ttl_hours(keys: KeyPair) -> None:
    world = World(keys, connection_ttl_hours=2)
    connection = await world.service.connect(world.handshake(token=world.token()))
    expected = world.clock.now() + timedelta(hours=2)
    assert connection.expires_at == int(expected.timestamp())


async def test_bearer_header_is_accepted(world: World) -> None:
    handshake = world.handshake(headers={"authorization": f"Bearer {world.token()}"})
    assert (await world.service.connect(handshake)).user_id == "user-1"


async def test_user_agent_header_fills_in_when_the_handshake_has_none(world: World) -> None:
    handshake = world.handshake(token=world.token(), headers={"User-Agent": "curl/8"})
    assert (await world.service.connect(handshake)).metadata.user_agent == "curl/8"


async def test_missing_token_is_refused_with_401_and_nothing_stored(world: World) -> None:
    refusal = await world.refused(world.handshake())
    assert (refusal.status_code, refusal.reason) == (401, "missing token")
    assert world.connections.records == {}


async def test_invalid_token_is_refused_with_401_and_nothing_stored(world: World) -> None:
    token = world.token(ttl_s=10)
    world.clock.advance(11)
    refusal = await world.refused(world.handshake(token=token))
    assert (refusal.status_code, refusal.reason) == (401, "token expired")
    assert refusal.message == "Unauthorized"
    assert world.connections.records == {}


async def test_two_authorization_values_are_refused_with_401_and_nothing_stored(
    world: World,
) -> None:
    valid = world.token()
    handshake = Handshake(
        connection_id=ConnectionId("conn-2"),
        endpoint="https://abc.execute-api.us-east-1.amazonaws.com/prod",
        query={"Authorization": ["forged.token.value", valid]},
    )
    refusal = await world.refused(handshake)
    assert (refusal.status_code, refusal.reason) == (401, "two Authorization values")
    assert world.connections.records == {}


async def test_tenant_outside_the_allow_list_is_refused_with_403(keys: KeyPair) -> None:
    world = World(keys, allowed_tenants=frozenset({"acme"}))
    refusal = await world.refused(world.handshake(token=world.token(tenant_id="globex")))
    assert refusal.status_code == 403
    assert world.connections.records == {}


async def test_tenant_in_the_allow_list_connects(keys: KeyPair) -> None:
    world = World(keys, allowed_tenants=frozenset({"acme"}))
    connection = await world.service.connect(world.handshake(token=world.token(tenant_id="acme")))
    assert connection.tenant_id == "acme"


async def test_connection_past_the_per_user_limit_is_refused_with_429(keys: KeyPair) -> None:
    world = World(keys, max_connections_per_user=2)
    for cid in ("c1", "c2"):
        await world.service.connect(world.handshake(cid, token=world.token()))
    refusal = await world.refused(world.handshake("c3", token=world.token()))
    assert refusal.status_code == 429
    assert set(world.connections.records) == {"c1", "c2"}


async def test_per_user_limit_ignores_other_users_and_tenants(keys: KeyPair) -> None:
    world = World(keys, max_connections_per_user=1)
    await world.service.connect(world.handshake("c1", token=world.token(sub="alice")))
    await world.service.connect(world.handshake("c2", token=world.token(sub="bob")))
    await world.service.connect(
        world.handshake("c3", token=world.token(sub="alice", tenant_id="other"))
    )
    assert set(world.connections.records) == {"c1", "c2", "c3"}


async def test_per_user_limit_ignores_expired_records(keys: KeyPair) -> None:
    """DynamoDB deletes TTL'd items late; a dead connection must not lock a user out."""
    world = World(keys, max_connections_per_user=1, connection_ttl_hours=1)
    await world.service.connect(world.handshake("old", token=world.token()))
    world.clock.advance(3601)
    await world.service.connect(world.handshake("new", token=world.token()))
    assert set(world.connections.records) == {"old", "new"}


async def test_disconnect_after_limit_frees_a_slot(keys: KeyPair) -> None:
    world = World(keys, max_connections_per_user=1)
    await world.service.connect(world.handshake("c1", token=world.token()))
    await world.service.disconnect(ConnectionId("c1"), reason="client closed")
    await world.service.connect(world.handshake("c2", token=world.token()))
    assert set(world.connections.records) == {"c2"}


def _request(world: World, request_id: str, cid: str, status: RequestStatus) -> AsyncRequest:
    now = world.clock.now()
    return AsyncRequest(
        key=request_key("tenant-1", "user-1", request_id),
        request_id=RequestId(request_id),
        connection_id=ConnectionId(cid),
        user_id=UserId("user-1"),
        tenant_id=TenantId("tenant-1"),
        action="delay",
        payload={"seconds": 5},
        status=status,
        created_at=now,
        updated_at=now,
    )


async def _subscribe(world: World, request_id: str, cid: str) -> None:
    await world.subscriptions.add(
        Subscription(
            key=request_key("tenant-1", "user-1", request_id),
            connection_id=ConnectionId(cid),
            created_at=world.clock.now(),
            expires_at=int(world.clock.now().timestamp()) + 3600,
        )
    )


async def test_disconnect_deletes_the_record_and_its_subscriptions(world: World) -> None:
    await world.service.connect(world.handshake("c1", token=world.token()))
    await world.service.connect(world.handshake("c2", token=world.token()))
    await _subscribe(world, "r1", "c1")
    await _subscribe(world, "r1", "c2")
    await world.service.disconnect(ConnectionId("c1"), reason="going away")
    assert set(world.connections.records) == {"c2"}
    assert [s.connection_id for s in world.subscriptions.subscriptions] == ["c2"]


async def test_disconnect_leaves_running_requests_alone_by_default(world: World) -> None:
    await world.service.connect(world.handshake("c1", token=world.token()))
    await world.requests.enqueue(_request(world, "r1", "c1", RequestStatus.PENDING))
    await world.service.disconnect(ConnectionId("c1"))
    stored = await world.requests.get(request_key("tenant-1", "user-1", "r1"))
    assert stored is not None
    assert stored.status is RequestStatus.PENDING


async def test_cancel_on_disconnect_cancels_only_unfinished_requests(keys: KeyPair) -> None:
    world = World(keys, cancel_on_disconnect=True)
    await world.service.connect(world.handshake("c1", token=world.token()))
    await world.requests.enqueue(_request(world, "pending", "c1", RequestStatus.PENDING))
    await world.requests.enqueue(_request(world, "other-conn", "c2", RequestStatus.PENDING))
    await world.service.disconnect(ConnectionId("c1"))
    statuses = {r.request_id: r.status for r in world.requests.items.values()}
    assert statuses == {"pending": RequestStatus.CANCELLED, "other-conn": RequestStatus.PENDING}


async def test_cancel_on_disconnect_tells_subscribers_on_other_connections(
    keys: KeyPair,
) -> None:
    world = World(keys, cancel_on_disconnect=True)
    await world.service.connect(world.handshake("c1", token=world.token()))
    await world.service.connect(world.handshake("c2", token=world.token()))
    await world.requests.enqueue(_request(world, "r1", "c1", RequestStatus.PENDING))
    key = request_key("tenant-1", "user-1", "r1")
    await world.subscriptions.add(
        Subscription(
            key=key,
            connection_id=ConnectionId("c2"),
            created_at=world.clock.now(),
            expires_at=0,
        )
    )
    await world.service.disconnect(ConnectionId("c1"))
    (notice,) = world.notifier.messages(ConnectionId("c2"))
    assert notice.type == "error"
    assert notice.request_id == "r1"
    assert notice.error.code == "CANCELLED"


async def test_cancel_on_disconnect_keeps_finished_requests(keys: KeyPair) -> None:
    world = World(keys, cancel_on_disconnect=True)
    await world.requests.enqueue(_request(world, "r1", "c1", RequestStatus.PENDING))
    key = request_key("tenant-1", "user-1", "r1")
    now = world.clock.now()
    claimed = await world.requests.apply(
        key, transitions.claim(now=now, lease_until=now + timedelta(minutes=5))
    )
    assert claimed is not None
    await world.requests.apply(
        key, transitions.complete(attempt=claimed.attempt, result={"ok": 1}, now=now, expires_at=0)
    )
    await world.service.disconnect(ConnectionId("c1"))
    stored = await world.requests.get(key)
    assert stored is not None
    assert stored.status is RequestStatus.COMPLETED


async def test_disconnect_is_idempotent(world: World) -> None:
    await world.service.connect(world.handshake("c1", token=world.token()))
    await world.service.disconnect(ConnectionId("c1"))
    await world.service.disconnect(ConnectionId("c1"))
    await world.service.disconnect(ConnectionId("never-connected"))
    assert world.connections.records == {}


async def test_refusal_logs_the_reason_but_never_the_token(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    token = world.token(ttl_s=1)
    world.clock.advance(5)
    await world.refused(world.handshake(token=token))
    record = next(r for r in caplog.records if r.getMessage() == "connection refused")
    assert record.__dict__["reason"] == "token expired"
    assert token not in caplog.text


async def test_disconnect_without_cancel_running_leaves_requests_even_with_cancel_on_disconnect(
    keys: KeyPair,
) -> None:
    """What a shutting-down server asks for: its work is handed back, not cancelled."""
    world = World(keys, cancel_on_disconnect=True)
    await world.service.connect(world.handshake("c1", token=world.token()))
    await world.requests.enqueue(_request(world, "r1", "c1", RequestStatus.PENDING))
    await world.service.disconnect(ConnectionId("c1"), reason="shutdown", cancel_running=False)
    stored = await world.requests.get(request_key("tenant-1", "user-1", "r1"))
    assert stored is not None
    assert stored.status is RequestStatus.PENDING
    assert world.connections.records == {}
