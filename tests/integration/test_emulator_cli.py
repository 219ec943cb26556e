"""`streamer-emulator`'s flags, environment fallbacks, start-up failures and
banner, and the Docker wiring (`Dockerfile`, `docker-compose.yml`)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest
import yaml
from websockets.asyncio.client import connect

from emulator.__main__ import banner, parse_config
from emulator.server import Emulator, EmulatorConfig
from emulator.testing import request
from streamer.settings import Settings, SettingsError

if TYPE_CHECKING:
    from conftest import EmulatorFactory

ROOT = Path(__file__).resolve().parents[2]


def test_flags_override_the_environment_and_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMULATOR_PORT", "4001")
    monkeypatch.setenv("EMULATOR_IDLE_TIMEOUT", "5")
    monkeypatch.setenv("EMULATOR_IDLE_POLL_INTERVAL", "2")
    monkeypatch.setenv("DYNAMODB_ENDPOINT_URL", "http://env:5000")
    config = parse_config(
        ["--port", "5001", "--dynamodb-endpoint", "http://flag:5000", "--poll-interval", "0.2"]
    )
    assert config.port == 5001
    assert config.settings.dynamodb_endpoint_url == "http://flag:5000"
    assert config.idle_timeout_s == 5
    assert config.poll_interval_s == 0.2
    assert config.idle_poll_interval_s == 2
    assert config.http_port == 5002  # the WebSocket port + 1 when only --port is given
    assert config.host == "127.0.0.1"
    assert config.state_dir == Path(".streamer")


def test_defaults_follow_design_section_8(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("EMULATOR_") or name in ("DYNAMODB_ENDPOINT_URL", "STREAMER_APP"):
            monkeypatch.delenv(name)
    config = parse_config([])
    assert (config.port, config.http_port) == (3001, 3002)
    assert config.settings.dynamodb_endpoint_url is None  # → embedded moto
    assert config.settings.app == "streamer.demo:app"
    assert (config.poll_interval_s, config.idle_poll_interval_s) == (0.05, 0.5)
    assert config.batch_size == 10
    assert (config.idle_timeout_s, config.max_connection_s) == (600, 7200)
    assert config.persist  # make run keeps its state; --ephemeral does not
    assert parse_config(["--ephemeral"]).persist is False
    assert config.save_interval_s == 5


def test_the_dynamodb_client_is_auto_unless_chosen(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EMULATOR_DYNAMODB_CLIENT", raising=False)
    assert parse_config([]).dynamodb_client == "auto"
    monkeypatch.setenv("EMULATOR_DYNAMODB_CLIENT", "AioBoto3")
    assert parse_config([]).dynamodb_client == "aioboto3"
    assert parse_config(["--dynamodb-client", "awsjson"]).dynamodb_client == "awsjson"
    monkeypatch.setenv("EMULATOR_DYNAMODB_CLIENT", "boto")
    with pytest.raises(SettingsError, match="EMULATOR_DYNAMODB_CLIENT"):
        parse_config([])


def test_a_malformed_environment_value_is_one_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EMULATOR_PORT", "seventy")
    with pytest.raises(SettingsError, match="EMULATOR_PORT"):
        parse_config([])


def _run_cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "emulator", *args],
        env={**os.environ, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_bad_setting_fails_at_start_with_one_line(tmp_path: Path) -> None:
    result = _run_cli([], {"MAX_CONNECTIONS_PER_USER": "many"}, tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "MAX_CONNECTIONS_PER_USER" in result.stderr


def test_an_app_that_cannot_be_imported_fails_at_start_with_one_line(tmp_path: Path) -> None:
    result = _run_cli(["--app", "no_such_module:app"], {}, tmp_path)
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert "no_such_module" in line


@pytest.mark.parametrize(
    ("busy_flag", "free_flag"), [("--port", "--http-port"), ("--http-port", "--port")]
)
def test_a_port_in_use_fails_at_start_with_one_line_naming_it(
    moto_endpoint: str, tmp_path: Path, busy_flag: str, free_flag: str
) -> None:
    suffix = uuid.uuid4().hex[:10]
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = _run_cli(
            [busy_flag, str(port), free_flag, "0", "--dynamodb-endpoint", moto_endpoint],
            {
                "CONNECTIONS_TABLE": f"cli-connections-{suffix}",
                "REQUESTS_TABLE": f"cli-requests-{suffix}",
                "LOG_LEVEL": "ERROR",
            },
            tmp_path,
        )
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("streamer-emulator: cannot start:")
    assert str(port) in line


async def test_without_a_jwt_key_dev_keys_are_made_and_the_banner_token_connects(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    async with emulator_factory(settings={"jwt_public_key": None}) as harness:
        text = banner(harness.emulator)
        assert (tmp_path / "state" / "dev_private.pem").exists()
        (token,) = re.findall(r"Authorization=([\w.-]+)\"", text)
        assert "streamer send generate_report" in text
        async with connect(f"{harness.ws_url}?Authorization={token}") as ws:
            pong = await request(ws, {"action": "ping"})
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{harness.http_url}/api/dev-token", params={"sub": "ada"}) as resp,
        ):
            assert resp.status == 200
            console = await resp.json()
        async with connect(f"{harness.ws_url}?Authorization={console['token']}") as ws:
            console_pong = await request(ws, {"action": "ping"})
    assert pong["type"] == "response"
    assert console["sub"] == "ada"
    assert console["ws_url"] == harness.ws_url
    assert console_pong["type"] == "response"


# -- Docker --------------------------------------------------------------------------


def _compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def _dockerfile() -> list[str]:
    lines = (ROOT / "Dockerfile").read_text().replace("\\\n", " ").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def test_compose_runs_moto_with_a_healthcheck_and_the_emulator_after_it() -> None:
    services = _compose()["services"]
    assert set(services) >= {"moto", "emulator"}
    moto = services["moto"]
    # The emulator's own atomic local DynamoDB from the same image, not upstream's image.
    assert moto["build"] in (".", {"context": "."})
    assert "image" not in moto
    assert moto["command"][:3] == ["python", "-m", "adapters.moto_server"]
    assert moto["command"][3:] == ["--host", "0.0.0.0", "--port", "5000"]
    assert "5000" in " ".join(moto["healthcheck"]["test"])
    emulator = services["emulator"]
    assert emulator["build"] in (".", {"context": "."})
    assert emulator["depends_on"]["moto"]["condition"] == "service_healthy"
    # Published on loopback only: a LAN neighbour reaches neither port.
    assert {"127.0.0.1:3001:3001", "127.0.0.1:3002:3002"} == set(emulator["ports"])
    environment = emulator["environment"]
    assert environment["DYNAMODB_ENDPOINT_URL"] == "http://moto:5000"
    # Its moto is the emulator's own local server: the lean client is correct on it.
    assert environment["EMULATOR_DYNAMODB_CLIENT"] == "awsjson"
    assert environment["EMULATOR_HOST"] == "0.0.0.0"
    assert "/health" in " ".join(emulator["healthcheck"]["test"])


def test_the_compose_command_is_accepted_by_the_emulator_cli() -> None:
    command = _compose()["services"]["emulator"]["command"]
    assert command[0] == "streamer-emulator"
    config = parse_config(command[1:])
    assert config.host == "0.0.0.0"
    assert config.settings.dynamodb_endpoint_url == "http://moto:5000"


def test_the_dockerfile_is_slim_non_root_and_serves_both_ports() -> None:
    lines = _dockerfile()
    (base,) = [line for line in lines if line.startswith("FROM ")]
    assert re.fullmatch(r"FROM python:3\.1[12]-slim", base)
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users
    assert users[-1] not in ("root", "0")
    assert any(line.split()[1:] == ["3001", "3002"] for line in lines if line.startswith("EXPOSE"))
    assert any(line.startswith("HEALTHCHECK") and "/health" in line for line in lines)
    (cmd,) = [line for line in lines if line.startswith("CMD ")]
    assert "streamer-emulator" in cmd
    # The local DynamoDB (moto and its server) is in the image: compose's moto service runs it.
    assert any("pip install '.[local]'" in line for line in lines if line.startswith("RUN "))
    assert "0.0.0.0" in cmd
    assert (ROOT / ".dockerignore").exists()


async def test_start_up_fails_clearly_when_the_requests_table_cannot_be_read(
    moto_endpoint: str, rsa_keys: tuple[str, str], tmp_path: Path
) -> None:
    missing = uuid.uuid4().hex[:10]
    settings = Settings(
        jwt_public_key=rsa_keys[1],
        dynamodb_endpoint_url=moto_endpoint,
        connections_table=f"missing-connections-{missing}",
        requests_table=f"missing-requests-{missing}",
        subscriptions_table=f"missing-subscriptions-{missing}",
    )
    config = EmulatorConfig(
        settings=settings,
        port=0,
        http_port=0,
        state_dir=tmp_path,
        create_tables=False,
        start_timeout_s=0.5,
    )
    with pytest.raises(RuntimeError, match="stream poller"):
        async with Emulator(config):
            pass
