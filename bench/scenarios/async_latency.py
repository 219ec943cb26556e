"""Async latency: send → acknowledgment and send → complete of `echo_async` at the
emulator's default poll interval, one at a time and then many in flight; and the
floor those are judged against, sequential `put_item` on the emulator's own moto."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from contextlib import AsyncExitStack
from dataclasses import dataclass

import aioboto3

from bench.config import Bench
from bench.metrics import MetricSpec, median, percentile
from bench.procs import ServerProcess
from bench.wsclient import Pipeline, Track, open_ws

WAIT_S = 60.0
SCALING_AT = 500
"""The in-flight level `async_scaling_500` and `async_completions_per_put` are taken at."""
PUTS = 200
"""Sequential `put_item` calls per round of the floor."""
PUT_RATE = MetricSpec("put_item_per_s", "calls/s", note="floor: sequential, the emulator's moto")
COMPLETIONS = MetricSpec("async_completions_per_s_at_500", "req/s")
EMULATOR_CPU = MetricSpec(
    "async_emulator_cpu_ms_per_request", "ms", note="at 500 in flight, the event-loop thread"
)
MOTO_CPU = MetricSpec("async_moto_cpu_ms_per_request", "ms", note="at 500 in flight, its moto")
MOTO_BUSY = MetricSpec(
    "async_moto_busy_at_500", "x", note="moto's CPU ÷ the burst's wall time (1 = saturated)"
)
_DYNAMODB_LINE = re.compile(r"DynamoDB\s+(http://\S+)")


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


def _moto_endpoint(emulator: ServerProcess) -> str:
    """The embedded moto's URL, from the emulator's start-up banner."""
    found = _DYNAMODB_LINE.search(emulator.log_path.read_text(errors="replace"))
    if found is None:
        raise RuntimeError(f"no DynamoDB endpoint in {emulator.log_path}")
    return found.group(1)


async def _put_rate(endpoint: str, rounds: int) -> float:
    """Sequential `put_item`/s on `endpoint`, one client reused, median of `rounds`."""
    session = aioboto3.Session(
        aws_access_key_id="bench", aws_secret_access_key="bench", region_name="us-east-1"
    )
    table = f"bench-floor-{uuid.uuid4().hex[:8]}"
    rates: list[float] = []
    async with session.client("dynamodb", endpoint_url=endpoint) as client:
        await client.create_table(
            TableName=table,
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        try:
            for index in range(rounds):
                started = time.perf_counter()
                for i in range(PUTS):
                    item = {"pk": {"S": f"{index}-{i}"}, "body": {"S": "hello"}}
                    await client.put_item(TableName=table, Item=item)
                rates.append(PUTS / (time.perf_counter() - started))
        finally:
            await client.delete_table(TableName=table)
    return median(rates)


@dataclass
class _Burst:
    """One round at `SCALING_AT`: completions/s, and CPU per request of the emulator's
    event-loop thread and of its moto, with moto's share of the wall time."""

    completions_per_s: float
    emulator_cpu_ms: float
    moto_cpu_ms: float
    moto_busy: float


async def _in_flight(
    bench: Bench, emulator: ServerProcess, bursts: list[_Burst]
) -> dict[int, float]:
    """The p50 per level; `bursts` gets each round's figures at `SCALING_AT`."""
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
                loop_before, moto_before = (
                    emulator.cpu_seconds()[0],
                    emulator.children_cpu_seconds(),
                )
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
                if level == SCALING_AT:
                    loop_s = emulator.cpu_seconds()[0] - loop_before
                    moto_s = emulator.children_cpu_seconds() - moto_before
                    first = min(t.sent_ns for t in tracks)
                    last = max(t.done_ns or first for t in tracks)
                    wall_s = (last - first) / 1e9
                    bursts.append(
                        _Burst(
                            completions_per_s=level / wall_s,
                            emulator_cpu_ms=loop_s / level * 1e3,
                            moto_cpu_ms=moto_s / level * 1e3,
                            moto_busy=moto_s / wall_s,
                        )
                    )
            points[level] = median(p50s)
    return points


def run(bench: Bench, emulator: ServerProcess) -> None:
    """Record `ack_*`, `async_complete_*`, the in-flight growth curve, and its ratios:
    `async_scaling_500` (p50 at 500 in flight ÷ p50 at 1) and `async_completions_per_put`
    (completions/s at 500 in flight ÷ sequential `put_item`/s on the same moto, the
    floor measured before and after the curve)."""
    asyncio.run(_sequential(bench, emulator))
    endpoint = _moto_endpoint(emulator)
    put_before = asyncio.run(_put_rate(endpoint, 1))
    bursts: list[_Burst] = []
    points = asyncio.run(_in_flight(bench, emulator, bursts))
    put_rate = median([put_before, asyncio.run(_put_rate(endpoint, 1))])
    results = bench.results
    results.record(PUT_RATE.name, put_rate, PUT_RATE)
    if SCALING_AT in points and 1 in points:
        results.record("async_scaling_500", points[SCALING_AT] / points[1])
    if bursts:
        completions = median([b.completions_per_s for b in bursts])
        results.record(COMPLETIONS.name, completions, COMPLETIONS)
        results.record("async_completions_per_put", completions / put_rate)
        # Which process a burst waits on: moto near 1 is the database, not the emulator.
        results.record(EMULATOR_CPU.name, median([b.emulator_cpu_ms for b in bursts]), EMULATOR_CPU)
        results.record(MOTO_CPU.name, median([b.moto_cpu_ms for b in bursts]), MOTO_CPU)
        results.record(MOTO_BUSY.name, median([b.moto_busy for b in bursts]), MOTO_BUSY)
    bench.results.record_curve(
        "async_complete_vs_in_flight",
        x_label="in flight",
        y_metric="async_complete_p50_ms",
        unit="ms",
        points=points,
    )
