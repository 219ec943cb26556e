"""Lambda cold start: fresh processes, alternating between the router entrypoint
and a bare boto3 handler building the same two clients; medians of each."""

from __future__ import annotations

import json
import subprocess
import sys

from bench.config import Bench
from bench.metrics import median
from bench.procs import REPO, python_env

LAMBDA_ENV = {
    "CONNECTIONS_TABLE": "streamer-connections-bench",
    "REQUESTS_TABLE": "streamer-requests-bench",
    "SUBSCRIPTIONS_TABLE": "streamer-subscriptions-bench",
    "WEBSOCKET_ENDPOINT": "https://abc123.execute-api.us-east-1.amazonaws.com/prod",
    "AWS_REGION": "us-east-1",
    "LOG_LEVEL": "WARNING",
}


def _cold_ms(side: str, env: dict[str, str]) -> float:
    done = subprocess.run(
        [sys.executable, "-m", "bench.coldstart", side],
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
