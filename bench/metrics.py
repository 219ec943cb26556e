"""Metric names, units and goals, percentiles, and the results file and table."""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

__all__ = [
    "METRICS",
    "Goal",
    "MetricSpec",
    "Results",
    "median",
    "percentile",
]

Comparison = Literal["<=", ">=", "=="]


@dataclass(frozen=True, slots=True)
class Goal:
    """A target a metric should meet, such as `<= 2.0`.

    Args:
        op: how the value compares with the threshold.
        threshold: the number it is compared with.
    """

    op: Comparison
    threshold: float

    def is_met(self, value: float) -> bool:
        """Whether `value` meets the goal."""
        if self.op == "<=":
            return value <= self.threshold
        if self.op == ">=":
            return value >= self.threshold
        return value == self.threshold

    @classmethod
    def parse(cls, text: str) -> Goal | None:
        """The goal `str(goal)` wrote (`<= 2`), or None for any other text (a note):
        a goal a scenario gave its own metric survives a results file."""
        op, _, threshold = text.partition(" ")
        if op not in ("<=", ">=", "=="):
            return None
        try:
            return cls(op, float(threshold))  # type: ignore[arg-type]
        except ValueError:
            return None

    def __str__(self) -> str:
        threshold = self.threshold
        text = f"{int(threshold)}" if float(threshold).is_integer() else f"{threshold}"
        return f"{self.op} {text}"


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One metric other tools read: a fixed name, a unit, and maybe a goal.

    Args:
        name: the fixed name (the key in the results file).
        unit: the unit of the value.
        goal: the target, or None for a figure that is only reported.
        note: the goal column's text when there is no goal ("baseline", "").
    """

    name: str
    unit: str
    goal: Goal | None = None
    note: str = ""

    @property
    def goal_text(self) -> str:
        return str(self.goal) if self.goal is not None else self.note


_SPECS = (
    MetricSpec("raw_ws_rtt_p50_us", "us", note="baseline"),
    MetricSpec("sync_rtt_p50_us", "us"),
    MetricSpec("sync_rtt_p99_us", "us"),
    MetricSpec("sync_rtt_ratio", "x", Goal("<=", 1.5)),
    MetricSpec("ack_p50_ms", "ms"),
    MetricSpec("ack_p99_ms", "ms", Goal("<=", 15)),
    MetricSpec("async_complete_p50_ms", "ms"),
    MetricSpec("async_complete_p99_ms", "ms", Goal("<=", 100)),
    MetricSpec("async_scaling_500", "x", Goal("<=", 15)),
    MetricSpec("async_completions_per_put", "x", Goal(">=", 1.0)),
    MetricSpec("progress_msgs_per_s", "msg/s", Goal(">=", 5000)),
    MetricSpec("progress_push_ratio", "x", Goal(">=", 0.25)),
    MetricSpec("progress_lost", "msgs", Goal("==", 0)),
    MetricSpec("progress_out_of_order", "msgs", Goal("==", 0)),
    MetricSpec("connections_held", "connections", Goal(">=", 10_000)),
    MetricSpec("rss_per_connection_kb", "KB", Goal("<=", 40)),
    MetricSpec("connect_rate_per_s", "conn/s"),
    MetricSpec("connect_rate_ratio", "x", Goal(">=", 0.5)),
    MetricSpec("push_lost", "msgs", Goal("==", 0)),
    MetricSpec("push_duplicates", "msgs", Goal("==", 0)),
    MetricSpec("lambda_cold_init_ms", "ms"),
    MetricSpec("boto3_cold_init_ms", "ms", note="baseline"),
    MetricSpec("lambda_cold_ratio", "x", note="from the virtualenv"),
    MetricSpec("lambda_bundle_cold_ms", "ms", note="unpacked zip, -I -S -B"),
    MetricSpec("boto3_bundle_cold_ms", "ms", note="baseline: Lambda's boto3"),
    MetricSpec("lambda_bundle_cold_ratio", "x", Goal("<=", 1.5)),
    MetricSpec("lambda_zip_mb", "MB", Goal("<=", 16)),
    MetricSpec("lambda_unzipped_mb", "MB", Goal("<=", 60)),
)
METRICS: Mapping[str, MetricSpec] = {spec.name: spec for spec in _SPECS}
"""The fixed metrics, in report order. Growth-curve points are added as they run."""


def percentile(samples: Sequence[float], q: float) -> float:
    """The `q`-th percentile (0 to 100) of `samples`, linearly interpolated."""
    if not samples:
        raise ValueError("no samples")
    ordered = sorted(samples)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def median(values: Iterable[float]) -> float:
    """The median of `values`."""
    return float(statistics.median(list(values)))


class Results:
    """The metrics of one run, in the order they were recorded.

    Args:
        mode: "quick" or "full"; names the results file.
    """

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self._values: dict[str, tuple[float, MetricSpec]] = {}
        self.curves: dict[str, dict[str, object]] = {}
        self.failures: dict[str, str] = {}
        self.cpu: list[tuple[str, str, float, float]] = []
        """(scenario, process, CPU seconds, of which on its event-loop thread)."""

    def record(self, name: str, value: float, spec: MetricSpec | None = None) -> None:
        """Record one metric; fixed names take their spec from `METRICS`."""
        chosen = spec or METRICS.get(name)
        if chosen is None:
            raise KeyError(f"unknown metric {name!r} and no spec given")
        self._values[name] = (float(value), chosen)

    def record_curve(
        self, name: str, *, x_label: str, y_metric: str, unit: str, points: Mapping[int, float]
    ) -> None:
        """Record a growth curve, and each point as its own metric (`<y>_at_<x>_<label>`)."""
        self.curves[name] = {
            "x_label": x_label,
            "y_metric": y_metric,
            "unit": unit,
            "points": {str(x): round(y, 1) for x, y in sorted(points.items())},
        }
        suffix = x_label.replace(" ", "_")
        for x, y in sorted(points.items()):
            point = MetricSpec(f"{y_metric}_at_{x}_{suffix}", unit, note="curve")
            self.record(point.name, y, point)

    @classmethod
    def load(cls, mode: str, metrics: Mapping[str, Mapping[str, object]]) -> Results:
        """Results read back from a results file (growth curves are set apart)."""
        results = cls(mode)
        for name, entry in metrics.items():
            text = str(entry["goal"])
            goal = Goal.parse(text)
            spec = METRICS.get(name) or MetricSpec(
                name, str(entry["unit"]), goal, note="" if goal else text
            )
            results.record(name, float(entry["value"]), spec)  # type: ignore[arg-type]
        return results

    def fail(self, scenario: str, reason: str) -> None:
        """Note a scenario that could not produce its metrics."""
        self.failures[scenario] = reason

    def get(self, name: str) -> float | None:
        entry = self._values.get(name)
        return entry[0] if entry else None

    def missing(self) -> list[str]:
        """Fixed metrics that were not recorded."""
        return [name for name in METRICS if name not in self._values]

    def as_json(self) -> dict[str, dict[str, object]]:
        """`{"metric": {"value", "unit", "goal"}}`, fixed metrics first."""
        ordered = [n for n in METRICS if n in self._values]
        ordered += [n for n in self._values if n not in METRICS]
        out: dict[str, dict[str, object]] = {}
        for name in ordered:
            value, spec = self._values[name]
            out[name] = {"value": _rounded(value), "unit": spec.unit, "goal": spec.goal_text}
        return out

    def write(self, directory: Path) -> Path:
        """Write `<mode>.json` (quick.json or latest.json) under `directory`."""
        directory.mkdir(parents=True, exist_ok=True)
        name = "latest.json" if self.mode == "full" else f"{self.mode}.json"
        path = directory / name
        path.write_text(json.dumps(self.as_json(), indent=2) + "\n")
        return path

    def rows(self) -> list[tuple[str, str, str, str, str]]:
        """(metric, value, unit, goal, verdict) for every recorded metric."""
        rows = []
        for name, entry in self.as_json().items():
            value = float(entry["value"])  # type: ignore[arg-type]
            spec = self._values[name][1]
            verdict = ""
            if spec.goal is not None:
                verdict = "met" if spec.goal.is_met(value) else "MISSED"
            rows.append((name, _display(value), spec.unit, spec.goal_text, verdict))
        return rows

    def table(self) -> str:
        """A plain-text table of every metric, for the terminal."""
        header = ("metric", "value", "unit", "goal", "")
        rows = [header, *self.rows()]
        widths = [max(len(row[i]) for row in rows) for i in range(5)]
        lines = []
        for index, row in enumerate(rows):
            cells = [
                row[0].ljust(widths[0]),
                row[1].rjust(widths[1]),
                row[2].ljust(widths[2]),
                row[3].ljust(widths[3]),
                row[4],
            ]
            lines.append("  ".join(cells).rstrip())
            if index == 0:
                lines.append("  ".join("-" * w for w in widths).rstrip())
        return "\n".join(lines)


def _rounded(value: float) -> float | int:
    if float(value).is_integer() and abs(value) < 2**53:
        return int(value)
    return round(value, 3)


def _display(value: float) -> str:
    if float(value).is_integer():
        return f"{int(value):,}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"
