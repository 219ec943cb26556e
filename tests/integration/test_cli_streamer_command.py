"""The `streamer` command run as a subprocess: output, exit codes and defaults."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import jwt
import pytest

from adapters.commands import main
from emulator.server import Emulator, EmulatorConfig
from emulator.testing import EmulatorHarness
from streamer.cli import (
    EXIT_CONNECTION,
    EXIT_OK,
    EXIT_SERVER_ERROR,
    EXIT_TIMEOUT,
    EXIT_USAGE,
)
from streamer.client import StreamerClient
from streamer.errors import StreamerError
from streamer.settings import Settings
from streamer.tokens import generate_rsa_key_pair, load_or_create_dev_keys

if TYPE_CHECKING:
    from conftest import Steering

RUN_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Run:
    """What one `streamer` run did."""

    code: int
    stdout: str
    stderr: str

    def json(self) -> object:
        """stdout as one JSON document."""
        return json.loads(self.stdout)


async def streamer(*args: str, cwd: Path | None = None, **env: str) -> Run:
    """Run `python -m adapters.commands ARGS` (what `streamer` runs) off the emulator's loop."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("STREAMER_")}
    environ.update(env)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "adapters.commands",
        *args,
        cwd=cwd,
        env=environ,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(RUN_TIMEOUT_S):
        out, err = await process.communicate()
    assert process.returncode is not None
    return Run(process.returncode, out.decode(), err.decode())


def _connection(harness: EmulatorHarness) -> list[str]:
    return ["--url", harness.ws_url, "--token", harness.mint_token()]


async def test_send_sync_prints_the_json_result_and_exits_0(emulator: EmulatorHarness) -> None:
    run = await streamer("send", "echo", "--payload", '{"a": 1}', *_connection(emulator))
    assert run.code == EXIT_OK, run.stderr
    assert run.json() == {"echo": {"a": 1}}


async def test_send_async_prints_progress_on_stderr_then_the_result(
    emulator: EmulatorHarness,
) -> None:
    run = await streamer("send", "count", "--payload", '{"steps": 4}', *_connection(emulator))
    assert run.code == EXIT_OK, run.stderr
    assert run.json() == {"steps": 4, "user": "user-1"}
    progress = [line for line in run.stderr.splitlines() if line.startswith("progress")]
    assert progress[-1] == "progress 100.0% step 4"
    assert "queued" in run.stderr


async def test_send_payload_may_come_from_a_file(emulator: EmulatorHarness, tmp_path: Path) -> None:
    payload = tmp_path / "payload.json"
    payload.write_text('{"from": "file"}')
    run = await streamer("send", "echo", "--payload", f"@{payload}", *_connection(emulator))
    assert run.json() == {"echo": {"from": "file"}}


async def test_send_json_prints_every_server_message_as_a_json_line(
    emulator: EmulatorHarness,
) -> None:
    run = await streamer(
        "send", "count", "--payload", '{"steps": 2}', "--json", *_connection(emulator)
    )
    assert run.code == EXIT_OK, run.stderr
    messages = [json.loads(line) for line in run.stdout.splitlines()]
    types = [message["type"] for message in messages]
    assert types[0] == "acknowledgment"
    assert types[-1] == "complete"
    assert set(types[1:-1]) == {"progress"}
    assert messages[-1]["result"] == {"steps": 2, "user": "user-1"}
    assert all("timestamp" in message for message in messages)


async def test_send_unknown_action_exits_2_with_the_code_on_stderr(
    emulator: EmulatorHarness,
) -> None:
    run = await streamer("send", "no_such_action", *_connection(emulator))
    assert run.code == EXIT_SERVER_ERROR
    assert run.stderr.startswith("INVALID_ACTION: ")
    assert run.stdout == ""


async def test_send_invalid_payload_exits_2_with_the_validation_details(
    emulator: EmulatorHarness,
) -> None:
    run = await streamer("send", "count", "--payload", '{"steps": 0}', *_connection(emulator))
    assert run.code == EXIT_SERVER_ERROR
    first, _, details = run.stderr.partition("\n")
    assert first.startswith("VALIDATION_ERROR: ")
    assert json.loads(details)[0]["loc"] == ["steps"]


async def test_send_with_a_bad_token_exits_3_unauthorized(emulator: EmulatorHarness) -> None:
    run = await streamer("send", "echo", "--url", emulator.ws_url, "--token", "not-a-jwt")
    assert run.code == EXIT_CONNECTION
    assert run.stderr.startswith("UNAUTHORIZED: ")
    assert "not-a-jwt" not in run.stderr


async def test_send_to_a_closed_port_exits_3() -> None:
    run = await streamer("send", "echo", "--url", "ws://127.0.0.1:9", "--token", "t")
    assert run.code == EXIT_CONNECTION
    assert run.stderr.startswith("CONNECTION_FAILED: ")


async def test_send_without_an_answer_in_time_exits_4(
    emulator: EmulatorHarness, steering: Steering
) -> None:
    run = await streamer(
        "send", "wait_gate", "--payload", '{"gate": "shut"}', "--timeout", "0.5",
        *_connection(emulator),
    )  # fmt: skip
    steering.gate("shut").set()
    assert run.code == EXIT_TIMEOUT
    assert run.stderr.splitlines()[-1].startswith("TIMEOUT: ")


async def test_payload_that_is_not_a_json_object_is_a_usage_error() -> None:
    run = await streamer("send", "echo", "--payload", "[1, 2]", "--token", "t")
    assert run.code == EXIT_USAGE
    assert "JSON object" in run.stderr
    run = await streamer("send", "echo", "--payload", "{not json", "--token", "t")
    assert run.code == EXIT_USAGE


async def test_status_and_cancel_print_the_stored_request(
    emulator: EmulatorHarness, steering: Steering
) -> None:
    request_id = f"cli-{uuid.uuid4().hex}"
    async with StreamerClient(emulator.ws_url, token=emulator.mint_token()) as client:
        running = asyncio.create_task(client.request("until_cancelled", request_id=request_id))
        async with asyncio.timeout(RUN_TIMEOUT_S):
            await steering.started_event(request_id).wait()

        status = await streamer("status", request_id, *_connection(emulator))
        assert status.code == EXIT_OK, status.stderr
        assert status.json()["status"] == "PROCESSING"  # type: ignore[index]

        cancel = await streamer("cancel", request_id, *_connection(emulator))
        assert cancel.code == EXIT_OK, cancel.stderr
        assert cancel.json() == {"request_id": request_id, "status": "CANCELLED", "cancelled": True}
        with pytest.raises(StreamerError, match="cancelled"):
            await running


async def test_status_of_an_unknown_request_exits_2_not_found(
    emulator: EmulatorHarness,
) -> None:
    run = await streamer("status", "never-sent", *_connection(emulator))
    assert run.code == EXIT_SERVER_ERROR
    assert run.stderr.startswith("NOT_FOUND: ")


async def test_status_follow_waits_for_the_result(
    emulator: EmulatorHarness, steering: Steering
) -> None:
    request_id = f"cli-{uuid.uuid4().hex}"
    async with StreamerClient(emulator.ws_url, token=emulator.mint_token()) as client:
        running = asyncio.create_task(
            client.request("wait_gate", {"gate": request_id}, request_id=request_id)
        )
        async with asyncio.timeout(RUN_TIMEOUT_S):
            await steering.started_event(request_id).wait()
        follower = asyncio.create_task(
            streamer("status", request_id, "--follow", *_connection(emulator))
        )
        steering.gate(request_id).set()
        assert await running == {"gate": request_id}
    run = await follower
    assert run.code == EXIT_OK, run.stderr
    assert run.json() == {"gate": request_id}


# -- defaults: a dev emulator whose keys are in .streamer/ under the working directory ----


@pytest.fixture
async def dev_emulator(dynamodb_settings: Settings, tmp_path: Path) -> AsyncIterator[Emulator]:
    """The demo app with dev keys in `tmp_path/.streamer`, as `make run` starts it."""
    config = EmulatorConfig(
        settings=dataclasses.replace(dynamodb_settings, jwt_public_key=None),
        app="streamer.demo:app",
        port=0,
        http_port=0,
        state_dir=tmp_path / ".streamer",
        poll_interval_s=0.02,
        drain_timeout_s=2.0,
        create_tables=False,
    )
    async with Emulator(config) as emulator:
        yield emulator


async def test_send_needs_no_token_next_to_the_emulators_dev_keys(
    dev_emulator: Emulator, tmp_path: Path
) -> None:
    run = await streamer("send", "echo", "--url", dev_emulator.ws_url, cwd=tmp_path)
    assert run.code == EXIT_OK, run.stderr
    assert run.json()["echo"] == {}  # type: ignore[index]


async def test_send_takes_the_token_from_streamer_token(
    emulator: EmulatorHarness, tmp_path: Path
) -> None:
    run = await streamer(
        "send", "echo", cwd=tmp_path, STREAMER_URL=emulator.ws_url,
        STREAMER_TOKEN=emulator.mint_token(),
    )  # fmt: skip
    assert run.code == EXIT_OK, run.stderr


async def test_token_prints_a_jwt_signed_by_the_dev_key_with_the_claims_asked_for(
    tmp_path: Path,
) -> None:
    keys_dir = tmp_path / "keys"
    run = await streamer(
        "token", "--keys-dir", str(keys_dir), "--sub", "ada", "--tenant", "acme",
        "--ttl", "120", "--permissions", "read,write", "--permissions", "admin",
        "--issuer", "https://issuer.example",
    )  # fmt: skip
    assert run.code == EXIT_OK, run.stderr
    public_pem = load_or_create_dev_keys(keys_dir).public_pem
    claims = jwt.decode(
        run.stdout.strip(),
        public_pem,
        algorithms=["RS256"],
        issuer="https://issuer.example",
    )
    assert claims["sub"] == "ada"
    assert claims["tenant_id"] == "acme"
    assert claims["permissions"] == ["read", "write", "admin"]
    assert claims["exp"] - claims["iat"] == 120


async def test_token_signs_with_a_given_private_key(tmp_path: Path) -> None:
    private_pem, public_pem = generate_rsa_key_pair()
    key_file = tmp_path / "private.pem"
    key_file.write_text(private_pem)
    run = await streamer("token", "--private-key", str(key_file))
    claims = jwt.decode(run.stdout.strip(), public_pem, algorithms=["RS256"])
    assert (claims["sub"], claims["tenant_id"]) == ("dev-user", "dev-tenant")


async def test_tables_create_list_delete_on_an_endpoint(moto_endpoint: str) -> None:
    suffix = uuid.uuid4().hex[:8]
    env = {
        "CONNECTIONS_TABLE": f"cli-connections-{suffix}",
        "REQUESTS_TABLE": f"cli-requests-{suffix}",
        "SUBSCRIPTIONS_TABLE": f"cli-subscriptions-{suffix}",
    }
    endpoint = ["--endpoint-url", moto_endpoint]

    created = await streamer("tables", "create", *endpoint, **env)
    listed = await streamer("tables", "list", *endpoint, **env)
    deleted = await streamer("tables", "delete", *endpoint, **env)
    after = await streamer("tables", "list", *endpoint, **env)

    assert created.code == EXIT_OK, created.stderr
    assert created.stdout.count("\tcreated") == 3
    assert sorted(listed.stdout.split()) == sorted([*env.values(), *["ACTIVE"] * 3])
    assert deleted.stdout.count("\tdeleted") == 3
    assert after.stdout.count("\tMISSING") == 3


async def test_tables_on_an_unreachable_endpoint_is_one_line_naming_the_store() -> None:
    run = await streamer(
        "tables", "list", "--endpoint-url", "http://127.0.0.1:9", AWS_MAX_ATTEMPTS="1"
    )

    assert run.code != EXIT_OK
    assert run.stderr.strip().splitlines() == [
        "DynamoDB: state store unreachable (EndpointConnectionError)"
    ]


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["token"],
        ["send"],
        ["status"],
        ["cancel"],
        ["listen"],
        ["tables"],
        ["push"],
        ["lambda"],
        ["lambda", "build"],
    ],
)
def test_every_subcommand_has_help(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main([*command, "--help"])
    assert exited.value.code == 0
    assert "usage: streamer" in capsys.readouterr().out


def test_bad_usage_exits_64(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["lambda", "build", "--arch", "sparc"])
    assert exited.value.code == EXIT_USAGE
    assert "invalid choice" in capsys.readouterr().err
