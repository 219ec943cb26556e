"""Emulators sharing one table behave like one API Gateway stage, over real sockets:
each connection record carries the management-API URL of the emulator holding its
socket, the processor delivers there (directly or through that emulator's signed
management API), and no live connection's record is deleted by the other node."""

from __future__ import annotations

import asyncio
from typing import Any

from conftest import EmulatorStarter, Runs
from rel_support import Inbox
from websockets.asyncio.client import ClientConnection

from emulator.testing import EmulatorHarness, request
from streamer.models import ConnectionId

REQUESTS = 10


async def _run_requests(ws: ClientConnection, prefix: str) -> list[dict[str, Any]]:
    """Send `REQUESTS` async requests; return each one's final message."""
    inbox = Inbox(ws)
    for n in range(REQUESTS):
        body = {"id": f"{prefix}-{n}", "action": "steps", "payload": {"steps": 2}}
        ack = await inbox.ask(body)
        assert ack["type"] == "acknowledgment", ack
    return [await inbox.final(f"{prefix}-{n}", timeout_s=60) for n in range(REQUESTS)]


async def _record_endpoint(harness: EmulatorHarness, connection_id: str) -> str | None:
    stores = harness.emulator.stores
    assert stores is not None
    record = await stores.connections.get(ConnectionId(connection_id))
    return record.endpoint if record is not None else None


async def test_two_emulators_on_one_table_deliver_every_completion(
    start_emulator: EmulatorStarter, runs: Runs
) -> None:
    """The requests of a client of `front` (which processes nothing) all run on
    `back`, which reaches the client through `front`'s management API."""
    async with (
        start_emulator(process_stream=False) as front,
        start_emulator() as back,
        front.connect("alice") as on_front,
        back.connect("bob") as on_back,
    ):
        front_id = (await request(on_front, {"action": "ping"}))["data"]["connection_id"]
        back_id = (await request(on_back, {"action": "ping"}))["data"]["connection_id"]
        endpoints = (
            await _record_endpoint(back, front_id),
            await _record_endpoint(front, back_id),
        )
        remote, local = await asyncio.gather(
            _run_requests(on_front, "front"), _run_requests(on_back, "back")
        )
        kept = (
            await _record_endpoint(back, front_id),
            await _record_endpoint(front, back_id),
        )
        still = await request(on_front, {"id": "after", "action": "ping"})

    assert endpoints == (front.http_url, back.http_url)
    assert [m["type"] for m in remote] == ["complete"] * REQUESTS
    assert [m["type"] for m in local] == ["complete"] * REQUESTS
    assert sum(runs.count.values()) == 2 * REQUESTS
    assert kept == endpoints, "a live connection's record was deleted by the other node"
    assert still["request_id"] == "after"
