"""Sync round trip: `echo` through the emulator against a bare websockets echo
server, same client, same frame, rounds alternating between the two."""

from __future__ import annotations

import asyncio
import json

from bench.config import Bench
from bench.metrics import MetricSpec, median, percentile
from bench.procs import ServerProcess
from bench.wsclient import open_ws, rtt_round_us

ECHO_FRAME = json.dumps({"action": "echo", "payload": {"message": "hello"}})
RAW_CPU = MetricSpec("raw_ws_cpu_per_msg_us", "us", note="server CPU per round trip")
SYNC_CPU = MetricSpec("sync_cpu_per_msg_us", "us", note="server CPU per round trip")


async def _measure(bench: Bench, raw: ServerProcess, emulator: ServerProcess) -> None:
    sizes = bench.sizes
    async with (
        open_ws(raw.ws_url) as raw_ws,
        open_ws(emulator.ws_url, bench.token("rtt")) as emu_ws,
    ):
        await emu_ws.send(ECHO_FRAME)
        first = json.loads(await emu_ws.recv())
        if first.get("type") != "response" or not first.get("success"):
            raise RuntimeError(f"echo did not answer a successful response: {first}")
        raw_p50s: list[float] = []
        emu_p50s: list[float] = []
        emu_all: list[float] = []
        cpu_s = {"raw": 0.0, "emu": 0.0}
        for index in range(sizes.rtt_rounds):
            # Alternate which server goes first so drift over the run hits both.
            order = ("raw", "emu") if index % 2 == 0 else ("emu", "raw")
            for side in order:
                ws, server = (raw_ws, raw) if side == "raw" else (emu_ws, emulator)
                cpu_before = server.cpu_seconds()[1]
                samples = await rtt_round_us(ws, ECHO_FRAME, sizes.rtt_count, sizes.rtt_warmup)
                cpu_s[side] += server.cpu_seconds()[1] - cpu_before
                if side == "raw":
                    raw_p50s.append(percentile(samples, 50))
                else:
                    emu_p50s.append(percentile(samples, 50))
                    emu_all.extend(samples)
    raw_p50 = median(raw_p50s)
    sync_p50 = median(emu_p50s)
    results = bench.results
    results.record("raw_ws_rtt_p50_us", raw_p50)
    results.record("sync_rtt_p50_us", sync_p50)
    results.record("sync_rtt_p99_us", percentile(emu_all, 99))
    results.record("sync_rtt_ratio", sync_p50 / raw_p50)
    # CPU is steadier than wall time on a shared box (warm-up frames included).
    frames = sizes.rtt_rounds * (sizes.rtt_count + sizes.rtt_warmup)
    results.record(RAW_CPU.name, cpu_s["raw"] / frames * 1e6, RAW_CPU)
    results.record(SYNC_CPU.name, cpu_s["emu"] / frames * 1e6, SYNC_CPU)


def run(bench: Bench, raw: ServerProcess, emulator: ServerProcess) -> None:
    """Record `raw_ws_rtt_p50_us`, `sync_rtt_p50_us`, `sync_rtt_p99_us`, `sync_rtt_ratio`,
    and each server's CPU per round trip."""
    asyncio.run(_measure(bench, raw, emulator))
