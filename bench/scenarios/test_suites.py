"""`make test`'s wall time, suite by suite: each `tests/<suite>` run alone by pytest
(and the TypeScript client's Node tests), so a suite that gets slower shows up as a
number in `bench/results/latest.json`. Full runs only: it is the whole test suite."""

from __future__ import annotations

import subprocess
import sys
import time

from bench.config import Bench
from bench.metrics import MetricSpec
from bench.procs import REPO

SUITES = ("unit", "contract", "integration", "reliability", "deployment")
TYPESCRIPT = REPO / "clients" / "typescript"
TIMEOUT_S = 1800


def _spec(suite: str) -> MetricSpec:
    return MetricSpec(f"test_wall_s_{suite}", "s", note="make test, this suite alone")


def _timed(argv: list[str], label: str) -> float:
    started = time.monotonic()
    done = subprocess.run(
        argv, cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT_S, check=False
    )
    wall = time.monotonic() - started
    if done.returncode != 0:
        tail = (done.stdout.strip().splitlines() or ["(no output)"])[-1]
        raise RuntimeError(f"{label} failed (exit {done.returncode}): {tail}")
    print(f"    {label}: {wall:.1f} s", flush=True)
    return wall


def run(bench: Bench) -> None:
    """Record `test_wall_s_<suite>` for each suite and `test_wall_s_total`."""
    results = bench.results
    total = 0.0
    for suite in SUITES:
        argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"tests/{suite}"]
        wall = _timed(argv, f"tests/{suite}")
        results.record(f"test_wall_s_{suite}", wall, _spec(suite))
        total += wall
    if (TYPESCRIPT / "node_modules").is_dir():
        wall = _timed(["npm", "--prefix", str(TYPESCRIPT), "test", "--silent"], "typescript")
        results.record("test_wall_s_typescript", wall, _spec("typescript"))
        total += wall
    results.record("test_wall_s_total", total, _spec("total"))
