"""`make run` across restarts and signals, as a user runs it: the emulator as a
subprocess on a state folder, real sockets, SIGINT/SIGTERM, and every line it
prints checked for asyncio warnings and tracebacks."""

from __future__ import annotations

import json
import signal
import textwrap
from pathlib import Path
from typing import Any

import pytest
from emulator_process import bad_lines, run_emulator

from emulator.persistence import STATE_FILE
from emulator.testing import is_final_for, recv_json, recv_until, request, send_json

pytestmark = pytest.mark.timeout(240)

EXIT_TIMEOUT_S = 30.0
"""A graceful stop on a loaded machine (drain, hand back, save, stop moto)."""
SECOND_SIGNAL_EXIT_S = 5.0
"""The emulator ends itself 0.6 s after a second signal; the rest is headroom
for a machine shared by many test runs."""

APP = '''
"""An app for the restart tests: `slow` blocks until its gate file exists."""

import asyncio
import os
from pathlib import Path
from typing import Any

from streamer import Progress, Request, Streamer

app = Streamer("restart")
STATE = Path(os.environ["RESTART_TEST_DIR"])


def _log(line: str) -> None:
    with (STATE / "runs.log").open("a") as file:
        file.write(line + "\\n")


@app.action("slow", mode="async", timeout=120)
async def slow(req: Request[dict[str, Any]], progress: Progress) -> dict[str, Any]:
    """Reports 10 %, waits for the gate file, then completes."""
    _log(f"start {req.request_id}")
    await progress.report(10, "waiting for the gate")
    while not (STATE / "gate").exists():
        await asyncio.sleep(0.02)
    _log(f"done {req.request_id}")
    return {"finished": True}
'''


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    (tmp_path / "restart_app.py").write_text(textwrap.dedent(APP))
    return tmp_path


def _env(app_dir: Path) -> dict[str, str]:
    return {"PYTHONPATH": str(app_dir), "RESTART_TEST_DIR": str(app_dir)}


def _runs(app_dir: Path) -> list[str]:
    path = app_dir / "runs.log"
    return path.read_text().splitlines() if path.exists() else []


async def test_a_request_handed_back_at_ctrl_c_runs_again_after_a_restart(
    app_dir: Path,
) -> None:
    """Queue work, SIGINT mid-action, restart on the same state folder: the request
    completes once, a subscriber on a new connection gets it, and `status` still
    finds it after another restart."""
    state = app_dir / "state"
    args = ("--app", "restart_app:app", "--drain-timeout", "0.2")
    async with run_emulator(state, *args, env=_env(app_dir)) as first, first.connect() as ws:
        await send_json(ws, {"action": "slow", "payload": {}})
        ack = await recv_json(ws)
        request_id = ack["request_id"]
        progress = await recv_json(ws)
        assert progress["type"] == "progress"
        first.signal(signal.SIGINT)
        assert await first.wait_exit(EXIT_TIMEOUT_S) == 0
    assert (state / STATE_FILE).exists()
    assert _runs(app_dir) == [f"start {request_id}"]

    async with run_emulator(state, *args, env=_env(app_dir)) as second:
        await second.wait_line(r"restored \d+ requests")
        async with second.connect() as ws:
            snapshot = await request(
                ws, {"action": "subscribe", "payload": {"request_id": request_id}}
            )
            assert snapshot["type"] == "response", snapshot
            (app_dir / "gate").touch()
            final = (await recv_until(ws, is_final_for(request_id)))[-1]
        assert final["type"] == "complete"
        assert final["result"] == {"finished": True}
        second.signal(signal.SIGTERM)
        assert await second.wait_exit(EXIT_TIMEOUT_S) == 0
    assert _runs(app_dir) == [f"start {request_id}", f"start {request_id}", f"done {request_id}"]

    async with run_emulator(state, *args, env=_env(app_dir)) as third, third.connect() as ws:
        status = await request(ws, {"action": "status", "payload": {"request_id": request_id}})
        third.signal(signal.SIGINT)
        assert await third.wait_exit(EXIT_TIMEOUT_S) == 0
    assert status["data"]["status"] == "COMPLETED", status
    assert _runs(app_dir)[-1] == f"done {request_id}"  # not run a third time
    for run in (first, second, third):
        assert bad_lines(run.lines) == []


async def test_ephemeral_keeps_nothing(app_dir: Path) -> None:
    """With --ephemeral no tables are saved and a restart finds nothing."""
    state = app_dir / "state"
    args = ("--app", "restart_app:app", "--ephemeral")
    async with run_emulator(state, *args, env=_env(app_dir)) as first:
        (app_dir / "gate").touch()
        async with first.connect() as ws:
            await send_json(ws, {"action": "slow", "payload": {}})
            request_id = (await recv_until(ws, lambda m: m["type"] == "complete"))[0]["request_id"]
        first.signal(signal.SIGINT)
        assert await first.wait_exit(EXIT_TIMEOUT_S) == 0
    assert not (state / STATE_FILE).exists()
    async with run_emulator(state, *args, env=_env(app_dir)) as second, second.connect() as ws:
        status = await request(ws, {"action": "status", "payload": {"request_id": request_id}})
        second.signal(signal.SIGINT)
        await second.wait_exit(EXIT_TIMEOUT_S)
    assert status["type"] == "error"
    assert status["error"]["code"] == "NOT_FOUND"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
async def test_a_second_signal_quits_at_once_and_cleanly(app_dir: Path, signum: int) -> None:
    """Mid-action with an open socket, a second signal ends the process within a
    second, with no asyncio warning, unclosed session or traceback."""
    state = app_dir / "state"
    args = ("--app", "restart_app:app", "--drain-timeout", "30")
    async with run_emulator(state, *args, env=_env(app_dir)) as running, running.connect() as ws:
        await send_json(ws, {"action": "slow", "payload": {}})
        await recv_json(ws)  # acknowledgment
        assert (await recv_json(ws))["type"] == "progress"
        running.signal(signum)
        await running.wait_line("Shutting down")
        running.signal(signum)
        status = await running.wait_exit(SECOND_SIGNAL_EXIT_S)
    assert status in (128 + signum, -signum)
    assert bad_lines(running.lines) == []


async def test_a_graceful_stop_prints_no_warning(app_dir: Path) -> None:
    """One signal with a socket open and an action running: exit 0, nothing alarming."""
    state = app_dir / "state"
    args = ("--app", "restart_app:app", "--drain-timeout", "0.1")
    async with run_emulator(state, *args, env=_env(app_dir)) as running, running.connect() as ws:
        await send_json(ws, {"action": "slow", "payload": {}})
        await recv_json(ws)
        await recv_json(ws)
        running.signal(signal.SIGTERM)
        assert await running.wait_exit(EXIT_TIMEOUT_S) == 0
    assert bad_lines(running.lines) == []
    saved: dict[str, Any] = json.loads((state / STATE_FILE).read_text())
    (item,) = saved["tables"]["requests"]
    assert item["Status"] == {"S": "PENDING"}  # handed back, then saved
