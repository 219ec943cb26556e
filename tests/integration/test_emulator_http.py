"""The emulator's HTTP side: the `@connections` management API in API Gateway's
shapes and codes, `/health`, and the console's JSON endpoints (DESIGN §8)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest

from adapters.apigateway import ApiGatewayNotifier, open_management_client
from emulator.testing import EmulatorHarness, recv_json, request
from streamer.errors import ConnectionGone
from streamer.protocol import Response


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def _connection_url(harness: EmulatorHarness, connection_id: str, stage: str = "") -> str:
    return f"{harness.http_url}{stage}/@connections/{quote(connection_id, safe='')}"


async def _json(response: aiohttp.ClientResponse) -> Any:
    return json.loads(await response.text())


async def test_post_to_a_connection_delivers_the_raw_body(
    emulator: EmulatorHarness, http: aiohttp.ClientSession
) -> None:
    async with emulator.connect() as ws:
        connection_id = (await request(ws, {"action": "ping"}))["data"]["connection_id"]
        body = json.dumps({"type": "custom", "n": 1})
        async with http.post(
            _connection_url(emulator, connection_id),
            data=body,
            headers=emulator.signed_headers("POST", _connection_url(emulator, connection_id), body),
        ) as resp:
            assert resp.status == 200
        assert await recv_json(ws) == {"type": "custom", "n": 1}
        async with http.post(
            _connection_url(emulator, connection_id, "/prod"),
            data="hi",
            headers=emulator.signed_headers(
                "POST", _connection_url(emulator, connection_id, "/prod"), "hi"
            ),
        ) as resp:
            assert resp.status == 200
        async with asyncio.timeout(10):
            assert await ws.recv() == "hi"


async def test_get_a_connection_answers_api_gateway_shape(
    emulator: EmulatorHarness, http: aiohttp.ClientSession
) -> None:
    async with emulator.connect() as ws:
        connection_id = (await request(ws, {"action": "ping"}))["data"]["connection_id"]
        async with http.get(
            _connection_url(emulator, connection_id),
            headers=emulator.signed_headers("GET", _connection_url(emulator, connection_id)),
        ) as resp:
            assert resp.status == 200
            body = await _json(resp)
    assert set(body) == {"connectedAt", "identity", "lastActiveAt"}
    assert body["identity"]["sourceIp"] == "127.0.0.1"
    assert "Python" in body["identity"]["userAgent"] or body["identity"]["userAgent"]
    assert body["connectedAt"].endswith("Z")
    assert body["lastActiveAt"] >= body["connectedAt"]


async def test_delete_closes_the_socket_and_later_calls_answer_410(
    emulator: EmulatorHarness, http: aiohttp.ClientSession
) -> None:
    gateway = emulator.emulator.gateway
    assert gateway is not None
    async with emulator.connect() as ws:
        connection_id = (await request(ws, {"action": "ping"}))["data"]["connection_id"]
        async with http.delete(
            _connection_url(emulator, connection_id, "/prod"),
            headers=emulator.signed_headers(
                "DELETE", _connection_url(emulator, connection_id, "/prod")
            ),
        ) as resp:
            assert resp.status == 204
        async with asyncio.timeout(10):
            await ws.wait_closed()
    await asyncio.wait_for(gateway.wait_disconnected(connection_id), 10)

    url = _connection_url(emulator, connection_id)
    for method in ("GET", "POST", "DELETE"):
        async with http.request(
            method, url, data="x", headers=emulator.signed_headers(method, url, "x")
        ) as resp:
            assert resp.status == 410, method
            assert resp.headers["x-amzn-ErrorType"] == "GoneException"
            assert "message" in await _json(resp)
    assert gateway.disconnects == 1


async def test_get_and_delete_answer_410_right_after_a_delete(
    emulator: EmulatorHarness, http: aiohttp.ClientSession
) -> None:
    """No window where GET still answers 200 while POST already answers Gone."""
    async with emulator.connect() as ws:
        connection_id = (await request(ws, {"action": "ping"}))["data"]["connection_id"]
        url = _connection_url(emulator, connection_id)
        signed = emulator.signed_headers
        async with http.delete(url, headers=signed("DELETE", url)) as resp:
            assert resp.status == 204
        async with http.get(url, headers=signed("GET", url)) as resp:
            assert resp.status == 410
        async with http.delete(url, headers=signed("DELETE", url)) as resp:
            assert resp.status == 410
        async with http.post(url, data="x", headers=signed("POST", url, "x")) as resp:
            assert resp.status == 410
        async with asyncio.timeout(10):
            await ws.wait_closed()


async def test_an_unknown_connection_answers_410(
    emulator: EmulatorHarness, http: aiohttp.ClientSession
) -> None:
    async with http.post(
        _connection_url(emulator, "AAAAAAAAAAAAAAAA"),
        data="x",
        headers=emulator.signed_headers("POST", _connection_url(emulator, "AAAAAAAAAAAAAAAA"), "x"),
    ) as resp:
        assert resp.status == 410


async def test_a_post_over_128_kb_answers_413_and_sends_nothing(
    emulator: EmulatorHarness, http: aiohttp.ClientSession
) -> None:
    async with emulator.connect() as ws:
        connection_id = (await request(ws, {"action": "ping"}))["data"]["connection_id"]
        big = "x" * (128 * 1024 + 1)
        async with http.post(
            _connection_url(emulator, connection_id),
            data=big,
            headers=emulator.signed_headers("POST", _connection_url(emulator, connection_id), big),
        ) as resp:
            assert resp.status == 413
        pong = await request(ws, {"action": "ping"})
    assert pong["type"] == "response"


async def test_health_reports_connections_the_database_and_the_poller(
    emulator: EmulatorHarness, http: aiohttp.ClientSession
) -> None:
    async with emulator.connect(), http.get(f"{emulator.http_url}/health") as resp:
        assert resp.status == 200
        body = await _json(resp)
    assert body["status"] == "ok"
    assert body["connections"] == 1
    assert body["dynamodb_endpoint"].startswith("http://")
    assert body["poller_lag_ms"] >= 0
    assert body["ws_url"] == emulator.ws_url


async def test_the_console_lists_actions_with_their_payload_schemas(
    emulator: EmulatorHarness, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{emulator.http_url}/api/actions") as resp:
        body = await _json(resp)
    actions = {a["name"]: a for a in body["actions"]}
    assert actions["echo"]["mode"] == "sync"
    assert actions["count"]["mode"] == "async"
    assert actions["count"]["payload_schema"]["properties"]["steps"]["type"] == "integer"
    assert actions["ping"]["builtin"] is True


async def test_the_console_lists_live_connections(
    emulator: EmulatorHarness, http: aiohttp.ClientSession
) -> None:
    async with emulator.connect("alice", "acme") as ws:
        connection_id = (await request(ws, {"action": "ping"}))["data"]["connection_id"]
        async with http.get(f"{emulator.http_url}/api/connections") as resp:
            body = await _json(resp)
    (listed,) = body["connections"]
    assert listed["id"] == connection_id
    assert listed["user"] == "alice"
    assert listed["tenant"] == "acme"
    assert listed["sourceIp"] == "127.0.0.1"


async def test_dev_tokens_are_only_given_when_the_emulator_made_dev_keys(
    emulator: EmulatorHarness, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{emulator.http_url}/api/dev-token") as resp:
        assert resp.status == 404


async def test_the_console_page_is_served_at_the_root(
    emulator: EmulatorHarness, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{emulator.http_url}/") as resp:
        assert resp.status == 200
        assert "html" in resp.headers["Content-Type"]
    async with http.get(f"{emulator.http_url}/../pyproject.toml") as resp:
        assert resp.status == 404


async def test_the_production_notifier_works_against_the_emulator_management_api(
    emulator: EmulatorHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """WEBSOCKET_ENDPOINT=http://HOST:3002/prod points the API Gateway notifier here;
    it signs with the dev credentials it finds in the emulator's state folder."""
    monkeypatch.setenv("EMULATOR_STATE_DIR", str(emulator.emulator.config.state_dir))
    settings = dataclasses.replace(
        emulator.emulator.settings, websocket_endpoint=f"{emulator.http_url}/prod"
    )
    async with emulator.connect() as ws, open_management_client(settings) as client:
        connection_id = (await request(ws, {"action": "ping"}))["data"]["connection_id"]
        notifier = ApiGatewayNotifier(client)
        now = datetime.now(UTC)
        await notifier.send(connection_id, Response(timestamp=now, request_id="n1", data=1))
        pushed = await recv_json(ws)
        info = await notifier.get_connection(connection_id)
        assert await notifier.delete_connection(connection_id)
        async with asyncio.timeout(10):
            await ws.wait_closed()
        gateway = emulator.emulator.gateway
        assert gateway is not None
        await asyncio.wait_for(gateway.wait_disconnected(connection_id), 10)
        with pytest.raises(ConnectionGone):
            await notifier.send(connection_id, Response(timestamp=now, request_id="n2"))
    assert pushed["request_id"] == "n1"
    assert pushed["data"] == 1
    assert info.source_ip == "127.0.0.1"
    assert info.connected_at is not None
