"""No secret in any log at any level: a DEBUG run of the emulator and of a Lambda
handler (with session-token credentials), real traffic both ways, everything the
configured handler writes searched for the token, the session token and payload
values; with the wire-level loggers held at INFO and with them turned on."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import EmulatorStarter, Runs
from websockets.asyncio.client import connect

from adapters.aws_lambda import router, runtime
from emulator.testing import EmulatorHarness, is_final_for, recv_until, request
from streamer.logs import WIRE_LOGGERS, configure_logging

EVENTS = Path(__file__).resolve().parent.parent / "fixtures" / "lambda_events"


@dataclass
class _Context:
    aws_request_id: str = "5d1e2f3a-0000-4c11-9b1e-2f6a7d0e9c44"
    function_name: str = "streamer-logs-test"

    def get_remaining_time_in_millis(self) -> int:
        return 60_000


@contextlib.contextmanager
def _configured_logs(wire_level: str | None) -> Iterator[io.StringIO]:
    """The product's own logging set-up at DEBUG, writing to a buffer; undone after."""
    root = logging.getLogger()
    saved_root = root.level
    saved = {name: logging.getLogger(name).level for name in WIRE_LOGGERS}
    sink = io.StringIO()
    configure_logging("DEBUG", wire_level=wire_level, stream=sink)
    try:
        yield sink
    finally:
        for handler in [h for h in root.handlers if getattr(h, "_streamer_json", False)]:
            root.removeHandler(handler)
        root.setLevel(saved_root)
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


async def _unparsable_handshake(port: int, token: str) -> None:
    """A request line websockets cannot parse (HTTP/1.0), the token in its query."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET /?Authorization={token} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
        await writer.drain()
        async with asyncio.timeout(10):
            await reader.read()
    finally:
        writer.close()


async def _emulator_traffic(harness: EmulatorHarness, marker: str) -> str:
    """Sync and async requests carrying marker values, then a handshake websockets
    cannot parse; returns the token used."""
    token = harness.mint_token("logged-user", "tenant-1")
    async with connect(f"{harness.ws_url}/?Authorization={token}", open_timeout=10) as ws:
        echoed = await request(
            ws, {"id": "e1", "action": "echo", "payload": {"v": f"pay-{marker}"}}
        )
        assert echoed["data"]["echo"]["v"] == f"pay-{marker}"
        await request(
            ws, {"id": "s1", "action": "steps", "payload": {"steps": 2, "marker": marker}}
        )
        finals = await recv_until(ws, is_final_for("s1"))
        assert finals[-1]["result"]["marker"] == f"result-{marker}"
    assert harness.emulator.gateway is not None
    await _unparsable_handshake(harness.emulator.gateway.port, token)
    return token


@pytest.mark.parametrize("wire_level", [None, "DEBUG"], ids=["wire-held", "wire-debug"])
async def test_a_debug_run_logs_no_token_no_session_token_and_no_payload_value(
    start_emulator: EmulatorStarter,
    runs: Runs,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    wire_level: str | None,
) -> None:
    marker = uuid.uuid4().hex
    session_token = f"IQoJb3JpZ2luX2VjE{uuid.uuid4().hex}"
    monkeypatch.setenv("AWS_SESSION_TOKEN", session_token)
    monkeypatch.setenv("AWS_SECURITY_TOKEN", session_token)
    lambda_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lambda")
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(lambda_pool, runtime.reset_for_tests)
    try:
        with _configured_logs(wire_level) as sink:
            async with start_emulator() as harness:
                token = await _emulator_traffic(harness, marker)
                # The Lambda router answers a frame of a connection the emulator holds,
                # posting through the management API with session-token credentials.
                settings = harness.emulator.settings
                for name, value in {
                    "CONNECTIONS_TABLE": settings.connections_table,
                    "REQUESTS_TABLE": settings.requests_table,
                    "SUBSCRIPTIONS_TABLE": settings.subscriptions_table,
                    "DYNAMODB_ENDPOINT_URL": settings.dynamodb_endpoint_url or "",
                    "WEBSOCKET_ENDPOINT": harness.http_url,
                    "EMULATOR_STATE_DIR": str(harness.emulator.config.state_dir),
                    "AWS_REGION": "us-east-1",
                    "STREAMER_APP": "streamer.demo:app",
                    "LOG_LEVEL": "DEBUG",
                    **({"STREAMER_WIRE_LOG_LEVEL": wire_level} if wire_level else {}),
                }.items():
                    monkeypatch.setenv(name, value)
                async with harness.connect("lambda-user") as ws:
                    pong = await request(ws, {"action": "ping"})
                    event = json.loads((EVENTS / "message.json").read_text())
                    event["requestContext"]["connectionId"] = pong["data"]["connection_id"]
                    event["body"] = json.dumps(
                        {"id": "l1", "action": "echo", "payload": {"v": f"lambda-{marker}"}}
                    )
                    answer = await loop.run_in_executor(
                        lambda_pool, router.handler, event, _Context()
                    )
                    assert answer == {"statusCode": 200}
                    async with asyncio.timeout(15):
                        echoed = json.loads(await ws.recv())
                    assert echoed["data"]["echo"]["v"] == f"lambda-{marker}"
            await loop.run_in_executor(lambda_pool, runtime.reset_for_tests)
    finally:
        lambda_pool.shutdown(wait=True)
    text = sink.getvalue()
    lines = text.splitlines()
    assert len(lines) > 20, "nothing was captured"
    if wire_level == "DEBUG":
        wire = [json.loads(line)["logger"] for line in lines]
        assert any(name.startswith("botocore") for name in wire), "botocore was not traced"
    signature = token.rsplit(".", 1)[1]
    needles = {
        "token": signature[:24],
        "session token": session_token,
        "payload": f"pay-{marker}",
        "lambda payload": f"lambda-{marker}",
        "result": f"result-{marker}",
        "marker": marker,
    }
    leaks = {what: next(ln for ln in lines if n in ln) for what, n in needles.items() if n in text}
    assert leaks == {}
