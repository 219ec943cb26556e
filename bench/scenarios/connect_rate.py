"""Connect rate: authenticated handshakes to the emulator against handshakes to a bare
websockets server, same client, `connect_concurrency` in flight, rounds alternating.
Each round starts once the server it timed last is quiet again, so no round pays for
the previous one's closes (the emulator's disconnects delete records)."""

from __future__ import annotations

import asyncio
import time
from contextlib import AsyncExitStack

from bench.config import Bench
from bench.metrics import MetricSpec, median
from bench.procs import ServerProcess
from bench.wsclient import open_ws

CONNECTS = 320
"""Handshakes per round and side."""
ROUNDS = 5
RAW_RATE = MetricSpec("raw_ws_connect_per_s", "conn/s", note="baseline")
EMULATOR_RATE = MetricSpec("emulator_connect_per_s", "conn/s")


async def _round(url: str, tokens: list[str | None], in_flight: int) -> float:
    """Handshakes/s opening one connection per token, `in_flight` at once; all closed after."""
    gate = asyncio.Semaphore(in_flight)
    async with AsyncExitStack() as stack:

        async def connect(token: str | None) -> None:
            async with gate:
                await stack.enter_async_context(open_ws(url, token))

        started = time.perf_counter()
        await asyncio.gather(*(connect(token) for token in tokens))
        return len(tokens) / (time.perf_counter() - started)


async def _measure(bench: Bench, raw: ServerProcess, emulator: ServerProcess) -> None:
    in_flight = bench.sizes.connect_concurrency
    users = max(1, CONNECTS // (bench.sizes.connections_per_user or 1))
    tokens: list[str | None] = [bench.token(f"connect-{i % users}") for i in range(CONNECTS)]
    rates: dict[str, list[float]] = {"raw": [], "emulator": []}
    for index in range(ROUNDS):
        order = ("raw", "emulator") if index % 2 == 0 else ("emulator", "raw")
        for side in order:
            if side == "raw":
                rates[side].append(await _round(raw.ws_url, [None] * CONNECTS, in_flight))
            else:
                rates[side].append(await _round(emulator.ws_url, tokens, in_flight))
            await (raw if side == "raw" else emulator).quiet()
    raw_rate, emu_rate = median(rates["raw"]), median(rates["emulator"])
    results = bench.results
    results.record(RAW_RATE.name, raw_rate, RAW_RATE)
    results.record(EMULATOR_RATE.name, emu_rate, EMULATOR_RATE)
    results.record("connect_rate_ratio", emu_rate / raw_rate)


def run(bench: Bench, raw: ServerProcess, emulator: ServerProcess) -> None:
    """Record `raw_ws_connect_per_s`, `emulator_connect_per_s` and `connect_rate_ratio`."""
    asyncio.run(_measure(bench, raw, emulator))
