"""Async latency: send → acknowledgment and send → complete of `echo_async` at the
emulator's default poll interval, one at a time and then many in flight."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack

from bench.config import Bench
from bench.metrics import median, percentile
from bench.procs import ServerProcess
from bench.wsclient import Pipeline, Track, open_ws

WAIT_S = 60.0


def _check(track: Track) -> tuple[float, float]:
    if track.error is not None:
        raise RuntimeError(f"echo_async failed: {track.error}")
    if track.ack_ms is None or track.complete_ms is None:
        raise RuntimeError(f"echo_async {track.request_id} was not acknowledged and completed")
    return track.ack_ms, track.complete_ms


async def _sequential(bench: Bench, emulator: ServerProcess) -> None:
    sizes = bench.sizes
    async with open_ws(emulator.ws_url, bench.token("async")) as ws:
        pipe = Pipeline(ws)
        try:
            ack_all: list[float] = []
            done_all: list[float] = []
            ack_p50s: list[float] = []
            done_p50s: list[float] = []
            for _ in range(sizes.async_rounds):
                acks: list[float] = []
                dones: list[float] = []
                for _ in range(sizes.async_count):
                    track = await pipe.submit("echo_async", {"message": "hello"})
                    await asyncio.wait_for(track.done.wait(), WAIT_S)
                    ack_ms, done_ms = _check(track)
                    acks.append(ack_ms)
                    dones.append(done_ms)
                ack_p50s.append(percentile(acks, 50))
                done_p50s.append(percentile(dones, 50))
                ack_all += acks
                done_all += dones
        finally:
            await pipe.close()
    results = bench.results
    results.record("ack_p50_ms", median(ack_p50s))
    results.record("ack_p99_ms", percentile(ack_all, 99))
    results.record("async_complete_p50_ms", median(done_p50s))
    results.record("async_complete_p99_ms", percentile(done_all, 99))


async def _in_flight(bench: Bench, emulator: ServerProcess) -> dict[int, float]:
    sizes = bench.sizes
    points: dict[int, float] = {}
    async with AsyncExitStack() as stack:
        pipes: list[Pipeline] = []
        for index in range(sizes.in_flight_connections):
            ws = await stack.enter_async_context(
                open_ws(emulator.ws_url, bench.token(f"inflight-{index % 4}"))
            )
            pipe = Pipeline(ws)
            stack.push_async_callback(pipe.close)
            pipes.append(pipe)
        for level in sizes.in_flight:
            p50s: list[float] = []
            for _ in range(sizes.in_flight_rounds):
                used = pipes[: min(level, len(pipes))]
                tracks = await asyncio.gather(
                    *(
                        used[i % len(used)].submit("echo_async", {"message": "hello"})
                        for i in range(level)
                    )
                )
                await asyncio.wait_for(
                    asyncio.gather(*(t.done.wait() for t in tracks)), WAIT_S + level / 10
                )
                p50s.append(percentile([_check(t)[1] for t in tracks], 50))
            points[level] = median(p50s)
    return points


def run(bench: Bench, emulator: ServerProcess) -> None:
    """Record `ack_*`, `async_complete_*` and the in-flight growth curve."""
    asyncio.run(_sequential(bench, emulator))
    points = asyncio.run(_in_flight(bench, emulator))
    bench.results.record_curve(
        "async_complete_vs_in_flight",
        x_label="in flight",
        y_metric="async_complete_p50_ms",
        unit="ms",
        points=points,
    )
