"""Sync round trip: `echo` through the emulator against a bare websockets echo
server, same client, same frame, rounds alternating between the two."""

from __future__ import annotations

import asyncio
import json

from bench.config import Bench
from bench.metrics import median, percentile
from bench.procs import ServerProcess
from bench.wsclient import open_ws, rtt_round_us

ECHO_FRAME = json.dumps({"action": "echo", "payload": {"message": "hello"}})


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
        for index in range(sizes.rtt_rounds):
            # Alternate which server goes first so drift over the run hits both.
            order = ("raw", "emu") if index % 2 == 0 else ("emu", "raw")
            for side in order:
                ws = raw_ws if side == "raw" else emu_ws
                samples = await rtt_round_us(ws, ECHO_FRAME, sizes.rtt_count, sizes.rtt_warmup)
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


def run(bench: Bench, raw: ServerProcess, emulator: ServerProcess) -> None:
    """Record `raw_ws_rtt_p50_us`, `sync_rtt_p50_us`, `sync_rtt_p99_us`, `sync_rtt_ratio`."""
    asyncio.run(_measure(bench, raw, emulator))
