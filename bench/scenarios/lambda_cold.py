"""Lambda cold start: fresh processes, alternating between the router entrypoint
and a bare boto3 handler building the same two clients; medians of each.

Both run from the project's virtualenv (bytecode cached), which isolates what
importing and building cost. As an extra figure, when an interpreter of the
bundle's Python version (`BENCH_LAMBDA_PYTHON`, else found on PATH or under
pyenv) and the built bundle are at hand, the router also runs from the unpacked
zip with no `.pyc` (as Lambda's read-only `/var/task` runs it):
`lambda_cold_bundle_init_ms`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path

from bench.config import Bench
from bench.metrics import MetricSpec, median
from bench.procs import CACHE_DIR, REPO, python_env
from bench.scenarios.lambda_zip import bundle_options, cached_bundle

BUNDLE_COLD = MetricSpec("lambda_cold_bundle_init_ms", "ms", note="Lambda-like, no .pyc")
BUNDLE_RATIO = MetricSpec("lambda_cold_bundle_ratio", "x", note="vs boto3_cold_init_ms")
UNPACKED = CACHE_DIR / "lambda-unpacked"

LAMBDA_ENV = {
    "CONNECTIONS_TABLE": "streamer-connections-bench",
    "REQUESTS_TABLE": "streamer-requests-bench",
    "SUBSCRIPTIONS_TABLE": "streamer-subscriptions-bench",
    "WEBSOCKET_ENDPOINT": "https://abc123.execute-api.us-east-1.amazonaws.com/prod",
    "AWS_REGION": "us-east-1",
    "LOG_LEVEL": "WARNING",
}


def _cold_ms(side: str, env: dict[str, str], argv: Sequence[str] | None = None) -> float:
    done = subprocess.run(
        list(argv or [sys.executable, "-m", "bench.coldstart", side]),
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"cold start ({side}) failed:\n{done.stderr[-2000:]}")
    last = done.stdout.strip().splitlines()[-1]
    return float(json.loads(last)["init_ms"])


def run(bench: Bench) -> None:
    """Record `lambda_cold_init_ms`, `boto3_cold_init_ms`, `lambda_cold_ratio`."""
    env = python_env({**LAMBDA_ENV, "JWT_PUBLIC_KEY": bench.public_pem})
    env.pop("DYNAMODB_ENDPOINT_URL", None)
    # One unrecorded pair first: it fills the page cache for both sides.
    _cold_ms("streamer", env)
    _cold_ms("boto3", env)
    ours: list[float] = []
    bare: list[float] = []
    for index in range(bench.sizes.cold_rounds):
        order = ("streamer", "boto3") if index % 2 == 0 else ("boto3", "streamer")
        for side in order:
            (ours if side == "streamer" else bare).append(_cold_ms(side, env))
    lambda_ms = median(ours)
    boto3_ms = median(bare)
    bench.results.record("lambda_cold_init_ms", lambda_ms)
    bench.results.record("boto3_cold_init_ms", boto3_ms)
    bench.results.record("lambda_cold_ratio", lambda_ms / boto3_ms)
    bundle_argv = _bundle_argv()
    if bundle_argv is not None:
        bundle_ms = median(
            _cold_ms("streamer", env, bundle_argv) for _ in range(bench.sizes.bundle_cold_rounds)
        )
        bench.results.record(BUNDLE_COLD.name, bundle_ms, BUNDLE_COLD)
        bench.results.record(BUNDLE_RATIO.name, bundle_ms / boto3_ms, BUNDLE_RATIO)


def _target_python() -> str | None:
    """An interpreter of the bundle's Python version that really runs (pyenv shims may not)."""
    version = str(bundle_options()["python_version"])
    candidates = [os.environ.get("BENCH_LAMBDA_PYTHON", ""), shutil.which(f"python{version}") or ""]
    candidates += sorted(
        str(p) for p in Path.home().glob(f".pyenv/versions/{version}*/bin/python{version}")
    )
    for candidate in filter(None, candidates):
        works = subprocess.run(
            [candidate, "-c", "pass"], capture_output=True, timeout=30, check=False
        )
        if works.returncode == 0:
            return candidate
    return None


def _bundle_argv() -> list[str] | None:
    """The router from the unpacked bundle under the bundle's Python, or None without either."""
    python = _target_python()
    bundle = cached_bundle()
    if python is None or bundle is None:
        return None
    stamp = UNPACKED / ".from"
    if not stamp.exists() or stamp.read_text() != str(bundle.stat().st_mtime_ns):
        if UNPACKED.exists():
            shutil.rmtree(UNPACKED)
        with zipfile.ZipFile(bundle) as archive:
            archive.extractall(UNPACKED)
        stamp.write_text(str(bundle.stat().st_mtime_ns))
    script = Path(__file__).resolve().parent.parent / "coldstart.py"
    return [python, "-I", "-S", "-B", str(script), "streamer", "--path", str(UNPACKED)]
