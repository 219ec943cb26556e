"""A client that vanishes mid-request without a close frame: its socket is cleaned
up ($disconnect, record deleted), its request runs on, and a new connection
resumes with `subscribe` and gets the one completion."""

from __future__ import annotations

import asyncio

import pytest
from conftest import EmulatorStarter, Runs
from rel_support import Inbox
from websockets.asyncio.client import connect

from emulator.testing import EmulatorHarness
from streamer.models import UserId

IDLE_TIMEOUT_S = 0.5


async def _stored_connections(harness: EmulatorHarness, user: str) -> int:
    stores = harness.emulator.stores
    assert stores is not None
    return len(await stores.connections.list_by_user(UserId(user)))


async def _resume_and_finish(harness: EmulatorHarness, runs: Runs, request_id: str) -> None:
    async with harness.connect("alice") as ws:
        inbox = Inbox(ws)
        snapshot = await inbox.ask(
            {
                "id": f"sub-{request_id}",
                "action": "subscribe",
                "payload": {"request_id": request_id},
            }
        )
        assert snapshot["data"]["status"] == "PROCESSING"
        assert snapshot["data"]["subscribed"] is True
        runs.gate(request_id).set()
        final = await inbox.final(request_id)
        # Anything else for this request is late progress, never a second outcome.
        await inbox.ask({"id": "drain", "action": "ping"})
    assert final["type"] == "complete"
    assert final["result"]["gate"] == request_id
    assert len(inbox.of(request_id, "complete", "error")) == 1
    assert runs.count[request_id] == 1


@pytest.mark.parametrize("how", ["silent", "reset"])
async def test_a_client_that_vanishes_mid_request_is_cleaned_up_and_its_work_resumes(
    start_emulator: EmulatorStarter, runs: Runs, how: str
) -> None:
    """`silent`: the client stops reading and answering (a dropped network): the
    idle timeout closes it. `reset`: its TCP connection is aborted, no close frame."""
    async with start_emulator(idle_timeout_s=IDLE_TIMEOUT_S) as harness:
        token = harness.mint_token("alice")
        ws = await connect(f"{harness.ws_url}/?Authorization={token}")
        inbox = Inbox(ws)
        hello = await inbox.ask({"id": "hello", "action": "ping"}, timeout_s=10)
        ack = await inbox.ask(
            {"id": "v1", "action": "gated", "payload": {"gate": "v1"}}, timeout_s=10
        )
        assert ack["type"] == "acknowledgment"
        async with asyncio.timeout(10):
            await runs.started_event("v1").wait()
        assert await _stored_connections(harness, "alice") == 1
        gateway = harness.emulator.gateway
        assert gateway is not None

        if how == "silent":
            ws.transport.pause_reading()  # no reads, no pongs, no close frame
        else:
            ws.transport.abort()
        async with asyncio.timeout(IDLE_TIMEOUT_S + 15):  # + websockets' close timeout
            await gateway.wait_disconnected(hello["data"]["connection_id"])

        assert len(harness.emulator.registry) == 0
        assert await _stored_connections(harness, "alice") == 0
        await _resume_and_finish(harness, runs, "v1")
        ws.transport.abort()
