"""The growth curves as one PNG: sync round trip against idle connections held,
async completion against requests in flight."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from bench.machine import Machine
from bench.metrics import Results

__all__ = ["plot_scaling"]


def _points(curve: dict[str, Any]) -> tuple[list[int], list[float]]:
    pairs = sorted((int(x), float(y)) for x, y in curve["points"].items())
    return [x for x, _ in pairs], [y for _, y in pairs]


def plot_scaling(
    results: Results, machine: Machine, path: Path, *, idle_target: int | None = None
) -> Path:
    """Draw both curves side by side into `path`; `idle_target` marks the connections goal."""
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    idle = results.curves.get("sync_rtt_vs_idle_connections")
    if idle is not None:
        xs, ys = _points(idle)
        left.plot(xs, ys, marker="o", label="echo through the emulator (p50)")
        raw = results.get("raw_ws_rtt_p50_us")
        if raw is not None:
            left.axhline(raw, linestyle=":", color="grey", label="bare websockets echo (p50)")
            left.axhline(2 * raw, linestyle="--", color="tab:red", label="goal: 2x bare")
        if idle_target is not None and max(xs) < idle_target:
            left.axvline(idle_target, linestyle="--", color="tab:orange", label="target held")
            left.set_xlim(right=idle_target * 1.05)
        left.set_xlabel("idle connections held")
        left.set_ylabel("round trip, µs")
        left.set_title("Sync round trip vs idle connections")
        left.set_ylim(bottom=0)
        left.legend(fontsize=8)
        left.grid(alpha=0.3)
    in_flight = results.curves.get("async_complete_vs_in_flight")
    if in_flight is not None:
        xs, ys = _points(in_flight)
        right.plot(xs, ys, marker="o", color="tab:green", label="send → complete (p50)")
        right.set_xscale("log")
        right.set_xticks(xs, [str(x) for x in xs])
        right.axhline(100, linestyle="--", color="tab:red", label="goal at 1 in flight: p99 100 ms")
        right.set_xlabel("requests in flight")
        right.set_ylabel("ms")
        right.set_title("echo_async completion vs load")
        if max(ys) > 20 * min(ys):
            right.set_yscale("log")
        else:
            right.set_ylim(bottom=0)
        right.legend(fontsize=8)
        right.grid(alpha=0.3)
    figure.suptitle(machine.one_line(), fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
