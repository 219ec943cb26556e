"""Async requests end to end through the emulator: router → DynamoDB → stream
poller → processor → the client's socket (DESIGN §3, §5)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from websockets.asyncio.client import ClientConnection

from adapters.awsjson import AwsJsonClient
from adapters.dynamodb import open_stores
from emulator.server import CHECKPOINT_FILE, Emulator, EmulatorConfig
from emulator.testing import (
    EmulatorHarness,
    is_final_for,
    recv_json,
    recv_until,
    request,
    send_json,
)
from streamer import transitions
from streamer.ids import new_connection_id
from streamer.models import (
    AsyncRequest,
    RequestId,
    RequestStatus,
    TenantId,
    UserId,
    request_key,
)
from streamer.settings import Settings

if TYPE_CHECKING:
    from conftest import EmulatorFactory, Steering


async def subscribe_until_final(ws: ClientConnection, request_id: str) -> list[dict[str, Any]]:
    """Subscribe to a request and read until its end is known: the snapshot is
    terminal or its `complete`/`error` arrived (which may come before the
    subscribe's own answer)."""
    subscribe_id = f"subscribe-{request_id}"
    await send_json(
        ws, {"id": subscribe_id, "action": "subscribe", "payload": {"request_id": request_id}}
    )
    answered = ended = False

    def known(message: dict[str, Any]) -> bool:
        nonlocal answered, ended
        if message.get("request_id") == subscribe_id:
            answered = True
            ended = ended or message["data"]["status"] in ("COMPLETED", "FAILED", "CANCELLED")
        ended = ended or is_final_for(request_id)(message)
        return answered and ended

    return await recv_until(ws, known)


async def status_of(ws: ClientConnection, request_id: str) -> dict[str, Any]:
    """The `status` answer for one request, skipping pushes still on their way (a
    `complete` can follow a subscribe whose snapshot was already terminal)."""
    asked = f"status-{request_id}"
    await send_json(ws, {"id": asked, "action": "status", "payload": {"request_id": request_id}})
    answers = await recv_until(ws, lambda m: m.get("request_id") == asked)
    return answers[-1]


async def test_an_async_request_is_acknowledged_then_progresses_then_completes(
    emulator: EmulatorHarness,
) -> None:
    async with emulator.connect() as ws:
        await send_json(ws, {"id": "r1", "action": "count", "payload": {"steps": 5}})
        ack = await recv_json(ws)
        rest = await recv_until(ws, is_final_for("r1"))
        status = await request(ws, {"action": "status", "payload": {"request_id": "r1"}})

    assert ack["type"] == "acknowledgment"
    assert ack["request_id"] == "r1"
    assert ack["status"] == "queued"
    progress = [m for m in rest if m["type"] == "progress"]
    assert progress, "at least the last progress update is always delivered"
    percentages = [m["percentage"] for m in progress]
    assert percentages == sorted(percentages)
    assert all(m["request_id"] == "r1" for m in progress)
    complete = rest[-1]
    assert complete["type"] == "complete"
    assert complete["success"] is True
    assert complete["result"] == {"steps": 5, "user": "user-1"}
    assert status["type"] == "response"
    assert status["data"]["status"] == "COMPLETED"
    assert status["data"]["result"] == {"steps": 5, "user": "user-1"}


@pytest.mark.emulator(poll_interval_s=600.0)
async def test_a_new_request_wakes_the_stream_poller_instead_of_waiting_for_a_poll(
    emulator: EmulatorHarness,
) -> None:
    """The router and the poller share a process: enqueueing wakes the poller."""
    async with emulator.connect() as ws:
        for request_id in ("first", "second"):
            await send_json(ws, {"id": request_id, "action": "count", "payload": {"steps": 1}})
            rest = await recv_until(ws, is_final_for(request_id), timeout_s=15.0)  # << 600 s
            assert rest[-1]["type"] == "complete"


async def test_the_demo_report_runs_through_the_emulator(
    emulator_factory: EmulatorFactory,
) -> None:
    payload = {"start_date": "2026-01-01", "end_date": "2026-01-31", "format": "csv"}
    async with emulator_factory(app="streamer.demo:app") as harness, harness.connect() as ws:
        await send_json(ws, {"id": "rep", "action": "generate_report", "payload": payload})
        ack = await recv_json(ws)
        rest = await recv_until(ws, is_final_for("rep"), timeout_s=30)
    assert ack["type"] == "acknowledgment"
    assert rest[-1]["type"] == "complete"
    assert rest[-1]["result"]["format"] == "csv"
    percentages = [m["percentage"] for m in rest if m["type"] == "progress"]
    assert percentages == sorted(percentages)
    assert percentages[-1] == 100


async def test_an_invalid_payload_answers_validation_error_and_stores_nothing(
    emulator: EmulatorHarness,
) -> None:
    async with emulator.connect() as ws:
        error = await request(ws, {"id": "bad", "action": "count", "payload": {"steps": 0}})
        status = await request(ws, {"action": "status", "payload": {"request_id": "bad"}})
    assert error["type"] == "error"
    assert error["request_id"] == "bad"
    assert error["error"]["code"] == "VALIDATION_ERROR"
    assert error["error"]["details"]
    assert status["error"]["code"] == "NOT_FOUND"
    stores = emulator.emulator.stores
    assert stores is not None
    assert await stores.requests.get(request_key("tenant-1", "user-1", "bad")) is None


async def test_cancel_stops_a_running_request_and_tells_its_follower(
    emulator: EmulatorHarness, steering: Steering
) -> None:
    async with emulator.connect() as ws:
        await send_json(ws, {"id": "long", "action": "until_cancelled"})
        assert (await recv_json(ws))["type"] == "acknowledgment"
        first = await recv_json(ws)
        assert first["type"] == "progress"
        await send_json(ws, {"id": "stop", "action": "cancel", "payload": {"request_id": "long"}})
        seen: list[dict[str, Any]] = []

        def both_arrived(message: dict[str, Any]) -> bool:
            seen.append(message)
            answered = any(m["type"] == "response" and m["request_id"] == "stop" for m in seen)
            told = any(m["type"] == "error" and m["request_id"] == "long" for m in seen)
            return answered and told

        await recv_until(ws, both_arrived)
        status = await request(ws, {"action": "status", "payload": {"request_id": "long"}})
    (error,) = [m for m in seen if m["type"] == "error"]
    assert error["error"]["code"] == "CANCELLED"
    assert status["data"]["status"] == "CANCELLED"
    assert steering.runs["long"] == 1


async def test_a_request_outlives_its_connection_and_a_new_one_subscribes_to_it(
    emulator: EmulatorHarness, steering: Steering
) -> None:
    gateway = emulator.emulator.gateway
    assert gateway is not None
    async with emulator.connect() as first:
        await send_json(first, {"id": "job", "action": "wait_gate", "payload": {"gate": "job"}})
        assert (await recv_json(first))["type"] == "acknowledgment"
        assert (await recv_json(first))["type"] == "progress"
        first_id = (await request(first, {"action": "ping"}))["data"]["connection_id"]
    await asyncio.wait_for(gateway.wait_disconnected(first_id), 10)

    async with emulator.connect() as second:
        snapshot = await request(second, {"action": "subscribe", "payload": {"request_id": "job"}})
        steering.gate("job").set()
        rest = await recv_until(second, is_final_for("job"))
    assert snapshot["type"] == "response"
    assert snapshot["data"]["status"] == "PROCESSING"
    assert rest[-1]["type"] == "complete"
    assert rest[-1]["result"] == {"gate": "job"}


async def test_fifty_concurrent_clients_each_get_every_request_completed_exactly_once(
    emulator: EmulatorHarness, steering: Steering
) -> None:
    per_client = 2

    async def client(number: int) -> dict[str, int]:
        completes: dict[str, int] = {}
        async with emulator.connect(f"user-{number}", "load") as ws:
            ids = [f"c{number}-{i}" for i in range(per_client)]
            for request_id in ids:
                await send_json(ws, {"id": request_id, "action": "count", "payload": {"steps": 2}})
            pending = set(ids)
            async with asyncio.timeout(60):
                while pending:
                    message = await recv_json(ws, timeout_s=60)
                    if message["type"] == "complete":
                        completes[message["request_id"]] = (
                            completes.get(message["request_id"], 0) + 1
                        )
                        pending.discard(message["request_id"])
                    assert message["type"] != "error", message
            # A duplicate already on its way would most likely arrive before the pong.
            await send_json(ws, {"action": "ping"})
            while (message := await recv_json(ws))["type"] != "response":
                if message["type"] == "complete":
                    completes[message["request_id"]] += 1
        return completes

    results = await asyncio.gather(*(client(n) for n in range(50)))

    completes = {rid: n for result in results for rid, n in result.items()}
    assert len(completes) == 50 * per_client
    assert set(completes.values()) == {1}
    assert len(steering.runs) == 50 * per_client
    assert set(steering.runs.values()) == {1}


async def test_a_restart_resumes_from_the_checkpoint_and_processes_what_was_queued_meanwhile(
    emulator_factory: EmulatorFactory, dynamodb_settings: Settings, tmp_path: Path
) -> None:
    async with emulator_factory() as first, first.connect() as ws:
        await send_json(ws, {"id": "before", "action": "count", "payload": {"steps": 1}})
        await recv_until(ws, is_final_for("before"))
    checkpoint = json.loads((tmp_path / "state" / CHECKPOINT_FILE).read_text())
    assert any(stream["shards"] for stream in checkpoint["streams"].values())

    # Queued while no emulator runs: only the stream remembers it.
    now = datetime.now(UTC)
    queued = _queued("meanwhile", now)
    async with open_stores(dynamodb_settings) as stores:
        assert (await stores.requests.enqueue(queued)).created

    async with emulator_factory() as second, second.connect() as ws:
        await subscribe_until_final(ws, "meanwhile")
        status = await status_of(ws, "meanwhile")
        before = await status_of(ws, "before")
    assert status["data"]["status"] == "COMPLETED"
    assert before["data"]["status"] == "COMPLETED"


async def test_shutdown_hands_a_running_request_back_and_the_next_start_finishes_it(
    emulator_factory: EmulatorFactory, dynamodb_settings: Settings, steering: Steering
) -> None:
    async with emulator_factory(drain_timeout_s=0.2) as first, first.connect() as ws:
        await send_json(ws, {"id": "cut", "action": "wait_gate", "payload": {"gate": "cut"}})
        assert (await recv_json(ws))["type"] == "acknowledgment"
        assert (await recv_json(ws))["type"] == "progress"
    async with open_stores(dynamodb_settings) as stores:
        handed_back = await stores.requests.get(request_key("tenant-1", "user-1", "cut"))
    assert handed_back is not None
    assert handed_back.status is RequestStatus.PENDING

    steering.gate("cut").set()
    async with emulator_factory() as second, second.connect() as ws:
        await subscribe_until_final(ws, "cut")
        status = await status_of(ws, "cut")
    assert status["data"]["status"] == "COMPLETED"
    assert steering.runs["cut"] == 2


async def test_shutdown_with_cancel_on_disconnect_hands_running_work_back_instead_of_cancelling(
    emulator_factory: EmulatorFactory, dynamodb_settings: Settings, steering: Steering
) -> None:
    """Shutdown closes the sockets (1001, one `$disconnect` each) but the server is
    the one going away: the running request goes back to PENDING, not CANCELLED."""
    async with contextlib.AsyncExitStack() as sockets:
        # The socket outlives the emulator: the server closes it, not the client.
        async with emulator_factory(
            drain_timeout_s=0.2, settings={"cancel_on_disconnect": True}
        ) as first:
            ws = await sockets.enter_async_context(first.connect())
            await send_json(ws, {"id": "kept", "action": "wait_gate", "payload": {"gate": "kept"}})
            assert (await recv_json(ws))["type"] == "acknowledgment"
            assert (await recv_json(ws))["type"] == "progress"
            gateway = first.emulator.gateway
            assert gateway is not None
        steering.gate("kept").set()
        assert gateway.disconnects == 1
        assert ws.close_code == 1001
    async with open_stores(dynamodb_settings) as stores:
        handed_back = await stores.requests.get(request_key("tenant-1", "user-1", "kept"))
    assert handed_back is not None
    assert handed_back.status is RequestStatus.PENDING


async def test_the_emulator_runs_on_an_embedded_moto_server_with_dev_keys(
    tmp_path: Path,
) -> None:
    suffix = uuid.uuid4().hex[:10]
    settings = dataclasses.replace(
        Settings(),
        connections_table=f"embedded-connections-{suffix}",
        requests_table=f"embedded-requests-{suffix}",
        subscriptions_table=f"embedded-subscriptions-{suffix}",
    )
    config = EmulatorConfig(
        settings=settings,
        app="streamer.demo:app",
        port=0,
        http_port=0,
        state_dir=tmp_path / "state",
        poll_interval_s=0.02,
        drain_timeout_s=1,
    )
    async with Emulator(config) as emulator:
        assert emulator.is_moto_embedded
        # Its calls go through the lean client; table creation stays on aioboto3.
        assert emulator.health()["dynamodb_client"] == "awsjson"
        assert emulator.stores is not None
        assert isinstance(emulator.stores.client, AwsJsonClient)
        assert emulator.dev_keys is not None
        assert (tmp_path / "state" / "dev_private.pem").exists()
        harness = EmulatorHarness(emulator=emulator, private_pem=emulator.dev_keys.private_pem)
        async with harness.connect() as ws:
            echo = await request(ws, {"action": "echo", "payload": {"n": 1}})
            await send_json(ws, {"id": "e", "action": "echo_async", "payload": {"n": 2}})
            ack = await recv_json(ws)
            rest = await recv_until(ws, is_final_for("e"))
    assert echo["data"]["echo"] == {"n": 1}
    assert ack["type"] == "acknowledgment"
    assert rest[-1]["type"] == "complete"
    assert rest[-1]["result"] == {"n": 2}


async def test_the_sweeper_requeues_a_request_whose_processor_died_and_it_completes(
    emulator_factory: EmulatorFactory, dynamodb_settings: Settings
) -> None:
    async with emulator_factory():
        pass  # a first run leaves a checkpoint, so the next one reads what follows

    # A processor claimed it and died: PROCESSING with a lease already past.
    now = datetime.now(UTC)
    orphan = _queued("orphan", now)
    async with open_stores(dynamodb_settings) as stores:
        await stores.requests.enqueue(orphan)
        claimed = await stores.requests.apply(
            orphan.key, transitions.claim(now=now, lease_until=now - timedelta(seconds=1))
        )
    assert claimed is not None

    async with emulator_factory(sweep_interval_s=0.05) as harness, harness.connect() as ws:
        await subscribe_until_final(ws, "orphan")
        status = await status_of(ws, "orphan")
    assert status["data"]["status"] == "COMPLETED"


def _queued(request_id: str, now: datetime) -> AsyncRequest:
    return AsyncRequest(
        key=request_key("tenant-1", "user-1", request_id),
        request_id=RequestId(request_id),
        connection_id=new_connection_id(),
        user_id=UserId("user-1"),
        tenant_id=TenantId("tenant-1"),
        action="count",
        payload={"steps": 1},
        status=RequestStatus.PENDING,
        created_at=now,
        updated_at=now,
        timeout_s=60,
    )
