"""Idle connections: a holder process opens authenticated connections in parallel
batches up to each level; at each level the sync round trip is measured again,
and the emulator's resident memory per connection and the connect rate are taken.

Connecting has a time budget (`Sizes.connect_budget_s`): when it runs out the
scenario measures at the count reached and records that as `connections_held`.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from bench.config import Bench
from bench.metrics import MetricSpec, median, percentile
from bench.procs import CACHE_DIR, REPO, ServerProcess, python_env
from bench.scenarios.sync_rtt import ECHO_FRAME
from bench.wsclient import open_ws, rtt_round_us


class HolderProcess:
    """The `bench.holder` child, spoken to over its stdin/stdout."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, url: str, tokens_file: Path, concurrency: int) -> HolderProcess:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.holder", "--url", url, "--tokens", str(tokens_file),
            "--concurrency", str(concurrency),
            cwd=REPO, env=python_env(), stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        return cls(proc)

    async def command(self, line: str, timeout_s: float) -> dict[str, Any]:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write(line.encode() + b"\n")
        await self.proc.stdin.drain()
        reply = await asyncio.wait_for(self.proc.stdout.readline(), timeout_s)
        if not reply:
            raise RuntimeError(f"holder exited with {await self.proc.wait()} on {line!r}")
        body: dict[str, Any] = json.loads(reply)
        return body

    async def close(self) -> None:
        if self.proc.returncode is None:
            assert self.proc.stdin is not None
            self.proc.stdin.write(b"close\n")
            await self.proc.stdin.drain()
            try:
                await asyncio.wait_for(self.proc.wait(), 30)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


def _health_connections(emulator: ServerProcess) -> int | None:
    try:
        value = emulator.health().get("connections")
    except (OSError, ValueError):
        return None
    return value if isinstance(value, int) else None


MOTO_RSS = MetricSpec("moto_rss_per_connection_kb", "KB", note="database, not the emulator")


async def _measure(bench: Bench, emulator: ServerProcess, database: ServerProcess | None) -> None:
    sizes = bench.sizes
    target = max(sizes.idle_levels)
    tokens_file = CACHE_DIR / "holder-tokens.json"
    tokens_file.parent.mkdir(parents=True, exist_ok=True)
    tokens_file.write_text(json.dumps(bench.holder_tokens(target)))
    points: dict[int, float] = {}
    opened_total = 0
    connect_s = 0.0
    held = 0
    deadline = time.monotonic() + sizes.connect_budget_s
    async with open_ws(emulator.ws_url, bench.token("rtt-idle")) as ws:
        await rtt_round_us(ws, ECHO_FRAME, 0, sizes.rtt_warmup)
        rss_before = emulator.rss_bytes()
        db_before = database.rss_bytes() if database is not None else 0
        holder = await HolderProcess.start(emulator.ws_url, tokens_file, sizes.connect_concurrency)
        try:
            for level in sorted(sizes.idle_levels):
                if level > held:
                    budget_s = deadline - time.monotonic()
                    if budget_s <= 0:
                        break
                    reply = await holder.command(
                        f"open {level - held} {budget_s:.1f}", timeout_s=budget_s + 180
                    )
                    opened_total += int(reply["opened"])
                    connect_s += float(reply["elapsed_s"])
                    held = int(reply["held"])
                    print(
                        f"    idle connections: {held:,} held after {connect_s:.0f} s "
                        f"({reply['failed']} failed {reply['errors'] or ''}"
                        f"{', time budget spent' if reply['skipped'] else ''})",
                        flush=True,
                    )
                p50s = [
                    percentile(
                        await rtt_round_us(ws, ECHO_FRAME, sizes.idle_rtt_count, sizes.rtt_warmup),
                        50,
                    )
                    for _ in range(sizes.idle_rtt_rounds)
                ]
                # Short of the level when the budget ran out: the point is where it got.
                points[min(level, held)] = median(p50s)
            rss_after = emulator.rss_bytes()
            db_after = database.rss_bytes() if database is not None else 0
            held = int((await holder.command("status", timeout_s=60))["held"])
            seen = _health_connections(emulator)
            if seen:
                # The emulator's own count, less the measuring connection.
                held = min(held, seen - 1)
        finally:
            await holder.close()
    results = bench.results
    results.record("connections_held", held)
    results.record("rss_per_connection_kb", (rss_after - rss_before) / max(held, 1) / 1024)
    results.record("connect_rate_per_s", opened_total / connect_s if connect_s else 0.0)
    if database is not None:
        results.record(
            "moto_rss_per_connection_kb", (db_after - db_before) / max(held, 1) / 1024, MOTO_RSS
        )
    results.record_curve(
        "sync_rtt_vs_idle_connections",
        x_label="idle",
        y_metric="sync_rtt_p50_us",
        unit="us",
        points=points,
    )


def run(bench: Bench, emulator: ServerProcess, database: ServerProcess | None = None) -> None:
    """Record `connections_held`, `rss_per_connection_kb`, `connect_rate_per_s` and the
    sync round trip against idle connections held.

    With `database` (a standalone moto the emulator uses), the emulator's memory
    is its own, and the database's growth is recorded apart.
    """
    asyncio.run(_measure(bench, emulator, database))
