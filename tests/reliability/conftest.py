"""Fixtures of the reliability suite: an in-process emulator running a test app
whose actions count their runs and can be held, started over fresh tables on the
shared moto server (or over a moto server the test controls); and the rule that
`slow` tests run only under `make soak` (STREAMER_SOAK=1)."""

from __future__ import annotations

import asyncio
import contextlib
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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    from rel_support import SOAK

    if SOAK:
        return
    skip = pytest.mark.skip(reason="full-size soak: run with `make soak` (STREAMER_SOAK=1)")
    for item in items:
        if "slow" in item.keywords and "tests/reliability" in str(item.path):
            item.add_marker(skip)


# -- the test app ----------------------------------------------------------------------


class Runs:
    """What tests use to observe and hold the reliability app's actions."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.count: Counter[str] = Counter()
        """Runs started per request id: a duplicate run shows as 2."""
        self.gates: dict[str, asyncio.Event] = {}
        self.started: dict[str, asyncio.Event] = {}

    def gate(self, name: str) -> asyncio.Event:
        return self.gates.setdefault(name, asyncio.Event())

    def started_event(self, request_id: str) -> asyncio.Event:
        return self.started.setdefault(request_id, asyncio.Event())

    def mark(self, request_id: str) -> None:
        self.count[request_id] += 1
        self.started_event(request_id).set()


RUNS = Runs()
rel_app = Streamer("reliability")


class StepsParams(BaseModel):
    steps: int = Field(default=5, ge=1, le=200)
    marker: str = ""


class GateParams(BaseModel):
    gate: str
    marker: str = ""


@rel_app.action("echo", mode="sync")
async def echo(req: Request[dict[str, Any]]) -> dict[str, Any]:
    """Answers with its payload."""
    return {"echo": req.payload}


# A timeout far above any round of the soak: a timed-out run is retried by design
# (at-least-once), and under a 1,000-connection burst the progress writes inside
# the action wait long enough to push a 60 s timeout (see RELIABILITY.md).
@rel_app.action("steps", mode="async", timeout=900)
async def steps(req: Request[StepsParams], progress: Progress) -> dict[str, Any]:
    """Reports `steps` progress updates, then returns a result carrying `marker`."""
    RUNS.mark(req.request_id)
    for step in range(1, req.payload.steps + 1):
        await progress.report(100 * step / req.payload.steps, f"step {step}")
    return {"done": req.payload.steps, "marker": f"result-{req.payload.marker}"}


@rel_app.action("gated", mode="async", timeout=60)
async def gated(req: Request[GateParams], progress: Progress) -> dict[str, Any]:
    """Reports 10 %, waits for its gate, reports 90 %, returns."""
    RUNS.mark(req.request_id)
    await progress.report(10, "waiting")
    await RUNS.gate(req.payload.gate).wait()
    await progress.report(90, "gate open")
    return {"gate": req.payload.gate, "marker": f"result-{req.payload.marker}"}


SHORT_TIMEOUT_S = 3.0


@rel_app.action("gated_short", mode="async", timeout=SHORT_TIMEOUT_S, max_retries=3)
async def gated_short(req: Request[GateParams], progress: Progress) -> dict[str, Any]:
    """`gated` with a short timeout, so its lease (timeout + grace) runs out quickly."""
    RUNS.mark(req.request_id)
    await progress.report(10, "waiting")
    await RUNS.gate(req.payload.gate).wait()
    return {"gate": req.payload.gate}


# -- the emulator ------------------------------------------------------------------------


@pytest.fixture(scope="session")
def rel_keys() -> tuple[str, str]:
    """One RSA key pair (private, public) for the session."""
    return generate_rsa_key_pair()


@pytest.fixture
def runs() -> Runs:
    """The app's run counters and gates, fresh for each test."""
    RUNS.reset()
    return RUNS


EmulatorStarter = Callable[..., contextlib.AbstractAsyncContextManager[EmulatorHarness]]


@pytest.fixture
def start_emulator(
    dynamodb_settings: Settings, rel_keys: tuple[str, str], tmp_path: Path, runs: Runs
) -> EmulatorStarter:
    """`async with start_emulator(settings={...}, **config) as harness:` starts the
    emulator on free ports over this test's tables (or over `base` settings)."""
    private_pem, public_pem = rel_keys

    @contextlib.asynccontextmanager
    async def start(
        *, settings: dict[str, Any] | None = None, base: Settings | None = None, **overrides: Any
    ) -> AsyncIterator[EmulatorHarness]:
        core = dataclasses.replace(
            base or dynamodb_settings, jwt_public_key=public_pem, **(settings or {})
        )
        fields: dict[str, Any] = {
            "settings": core,
            "app": rel_app,
            "port": 0,
            "http_port": 0,
            "state_dir": tmp_path / "state",
            "poll_interval_s": 0.02,
            "drain_timeout_s": 2.0,
            "create_tables": False,
            "sweep_interval_s": 0.25,
            # Every moto here is a local plain-HTTP one: the client `make run` uses on its
            # own, also through the outages (resets, refusals, restarts) these tests make.
            "dynamodb_client": "awsjson",
        }
        fields.update(overrides)
        async with Emulator(EmulatorConfig(**fields)) as emulator:
            yield EmulatorHarness(emulator=emulator, private_pem=private_pem)

    return start


@pytest.fixture
async def emulator(start_emulator: EmulatorStarter) -> AsyncIterator[EmulatorHarness]:
    """A running emulator with default settings."""
    async with start_emulator() as harness:
        yield harness
