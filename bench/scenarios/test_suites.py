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


def _timed(commands: list[list[str]], label: str) -> tuple[float, str | None]:
    """The wall time of one suite's commands, run in turn until one fails, and why it
    failed (None when they all passed)."""
    started = time.monotonic()
    failure = None
    for argv in commands:
        done = subprocess.run(
            argv, cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT_S, check=False
        )
        if done.returncode != 0:
            failure = f"{label} failed (exit {done.returncode}): {_why(done.stdout, done.stderr)}"
            break
    wall = time.monotonic() - started
    print(f"    {label}: {wall:.1f} s{'' if failure is None else ' (FAILED)'}", flush=True)
    return wall, failure


def _why(stdout: str, stderr: str) -> str:
    """The line that says what failed: node's first `not ok`, else pytest's summary
    (the last line out), else the last line of the errors."""
    lines = stdout.strip().splitlines()
    failed = [line for line in lines if line.startswith("not ok")]
    if failed:
        return failed[0]
    return (lines or stderr.strip().splitlines() or ["(no output)"])[-1]


def run(bench: Bench) -> None:
    """Record `test_wall_s_<suite>` for each suite and `test_wall_s_total`; a suite
    that fails is still timed, and the scenario fails once every suite has run."""
    results = bench.results
    total = 0.0
    failures: list[str] = []
    suites = [
        (
            suite,
            [[sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"tests/{suite}"]],
        )
        for suite in SUITES
    ]
    if (TYPESCRIPT / "node_modules").is_dir():
        # As `make test` runs it: the tests import the build, so build first.
        npm = ["npm", "--prefix", str(TYPESCRIPT)]
        suites.append(("typescript", [[*npm, "run", "build"], [*npm, "test", "--silent"]]))
    for suite, commands in suites:
        label = suite if suite == "typescript" else f"tests/{suite}"
        wall, failure = _timed(commands, label)
        results.record(f"test_wall_s_{suite}", wall, _spec(suite))
        total += wall
        if failure is not None:
            failures.append(failure)
    results.record("test_wall_s_total", total, _spec("total"))
    if failures:
        raise RuntimeError("; ".join(failures))
