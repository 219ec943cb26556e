"""Server push fan-out: a holder process keeps N connections of one tenant open and
reads them all; an action pushes one notification to that tenant (`req.push`, the
emulator's own notifier, the index on a standalone moto), and the time from the
request to the last socket's arrival is `push_fanout_s_at_N`.

After each push a second one (a fence) goes to the same tenant; once every socket
has the fence, any socket without the first notification lost it and any that
got it twice counts as a duplicate (a socket's frames arrive in order).
"""

from __future__ import annotations

import asyncio
import json
import time

from websockets.asyncio.client import ClientConnection

from bench.config import Bench
from bench.metrics import Goal, MetricSpec
from bench.procs import CACHE_DIR, ServerProcess
from bench.scenarios.connections import HolderProcess
from bench.wsclient import open_ws

TENANT = "bench"
"""The holder's tokens are of this tenant; the pushing client is of another."""
GOAL_AT = 10_000
GOAL_S = 2.0


def _fanout_spec(level: int) -> MetricSpec:
    goal = Goal("<=", GOAL_S) if level == GOAL_AT else None
    return MetricSpec(f"push_fanout_s_at_{level}", "s", goal)


async def _push(ws: ClientConnection, topic: str) -> dict[str, int]:
    frame = {
        "action": "push_tenant",
        "payload": {"tenant": TENANT, "topic": topic, "data": {"topic": topic, "n": 1}},
    }
    await ws.send(json.dumps(frame))
    reply = json.loads(await asyncio.wait_for(ws.recv(), 960))
    if reply.get("type") != "response":
        raise RuntimeError(f"push_tenant answered {reply}")
    data: dict[str, int] = reply["data"]
    return data


async def _measure(bench: Bench, emulator: ServerProcess) -> None:
    sizes = bench.sizes
    levels = sorted(sizes.push_levels)
    tokens_file = CACHE_DIR / "push-holder-tokens.json"
    tokens_file.parent.mkdir(parents=True, exist_ok=True)
    tokens_file.write_text(json.dumps(bench.holder_tokens(max(levels))))
    lost = duplicates = 0
    held = 0
    holder = await HolderProcess.start(emulator.ws_url, tokens_file, sizes.connect_concurrency)
    try:
        async with open_ws(emulator.ws_url, bench.token("pusher", tenant="bench-control")) as ws:
            for level in levels:
                if level > held:
                    reply = await holder.command(f"open {level - held}", timeout_s=1800)
                    held = int(reply["held"])
                    if held < level:
                        raise RuntimeError(f"only {held} of {level} connections opened: {reply}")
                await holder.command("watch", timeout_s=60)
                topic, fence = f"news-{level}", f"fence-{level}"
                started = time.time()
                summary = await _push(ws, topic)
                arrived = await holder.command(f"wait {topic} 900", timeout_s=960)
                await _push(ws, fence)
                await holder.command(f"wait {fence} 900", timeout_s=960)
                final = await holder.command(f"wait {topic} 0", timeout_s=60)
                reached, total = int(final["reached"]), int(final["total"])
                lost += held - reached
                duplicates += total - reached
                first_at, last_at = arrived["first_at"], arrived["last_at"]
                fanout_s = (float(last_at) - started) if last_at is not None else float("nan")
                first_s = (float(first_at) - started) if first_at is not None else float("nan")
                print(
                    f"    push to {held:,} connections: {fanout_s:.2f} s to the last socket, "
                    f"{first_s:.2f} s to the first (summary {summary}, reached {reached:,}, "
                    f"total {total:,})",
                    flush=True,
                )
                bench.results.record(f"push_fanout_s_at_{level}", fanout_s, _fanout_spec(level))
                bench.results.record(
                    f"push_first_s_at_{level}",
                    first_s,
                    MetricSpec(f"push_first_s_at_{level}", "s", note="to the first socket"),
                )
    finally:
        await holder.close()
    bench.results.record("push_lost", lost)
    bench.results.record("push_duplicates", duplicates)


def run(bench: Bench, emulator: ServerProcess) -> None:
    """Record `push_fanout_s_at_N` for each of `sizes.push_levels`, `push_lost` and
    `push_duplicates`."""
    asyncio.run(_measure(bench, emulator))
