"""The AsyncAPI document where users get it: the emulator's `GET /asyncapi.json`,
`streamer asyncapi`, and `streamer codegen typescript`'s refusals."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import pytest

from emulator.testing import EmulatorHarness
from streamer.asyncapi import asyncapi_document
from streamer.cli import EXIT_FAILURE, EXIT_OK, main
from streamer.demo import app as demo_app


async def test_the_emulator_serves_its_apps_document_with_its_own_server(
    emulator: EmulatorHarness,
) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{emulator.http_url}/asyncapi.json") as response,
    ):
        assert response.status == 200
        assert response.content_type == "application/json"
        served = await response.json()
    app = emulator.emulator.app
    assert app is not None
    port = emulator.ws_url.rsplit(":", 1)[1].rstrip("/")
    assert served["servers"]["local"]["host"].endswith(f":{port}")
    assert served == asyncapi_document(app, server_url=emulator.ws_url)
    actions = {op.get("x-streamer-action") for op in served["operations"].values()}
    assert {"echo", "count", "wait_gate"} <= actions


def test_streamer_asyncapi_prints_the_document_of_the_app(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["asyncapi", "--app", "streamer.demo:app"]) == EXIT_OK
    printed = json.loads(capsys.readouterr().out)
    assert printed == asyncapi_document(demo_app)


def test_streamer_asyncapi_writes_a_file_for_another_url(tmp_path: Path) -> None:
    out = tmp_path / "asyncapi.json"
    code = main(["asyncapi", "--app", "streamer.demo:app", "--url", "wss://ws.example.com/prod"])
    assert code == EXIT_OK
    assert main(["asyncapi", "--url", "wss://ws.example.com/prod", "--out", str(out)]) == EXIT_OK
    written = json.loads(out.read_text())
    assert written["servers"]["local"] | {"description": "", "security": []} == {
        "host": "ws.example.com",
        "protocol": "wss",
        "pathname": "/prod",
        "description": "",
        "security": [],
    }


def test_an_app_that_cannot_be_loaded_is_one_line_and_exit_1(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["asyncapi", "--app", "no_such_module:app"]) == EXIT_FAILURE
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0
    assert "no_such_module" in err


def test_codegen_without_the_typescript_tooling_says_what_to_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "actions.ts"
    code = main(["codegen", "typescript", "--out", str(out), "--ts-client", str(tmp_path)])
    assert code == EXIT_FAILURE
    assert "--ts-client" in capsys.readouterr().err
    assert not out.exists()

    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "codegen.mjs").write_text("")
    code = main(["codegen", "typescript", "--out", str(out), "--ts-client", str(tmp_path)])
    assert code == EXIT_FAILURE
    assert "npm ci" in capsys.readouterr().err
