"""Progress throughput: many requests at once, each streaming numbered progress
reports with throttling off; counts what arrived, what was lost, what came out of order.
The floor is the bare websockets server pushing the same frames to the same number of
sockets (`bench.echo_server`), rounds alternating with the emulator's."""

from __future__ import annotations

import asyncio
import itertools
import time
from contextlib import AsyncExitStack

from bench.config import Bench
from bench.metrics import MetricSpec, median
from bench.procs import ServerProcess
from bench.wsclient import Pipeline, Track, open_ws

RAW_RATE = MetricSpec("raw_ws_push_msgs_per_s", "msg/s", note="baseline")


def _out_of_order(track: Track) -> int:
    seqs = track.progress_seqs
    return sum(1 for before, after in itertools.pairwise(seqs) if after <= before)


async def _burst(bench: Bench, pipes: list[Pipeline]) -> tuple[float, int, int]:
    sizes = bench.sizes
    started = time.perf_counter_ns()
    tracks = await asyncio.gather(
        *(p.submit("stream_progress", {"count": sizes.progress_reports}) for p in pipes)
    )
    await asyncio.wait_for(
        asyncio.gather(*(t.done.wait() for t in tracks)), 60 + sizes.progress_reports / 10
    )
    finished = max(t.done_ns or 0 for t in tracks)
    for track in tracks:
        if track.error is not None:
            raise RuntimeError(f"stream_progress failed: {track.error}")
    received = sum(len(t.progress_seqs) for t in tracks)
    expected = len(tracks) * sizes.progress_reports
    lost = sum(max(0, sizes.progress_reports - len(set(t.progress_seqs))) for t in tracks)
    disordered = sum(_out_of_order(t) for t in tracks)
    rate = received / ((finished - started) / 1e9)
    if received > expected:
        disordered += received - expected  # duplicates
    return rate, lost, disordered


async def _measure(bench: Bench, emulator: ServerProcess, raw: ServerProcess) -> None:
    sizes = bench.sizes
    rates: list[float] = []
    raw_rates: list[float] = []
    lost_total = 0
    disordered_total = 0
    async with AsyncExitStack() as stack:
        pipes: list[Pipeline] = []
        raw_pipes: list[Pipeline] = []
        for index in range(sizes.progress_requests):
            ws = await stack.enter_async_context(
                open_ws(emulator.ws_url, bench.token(f"progress-{index % 5}"))
            )
            raw_ws = await stack.enter_async_context(open_ws(raw.ws_url))
            for into, socket in ((pipes, ws), (raw_pipes, raw_ws)):
                pipe = Pipeline(socket)
                stack.push_async_callback(pipe.close)
                into.append(pipe)
        for index in range(sizes.progress_rounds):
            # Alternate which server goes first so drift over the run hits both.
            for side in ("emu", "raw") if index % 2 == 0 else ("raw", "emu"):
                rate, lost, disordered = await _burst(bench, pipes if side == "emu" else raw_pipes)
                if side == "raw":
                    raw_rates.append(rate)
                    continue
                rates.append(rate)
                lost_total += lost
                disordered_total += disordered
    bench.results.record("progress_msgs_per_s", median(rates))
    bench.results.record(RAW_RATE.name, median(raw_rates), RAW_RATE)
    bench.results.record("progress_push_ratio", median(rates) / median(raw_rates))
    bench.results.record("progress_lost", lost_total)
    bench.results.record("progress_out_of_order", disordered_total)


def run(bench: Bench, emulator: ServerProcess, raw: ServerProcess) -> None:
    """Record `progress_msgs_per_s`, `progress_lost`, `progress_out_of_order`, the bare
    server's `raw_ws_push_msgs_per_s` and `progress_push_ratio`."""
    asyncio.run(_measure(bench, emulator, raw))
