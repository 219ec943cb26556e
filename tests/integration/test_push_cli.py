"""`streamer push` and `streamer listen` as subprocesses against a running emulator."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
from test_cli_streamer_command import Run, streamer

from emulator.testing import EmulatorHarness
from streamer.cli import EXIT_FAILURE, EXIT_OK, EXIT_USAGE
from streamer.client import StreamerClient
from streamer.protocol import Notification
from streamer.settings import Settings

WAIT_S = 15.0
CLIENTS = [("dev-tenant", "dev-user"), ("dev-tenant", "dev-user-2"), ("other-tenant", "dev-user")]


async def push(harness: EmulatorHarness, settings: Settings, *args: str) -> Run:
    """`streamer push ARGS` against the emulator (found by its HTTP side, as by default)."""
    return await streamer(
        "push",
        "--emulator",
        harness.http_url,
        *args,
        CONNECTIONS_TABLE=settings.connections_table,
        SUBSCRIPTIONS_TABLE=settings.subscriptions_table,
        WEBSOCKET_ENDPOINT="",
        DYNAMODB_ENDPOINT_URL="",
    )


@pytest.fixture
async def inboxes(emulator: EmulatorHarness) -> AsyncIterator[list[AsyncIterator[Notification]]]:
    """Three connected clients (two users in dev-tenant, one in other-tenant)."""
    async with AsyncExitStack() as stack:
        found = []
        for tenant, user in CLIENTS:
            client = StreamerClient(emulator.ws_url, token=emulator.mint_token(user, tenant))
            await stack.enter_async_context(client)
            await client.ping(timeout=WAIT_S)
            found.append(client.notifications())
        yield found


async def fence(harness: EmulatorHarness) -> None:
    services = harness.emulator.services
    assert services is not None
    for tenant in ("dev-tenant", "other-tenant"):
        await services.push.to_tenant(tenant, None, topic="fence")


async def until_fence(inbox: AsyncIterator[Notification]) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    async with asyncio.timeout(WAIT_S):
        async for note in inbox:
            if note.topic == "fence":
                return got
            got.append({"type": note.type, "topic": note.topic, "data": note.data})
    raise AssertionError("closed before the fence")


NEWS = {"type": "notification", "topic": "news", "data": {"hello": 1}}


@pytest.mark.parametrize(
    ("argv", "sent", "expected"),
    [
        pytest.param(
            ["--tenant", "dev-tenant", "--topic", "news", "--data", '{"hello":1}'],
            2,
            [[NEWS], [NEWS], []],
            id="a tenant reaches exactly its two sockets",
        ),
        pytest.param(
            ["--tenant", "dev-tenant", "--user", "dev-user-2", "--data", "[1, 2]"],
            1,
            [[], [{"type": "notification", "topic": None, "data": [1, 2]}], []],
            id="--user narrows to that user's socket",
        ),
    ],
)
async def test_push_reaches_exactly_the_targeted_sockets(
    emulator: EmulatorHarness,
    dynamodb_settings: Settings,
    inboxes: list[AsyncIterator[Notification]],
    argv: list[str],
    sent: int,
    expected: list[list[dict[str, Any]]],
) -> None:
    run = await push(emulator, dynamodb_settings, *argv)
    assert run.code == EXIT_OK, run.stderr
    assert run.json() == {"sent": sent, "gone": 0, "failed": 0}
    await fence(emulator)
    got = [await until_fence(inbox) for inbox in inboxes]
    assert got == expected


async def test_push_to_nobody_prints_the_summary_and_exits_1(
    emulator: EmulatorHarness, dynamodb_settings: Settings
) -> None:
    run = await push(emulator, dynamodb_settings, "--tenant", "empty-tenant", "--data", "1")
    assert run.code == EXIT_FAILURE
    assert run.json() == {"sent": 0, "gone": 0, "failed": 0}
    assert "nothing was delivered" in run.stderr


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--connection", "abc", "--tenant", "t", "--data", "1"], "not allowed with"),
        (["--user", "u", "--data", "1"], "one of the arguments"),
        (["--tenant", "t", "--data", "{nope"], "--data is not JSON"),
        (["--tenant", "t", "--topic", "", "--data", "1"], "VALIDATION_ERROR"),
    ],
)
async def test_bad_push_arguments_exit_64(
    emulator: EmulatorHarness, dynamodb_settings: Settings, args: list[str], says: str
) -> None:
    run = await push(emulator, dynamodb_settings, *args)
    assert run.code == EXIT_USAGE
    assert says in run.stderr
    assert "Traceback" not in run.stderr


async def test_data_over_128_kb_from_a_file_is_refused_before_any_send(
    emulator: EmulatorHarness, dynamodb_settings: Settings, tmp_path: Path
) -> None:
    big = tmp_path / "big.json"
    big.write_text(json.dumps("x" * 140_000), encoding="utf-8")
    run = await push(emulator, dynamodb_settings, "--tenant", "t", "--data", f"@{big}")
    assert run.code == EXIT_USAGE
    assert "PAYLOAD_TOO_LARGE" in run.stderr


async def test_push_without_endpoint_or_emulator_says_what_to_do() -> None:
    run = await streamer(
        "push",
        "--emulator",
        "http://127.0.0.1:9",
        "--tenant",
        "t",
        "--data",
        "1",
        WEBSOCKET_ENDPOINT="",
    )
    assert run.code == EXIT_FAILURE
    assert "WEBSOCKET_ENDPOINT" in run.stderr
    assert "Traceback" not in run.stderr


async def test_listen_prints_each_notification_as_a_json_line(emulator: EmulatorHarness) -> None:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("STREAMER_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "adapters.commands",
        "listen",
        "--url",
        emulator.ws_url,
        "--token",
        emulator.mint_token("lena", "listeners"),
        "--topic",
        "news",
        "--count",
        "1",
        env=environ,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    async with asyncio.timeout(WAIT_S * 2):
        ready = (await process.stderr.readline()).decode()
        assert "listening on connection" in ready
        services = emulator.emulator.services
        assert services is not None
        await services.push.to_user("listeners", "lena", {"skip": True}, topic="sports")
        await services.push.to_user("listeners", "lena", {"hello": 1}, topic="news")
        out, _ = await process.communicate()
    assert process.returncode == EXIT_OK
    (line,) = out.decode().splitlines()
    body = json.loads(line)
    assert (body["type"], body["topic"], body["data"]) == ("notification", "news", {"hello": 1})
