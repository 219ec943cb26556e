"""Parity: the Lambda router and processor, posting through the management API,
reach a real WebSocket client of the emulator (whose own processing is off)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import boto3
import pytest
from lambda_events import LambdaContext, message_event
from pydantic import BaseModel, Field

from adapters.apigateway import ApiGatewayNotifier, open_management_client
from adapters.aws_lambda import processor, router, runtime
from emulator.testing import is_final_for, recv_until, request
from streamer.app import Request, Streamer
from streamer.errors import ConnectionGone
from streamer.models import ConnectionId
from streamer.progress import Progress
from streamer.settings import Settings

T = TypeVar("T")

app = Streamer("lambda-parity")


class StepsParams(BaseModel):
    """How many progress steps to report."""

    steps: int = Field(default=3, ge=1, le=10)


@app.action("report", mode="async", timeout=60)
async def report(req: Request[StepsParams], progress: Progress) -> dict[str, Any]:
    for step in range(1, req.payload.steps + 1):
        await progress.report(100 * step / req.payload.steps, f"step {step}")
    return {"steps": req.payload.steps}


def _context() -> LambdaContext:
    return LambdaContext(function_name="streamer-parity-test")


class LambdaThread:
    """Runs the synchronous handlers off the test's event loop, always on the same
    thread, as one Lambda container would."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lambda")

    async def call(self, function: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, function, *args)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True)


@pytest.fixture
async def lambda_thread(
    dynamodb_settings: Settings, moto_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[LambdaThread]:
    environment = {
        "CONNECTIONS_TABLE": dynamodb_settings.connections_table,
        "REQUESTS_TABLE": dynamodb_settings.requests_table,
        "SUBSCRIPTIONS_TABLE": dynamodb_settings.subscriptions_table,
        "DYNAMODB_ENDPOINT_URL": moto_endpoint,
        "AWS_REGION": "us-east-1",
        "STREAMER_APP": f"{__name__}:app",
        "PROGRESS_MAX_PER_SECOND": "0",
    }
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    thread = LambdaThread()
    await thread.call(runtime.reset_for_tests)
    try:
        yield thread
    finally:
        await thread.call(runtime.reset_for_tests)
        thread.shutdown()


def _stream_records(settings: Settings, endpoint: str) -> list[dict[str, Any]]:
    """Every record of the requests table's stream, in the shape Lambda delivers them
    (`eventSourceARN` added, `ApproximateCreationDateTime` in epoch seconds)."""
    options: dict[str, Any] = {"endpoint_url": endpoint, "region_name": "us-east-1"}
    dynamodb = boto3.client("dynamodb", **options)
    streams = boto3.client("dynamodbstreams", **options)
    try:
        table = dynamodb.describe_table(TableName=settings.requests_table)["Table"]
        arn = table["LatestStreamArn"]
        records: list[dict[str, Any]] = []
        for shard in streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]:
            iterator = streams.get_shard_iterator(
                StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
            )["ShardIterator"]
            for record in streams.get_records(ShardIterator=iterator)["Records"]:
                raw: dict[str, Any] = dict(record)
                body = dict(raw["dynamodb"])
                body["ApproximateCreationDateTime"] = int(
                    body["ApproximateCreationDateTime"].timestamp()
                )
                raw["dynamodb"] = body
                raw["eventSourceARN"] = arn
                records.append(raw)
    finally:
        dynamodb.close()
        streams.close()
    return records


async def test_a_client_of_the_emulator_gets_ack_progress_and_completion_from_lambda(
    emulator_factory: Any,
    lambda_thread: LambdaThread,
    dynamodb_settings: Settings,
    moto_endpoint: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with emulator_factory(app=app, process_stream=False) as harness:
        monkeypatch.setenv("WEBSOCKET_ENDPOINT", harness.http_url)
        monkeypatch.setenv("EMULATOR_STATE_DIR", str(harness.emulator.config.state_dir))
        async with harness.connect() as ws:
            pong = await request(ws, {"action": "ping"})
            connection_id = pong["data"]["connection_id"]

            body = {"id": "parity-1", "action": "report", "payload": {"steps": 3}}
            event = message_event(connection_id, json.dumps(body))
            reply = await lambda_thread.call(router.handler, event, _context())
            assert reply == {"statusCode": 200}
            [ack] = await recv_until(ws, lambda m: m["type"] == "acknowledgment")
            assert (ack["request_id"], ack["status"]) == ("parity-1", "queued")

            records = await lambda_thread.call(_stream_records, dynamodb_settings, moto_endpoint)
            assert [r["eventName"] for r in records] == ["INSERT"]
            result = await lambda_thread.call(processor.handler, {"Records": records}, _context())
            assert result == {"batchItemFailures": []}

            messages = await recv_until(ws, is_final_for("parity-1"))
            assert [m["type"] for m in messages] == ["progress"] * 3 + ["complete"]
            assert [m["percentage"] for m in messages[:3]] == pytest.approx([100 / 3, 200 / 3, 100])
            assert messages[-1]["result"] == {"steps": 3}

            status = await request(ws, {"action": "status", "payload": {"request_id": "parity-1"}})
            assert status["data"]["status"] == "COMPLETED"


async def test_the_notifier_reads_and_closes_an_emulator_connection(
    emulator_factory: Any, dynamodb_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`get_connection` and `delete_connection` speak the emulator's management API
    as they would API Gateway's: identity read, socket closed, then gone."""
    async with emulator_factory(app=app, process_stream=False) as harness:
        settings = dataclasses.replace(dynamodb_settings, websocket_endpoint=harness.http_url)
        monkeypatch.setenv("EMULATOR_STATE_DIR", str(harness.emulator.config.state_dir))
        async with (
            open_management_client(settings) as client,
            harness.connect() as ws,
        ):
            notifier = ApiGatewayNotifier(client)
            pong = await request(ws, {"action": "ping"})
            connection_id = ConnectionId(pong["data"]["connection_id"])

            info = await notifier.get_connection(connection_id)
            assert info.source_ip == "127.0.0.1"
            assert info.connected_at is not None

            assert await notifier.delete_connection(connection_id) is True
            async with asyncio.timeout(15):
                await ws.wait_closed()
            assert await notifier.delete_connection(connection_id) is False
            with pytest.raises(ConnectionGone):
                await notifier.get_connection(connection_id)
