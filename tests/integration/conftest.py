"""Fixtures for integration tests: an in-process emulator on free ports, real
sockets, and a test app whose actions the tests can steer (message helpers are
in `emulator.testing`).

`emulator` starts one `Emulator` per test over the shared moto server with fresh
tables. Shrink its timeouts or change settings with a marker:

    @pytest.mark.emulator(idle_timeout_s=0.3, settings={"rate_limit_per_minute": 5})

`emulator_factory` starts more than one (restarts) over the same tables and state.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, Field

from emulator.server import Emulator, EmulatorConfig
from emulator.testing import EmulatorHarness
from streamer.app import Request, Streamer
from streamer.progress import Progress
from streamer.settings import Settings
from streamer.tokens import generate_rsa_key_pair


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "emulator(**overrides): EmulatorConfig fields for the `emulator` fixture; "
        "`settings={...}` overrides Settings fields",
    )


# -- the test app --------------------------------------------------------------------


class Steering:
    """What tests use to steer and observe the test app's actions."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget every gate and count."""
        self.gates: dict[str, asyncio.Event] = {}
        self.runs: Counter[str] = Counter()
        """Runs started per request id (a duplicate delivery would show as 2)."""
        self.started: dict[str, asyncio.Event] = {}

    def gate(self, name: str) -> asyncio.Event:
        """The event a `wait_gate` action with this gate name waits for."""
        return self.gates.setdefault(name, asyncio.Event())

    def started_event(self, request_id: str) -> asyncio.Event:
        """Set when an action of this request id starts running."""
        return self.started.setdefault(request_id, asyncio.Event())

    def mark_started(self, request_id: str) -> None:
        self.runs[request_id] += 1
        self.started_event(request_id).set()


STEERING = Steering()

test_app = Streamer("integration")


class CountParams(BaseModel):
    """How many progress steps to report."""

    steps: int = Field(default=3, ge=1, le=100)


class GateParams(BaseModel):
    """Which gate to wait for."""

    gate: str


@test_app.action("echo", mode="sync")
async def echo(req: Request[dict[str, Any]]) -> dict[str, Any]:
    """Answers with its payload."""
    return {"echo": req.payload}


FRAME_MARK: contextvars.ContextVar[str] = contextvars.ContextVar("frame_mark", default="unset")
"""Set by `mark_context`: a frame must never see another frame's value."""


@test_app.action("mark_context", mode="sync")
async def mark_context(req: Request[dict[str, Any]]) -> dict[str, Any]:
    """Answers with the context variable it found, after setting it to its own id."""
    seen = FRAME_MARK.get()
    FRAME_MARK.set(req.request_id)
    return {"seen": seen}


@test_app.action("sync_gate", mode="sync", timeout=30)
async def sync_gate(req: Request[GateParams]) -> dict[str, Any]:
    """A sync action that waits until the test opens its gate."""
    STEERING.mark_started(req.request_id)
    await STEERING.gate(req.payload.gate).wait()
    return {"gate": req.payload.gate}


@test_app.action("own_timeout", mode="sync")
async def own_timeout(req: Request[dict[str, Any]]) -> dict[str, Any]:
    """Waits under its own short `asyncio.timeout` and reports that it fired: the
    timeout cancels the task this frame runs in, and nothing else."""
    try:
        async with asyncio.timeout(0.05):
            await asyncio.Event().wait()
    except TimeoutError:
        return {"timed_out": True}
    return {"timed_out": False}


@test_app.action("count", mode="async", timeout=60)
async def count(req: Request[CountParams], progress: Progress) -> dict[str, Any]:
    """Reports `steps` progress updates, then returns."""
    STEERING.mark_started(req.request_id)
    for step in range(1, req.payload.steps + 1):
        await progress.report(100 * step / req.payload.steps, f"step {step}", step=step)
    return {"steps": req.payload.steps, "user": req.user_id}


@test_app.action("wait_gate", mode="async", timeout=60)
async def wait_gate(req: Request[GateParams], progress: Progress) -> dict[str, Any]:
    """Reports 10 %, then waits until the test opens its gate."""
    STEERING.mark_started(req.request_id)
    await progress.report(10, "waiting for the gate")
    await STEERING.gate(req.payload.gate).wait()
    await progress.report(90, "gate open")
    return {"gate": req.payload.gate}


@test_app.action("until_cancelled", mode="async", timeout=60)
async def until_cancelled(req: Request[dict[str, Any]], progress: Progress) -> dict[str, Any]:
    """Reports progress until the request is cancelled."""
    STEERING.mark_started(req.request_id)
    percentage = 0.0
    while True:
        percentage = min(99.0, percentage + 1)
        await progress.report(percentage, "working")
        await progress.check_cancelled()
        await asyncio.sleep(0.02)


# -- the emulator fixture ---------------------------------------------------------------


@pytest.fixture(scope="session")
def rsa_keys() -> tuple[str, str]:
    """One RSA key pair (private, public) for the whole session."""
    return generate_rsa_key_pair()


EmulatorFactory = Callable[..., contextlib.AbstractAsyncContextManager[EmulatorHarness]]


@pytest.fixture
def emulator_factory(
    dynamodb_settings: Settings,
    rsa_keys: tuple[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> EmulatorFactory:
    """Starts emulators over this test's tables and state folder:
    `async with emulator_factory(**config_overrides) as harness: ...`.

    `EMULATOR_STATE_DIR` names that folder for the test, so production clients
    pointed at the emulator (the notifier, `streamer push`) find its dev
    credentials there, as they find `.streamer/` next to `make run`."""
    private_pem, public_pem = rsa_keys
    monkeypatch.setenv("EMULATOR_STATE_DIR", str(tmp_path / "state"))

    @contextlib.asynccontextmanager
    async def start(
        *, settings: dict[str, Any] | None = None, **overrides: Any
    ) -> AsyncIterator[EmulatorHarness]:
        changes = {"jwt_public_key": public_pem} | (settings or {})
        core = dataclasses.replace(dynamodb_settings, **changes)
        defaults: dict[str, Any] = {
            "app": test_app,
            "port": 0,
            "http_port": 0,
            "state_dir": tmp_path / "state",
            "poll_interval_s": 0.02,
            "drain_timeout_s": 2.0,
            "create_tables": False,
            # The shared moto is the server the emulator embeds: its client, as `make run`.
            "dynamodb_client": "awsjson",
        }
        config = EmulatorConfig(settings=core, **(defaults | overrides))
        async with Emulator(config) as emulator:
            yield EmulatorHarness(emulator=emulator, private_pem=private_pem)

    return start


@pytest.fixture
async def emulator(
    request: pytest.FixtureRequest, emulator_factory: EmulatorFactory
) -> AsyncIterator[EmulatorHarness]:
    """A running emulator on free ports (see the module docstring for overrides)."""
    marker = request.node.get_closest_marker("emulator")
    overrides = dict(marker.kwargs) if marker else {}
    async with emulator_factory(**overrides) as harness:
        yield harness


@pytest.fixture
def steering() -> Steering:
    """The test app's gates and run counters, fresh for each test."""
    STEERING.reset()
    return STEERING
