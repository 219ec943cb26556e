"""The emulator's WebSocket side over real sockets: handshake refusals, routing,
limits and the connection lifecycle (DESIGN §4, §10)."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from urllib.parse import quote

import aiohttp
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from streamer.models import Connection, ConnectionId, TenantId, UserId

if TYPE_CHECKING:
    from conftest import EmulatorFactory, Steering

from emulator.testing import MESSAGE_TIMEOUT_S, EmulatorHarness, recv_json, request, send_json


async def _refusal_status(url: str) -> int:
    with pytest.raises(InvalidStatus) as refused:
        async with connect(url, open_timeout=10):
            pass
    return refused.value.response.status_code


async def _stored_for(harness: EmulatorHarness, user: str, tenant: str) -> int:
    stores = harness.emulator.stores
    assert stores is not None
    by_user = await stores.connections.list_by_user(UserId(user))
    by_tenant = await stores.connections.list_by_tenant(TenantId(tenant))
    return len(by_user) + len(by_tenant)


async def test_handshake_without_a_token_is_refused_with_401(emulator: EmulatorHarness) -> None:
    assert await _refusal_status(emulator.ws_url) == 401


async def test_handshake_with_a_bad_token_is_refused_with_401_and_stores_nothing(
    emulator: EmulatorHarness,
) -> None:
    forged = emulator.mint_token("mallory", "tenant-1")[:-4] + "AAAA"
    assert await _refusal_status(f"{emulator.ws_url}?Authorization={forged}") == 401
    expired = emulator.mint_token("mallory", "tenant-1", exp=1)
    assert await _refusal_status(f"{emulator.ws_url}?Authorization={expired}") == 401
    assert await _stored_for(emulator, "mallory", "tenant-1") == 0


@pytest.mark.emulator(settings={"allowed_tenants": frozenset({"tenant-1"})})
async def test_handshake_for_a_disallowed_tenant_is_refused_with_403(
    emulator: EmulatorHarness,
) -> None:
    token = emulator.mint_token("eve", "tenant-2")
    assert await _refusal_status(f"{emulator.ws_url}?Authorization={token}") == 403
    assert await _stored_for(emulator, "eve", "tenant-2") == 0


@pytest.mark.emulator(settings={"max_connections_per_user": 2})
async def test_handshake_past_the_per_user_limit_is_refused_with_429(
    emulator: EmulatorHarness,
) -> None:
    async with emulator.connect("busy"), emulator.connect("busy"):
        token = emulator.mint_token("busy")
        assert await _refusal_status(f"{emulator.ws_url}?Authorization={token}") == 429
        assert await _stored_for(emulator, "busy", "tenant-1") == 4  # the two open, twice


@pytest.mark.emulator(settings={"max_connections_per_user": 1})
async def test_a_closed_socket_frees_its_users_slot(emulator: EmulatorHarness) -> None:
    gateway = emulator.emulator.gateway
    assert gateway is not None
    token = emulator.mint_token("solo")
    async with emulator.connect("solo") as ws:
        connection_id = (await request(ws, {"action": "ping"}))["data"]["connection_id"]
        assert await _refusal_status(f"{emulator.ws_url}?Authorization={token}") == 429
    await asyncio.wait_for(gateway.wait_disconnected(connection_id), 10)
    async with emulator.connect("solo") as ws:
        assert (await request(ws, {"action": "ping"}))["type"] == "response"


@pytest.mark.emulator(settings={"max_connections_per_user": 2})
async def test_concurrent_handshakes_of_one_user_never_pass_the_limit(
    emulator: EmulatorHarness,
) -> None:
    url = f"{emulator.ws_url}?Authorization={emulator.mint_token('burst')}"

    async def attempt() -> ClientConnection | int:
        try:
            return await connect(url, open_timeout=10)
        except InvalidStatus as refused:
            return refused.response.status_code

    outcomes = await asyncio.gather(*(attempt() for _ in range(6)))
    opened = [o for o in outcomes if isinstance(o, ClientConnection)]
    try:
        assert len(opened) == 2
        assert sorted(o for o in outcomes if isinstance(o, int)) == [429] * 4
    finally:
        for ws in opened:
            await ws.close()


@pytest.mark.emulator(settings={"max_connections_per_user": 1})
async def test_records_another_process_wrote_do_not_count_toward_the_limit(
    emulator: EmulatorHarness,
) -> None:
    """The emulator counts the sockets it holds, not the table's `UserIndex`."""
    stores = emulator.emulator.stores
    assert stores is not None
    now = datetime.now(UTC)
    elsewhere = Connection(
        connection_id=ConnectionId("elsewhere="),
        user_id=UserId("shared"),
        tenant_id=TenantId("tenant-1"),
        endpoint="https://elsewhere.example/prod",
        connected_at=now,
        last_ping=now,
        expires_at=int(now.timestamp()) + 3600,
    )
    await stores.connections.put(elsewhere)
    async with emulator.connect("shared") as ws:
        assert (await request(ws, {"action": "ping"}))["type"] == "response"


async def test_a_bearer_header_and_a_stage_path_are_accepted(emulator: EmulatorHarness) -> None:
    headers = {"Authorization": f"Bearer {emulator.mint_token()}"}
    async with connect(f"{emulator.ws_url}/prod", additional_headers=headers) as ws:
        reply = await request(ws, {"action": "ping"})
    assert reply["type"] == "response"
    assert reply["data"]["pong"] is True
    stored = await emulator.emulator.stores.connections.get(reply["data"]["connection_id"])  # type: ignore[union-attr]
    assert stored is None or stored.endpoint.endswith("/prod")


async def test_a_sync_action_is_answered_on_the_same_socket(emulator: EmulatorHarness) -> None:
    async with emulator.connect() as ws:
        reply = await request(ws, {"id": "e1", "action": "echo", "payload": {"hello": "world"}})
    assert reply["type"] == "response"
    assert reply["request_id"] == "e1"
    assert reply["success"] is True
    assert reply["data"] == {"echo": {"hello": "world"}}
    assert reply["timestamp"].endswith("Z")


async def test_permessage_deflate_is_never_negotiated(emulator: EmulatorHarness) -> None:
    """API Gateway does not compress frames; the client offers it (websockets does by
    default) and the emulator declines."""
    async with emulator.connect() as ws:
        assert ws.request is not None
        assert ws.response is not None
        assert "permessage-deflate" in ws.request.headers.get("Sec-WebSocket-Extensions", "")
        assert "Sec-WebSocket-Extensions" not in ws.response.headers
        assert (await request(ws, {"action": "ping"}))["type"] == "response"


async def test_a_waiting_sync_action_does_not_hold_up_the_next_frame(
    emulator: EmulatorHarness, steering: Steering
) -> None:
    async with emulator.connect() as ws:
        await send_json(ws, {"id": "slow", "action": "sync_gate", "payload": {"gate": "g"}})
        await asyncio.wait_for(steering.started_event("slow").wait(), MESSAGE_TIMEOUT_S)
        await send_json(ws, {"id": "quick", "action": "echo", "payload": {"n": 1}})
        assert (await recv_json(ws))["request_id"] == "quick"
        steering.gate("g").set()
        slow = await recv_json(ws)
        assert (slow["request_id"], slow["data"]) == ("slow", {"gate": "g"})
        assert (await request(ws, {"id": "after", "action": "echo"}))["request_id"] == "after"


async def test_a_sync_actions_own_timeout_cancels_only_its_frame(
    emulator: EmulatorHarness,
) -> None:
    """The action's `asyncio.timeout` is bound to the task the frame runs in: it
    fires there, and the socket goes on reading."""
    async with emulator.connect() as ws:
        for attempt in range(2):
            reply = await request(ws, {"id": f"t{attempt}", "action": "own_timeout"})
            assert reply["data"] == {"timed_out": True}
        assert (await request(ws, {"id": "after", "action": "echo"}))["request_id"] == "after"


async def test_a_context_variable_a_frame_sets_is_not_seen_by_the_next(
    emulator: EmulatorHarness,
) -> None:
    async with emulator.connect() as ws:
        for request_id in ("m1", "m2", "m3"):
            reply = await request(ws, {"id": request_id, "action": "mark_context"})
            assert reply["data"] == {"seen": "unset"}


async def test_a_binary_frame_closes_the_socket_with_1003(emulator: EmulatorHarness) -> None:
    """API Gateway does not take binary frames (before, the emulator answered
    VALIDATION_ERROR and kept the socket open)."""
    async with emulator.connect() as ws:
        ping = await request(ws, {"action": "ping"})
        await ws.send(b'{"action": "ping"}')
        with pytest.raises(ConnectionClosed):
            await recv_json(ws)
        assert ws.close_code == 1003
    await emulator.emulator.gateway.wait_disconnected(ping["data"]["connection_id"])  # type: ignore[union-attr]


async def test_a_single_frame_over_32_kb_closes_the_socket_with_1009(
    emulator: EmulatorHarness,
) -> None:
    async with emulator.connect() as ws:
        await request(ws, {"action": "ping"})
        await ws.send(json.dumps({"action": "echo", "payload": {"s": "x" * (40 * 1024)}}))
        with pytest.raises(ConnectionClosed):
            await recv_json(ws)
        assert ws.close_code == 1009


async def test_a_fragmented_message_over_32_kb_is_answered(emulator: EmulatorHarness) -> None:
    blob = "x" * (100 * 1024)
    async with emulator.connect() as ws:
        text = json.dumps({"id": "f1", "action": "echo", "payload": {"s": blob}})
        await ws.send([text[i : i + 16 * 1024] for i in range(0, len(text), 16 * 1024)])
        reply = await recv_json(ws)
    assert (reply["type"], reply["request_id"]) == ("response", "f1")
    assert reply["data"] == {"echo": {"s": blob}}


async def test_a_fragment_over_32_kb_closes_the_socket_with_1009(
    emulator: EmulatorHarness,
) -> None:
    async with emulator.connect() as ws:
        text = json.dumps({"action": "echo", "payload": {"s": "x" * (40 * 1024)}})
        await ws.send([text[:100], text[100:]])
        with pytest.raises(ConnectionClosed):
            await recv_json(ws)
        assert ws.close_code == 1009


async def test_a_message_over_128_kb_closes_the_socket_with_1009(
    emulator: EmulatorHarness,
) -> None:
    async with emulator.connect() as ws:
        ping = await request(ws, {"action": "ping"})
        await ws.send(["x" * (32 * 1024)] * 4 + ["x"])
        with pytest.raises(ConnectionClosed):
            await recv_json(ws)
        assert ws.close_code == 1009
    await emulator.emulator.gateway.wait_disconnected(ping["data"]["connection_id"])  # type: ignore[union-attr]


async def test_a_reply_over_128_kb_is_replaced_by_payload_too_large(
    emulator: EmulatorHarness,
) -> None:
    """The frame fits; its echo (the same text plus the envelope) does not."""
    blob = "x" * (128 * 1024 - 100)
    async with emulator.connect() as ws:
        reply = await request(ws, {"id": "big", "action": "echo", "payload": {"s": blob}})
        pong = await request(ws, {"action": "ping"})
    assert reply["type"] == "error"
    assert (reply["request_id"], reply["error"]["code"]) == ("big", "PAYLOAD_TOO_LARGE")
    assert pong["type"] == "response"


@pytest.mark.emulator(settings={"rate_limit_per_minute": 5})
async def test_messages_past_the_rate_limit_answer_rate_limited(
    emulator: EmulatorHarness,
) -> None:
    async with emulator.connect() as ws:
        replies = [await request(ws, {"action": "ping"}) for _ in range(6)]
    kinds = [r["type"] for r in replies]
    assert kinds[:5] == ["response"] * 5
    assert replies[5]["type"] == "error"
    assert replies[5]["error"]["code"] == "RATE_LIMITED"


@pytest.mark.emulator(idle_timeout_s=0.3)
async def test_an_idle_socket_is_closed_with_1001_and_disconnected(
    emulator: EmulatorHarness,
) -> None:
    async with emulator.connect() as ws:
        ping = await request(ws, {"action": "ping"})
        connection_id = ping["data"]["connection_id"]
        async with asyncio.timeout(10):
            await ws.wait_closed()
        assert ws.close_code == 1001
        assert ws.close_reason == "Going away"
    gateway = emulator.emulator.gateway
    assert gateway is not None
    await asyncio.wait_for(gateway.wait_disconnected(connection_id), 10)
    assert await emulator.emulator.stores.connections.get(connection_id) is None  # type: ignore[union-attr]


@pytest.mark.emulator(idle_timeout_s=1.0)
async def test_traffic_either_way_keeps_a_socket_past_its_idle_timeout(
    emulator: EmulatorHarness,
) -> None:
    loop = asyncio.get_running_loop()
    async with emulator.connect() as ws, aiohttp.ClientSession() as http:
        connection_id = (await request(ws, {"action": "ping"}))["data"]["connection_id"]
        url = f"{emulator.http_url}/@connections/{quote(connection_id, safe='')}"
        until = loop.time() + 2.5
        while loop.time() < until:  # server → client only, well inside the timeout
            signed = emulator.signed_headers("POST", url, "tick")
            async with http.post(url, data="tick", headers=signed) as resp:
                assert resp.status == 200
            assert await recv_text(ws) == "tick"
            await asyncio.sleep(0.2)
        until = loop.time() + 2.5
        while loop.time() < until:  # client → server
            await request(ws, {"action": "ping"})
            await asyncio.sleep(0.2)
        pong = await request(ws, {"action": "ping"})
    assert pong["type"] == "response"


async def recv_text(ws: ClientConnection) -> str | bytes:
    async with asyncio.timeout(10):
        return await ws.recv()


@pytest.mark.emulator(max_connection_s=0.5, idle_timeout_s=60)
async def test_a_socket_is_closed_at_its_maximum_lifetime_even_when_busy(
    emulator: EmulatorHarness,
) -> None:
    async def ping_until_closed() -> None:
        async with asyncio.timeout(10):
            while True:
                await request(ws, {"action": "ping"})

    async with emulator.connect() as ws:
        with pytest.raises(ConnectionClosed):
            await ping_until_closed()
        assert ws.close_code == 1001


async def test_client_close_runs_disconnect_exactly_once(emulator: EmulatorHarness) -> None:
    gateway = emulator.emulator.gateway
    assert gateway is not None
    async with emulator.connect() as ws:
        connection_id = (await request(ws, {"action": "ping"}))["data"]["connection_id"]
    await asyncio.wait_for(gateway.wait_disconnected(connection_id), 10)
    assert gateway.disconnects == 1
    assert await emulator.emulator.stores.connections.get(connection_id) is None  # type: ignore[union-attr]


async def test_a_dropped_tcp_connection_runs_disconnect(emulator: EmulatorHarness) -> None:
    gateway = emulator.emulator.gateway
    assert gateway is not None
    async with emulator.connect() as ws:
        connection_id = (await request(ws, {"action": "ping"}))["data"]["connection_id"]
        ws.transport.abort()
    await asyncio.wait_for(gateway.wait_disconnected(connection_id), 10)
    assert await emulator.emulator.stores.connections.get(connection_id) is None  # type: ignore[union-attr]


async def test_health_is_answered_on_the_websocket_port(emulator: EmulatorHarness) -> None:
    http_url = emulator.ws_url.replace("ws://", "http://")
    async with aiohttp.ClientSession() as session, session.get(f"{http_url}/health") as resp:
        assert resp.status == 200
        body = json.loads(await resp.text())
    assert body["status"] == "ok"
    assert body["ws_url"] == emulator.ws_url


async def test_shutdown_closes_sockets_with_1001_and_disconnects_them(
    emulator_factory: EmulatorFactory,
) -> None:
    async with emulator_factory() as harness:
        ws = await connect(f"{harness.ws_url}?Authorization={harness.mint_token()}")
        await request(ws, {"action": "ping"})
    # The block has exited: the emulator is shut down, its $disconnects done.
    async with asyncio.timeout(10):
        await ws.wait_closed()
    assert ws.close_code == 1001
    assert ws.close_reason == "Going away"
    gateway = harness.emulator.gateway
    assert gateway is not None
    assert gateway.disconnects == 1


async def test_frames_after_connect_reach_the_router_with_the_stored_identity(
    emulator: EmulatorHarness,
) -> None:
    async with emulator.connect("alice", "acme") as ws:
        await send_json(ws, {"id": "who", "action": "count", "payload": {"steps": 1}})
        ack = await recv_json(ws)
    assert ack["type"] == "acknowledgment"
    assert ack["request_id"] == "who"


async def test_the_debug_wire_trace_never_shows_tokens_or_payloads(
    emulator: EmulatorHarness, caplog: pytest.LogCaptureFixture
) -> None:
    token = emulator.mint_token()
    caplog.set_level(logging.DEBUG, logger="emulator.websockets")
    headers = {"Authorization": f"Bearer {token}"}
    async with connect(
        f"{emulator.ws_url}?Authorization={token}", additional_headers=headers
    ) as ws:
        await request(ws, {"action": "echo", "payload": {"secret": "s3cr3t-payload"}})
    trace = "\n".join(r.getMessage() for r in caplog.records if r.name == "emulator.websockets")
    assert "TEXT [" in trace, "frames are traced by opcode and size"
    assert token.rsplit(".", 1)[1][:20] not in trace
    assert "s3cr3t-payload" not in trace
