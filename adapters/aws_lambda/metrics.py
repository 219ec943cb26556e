"""CloudWatch metrics in Embedded Metric Format: one JSON line on stdout per flush.

Lambda ships stdout to CloudWatch Logs, which extracts the metrics from the
`_aws` block; no API call, no extra latency. Metrics are published under the
`Streamer` namespace with no dimensions (the deployment guide's
`ActiveConnections` alarm names none), and the function name rides along as a
plain property so Logs Insights can still split by it.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from enum import StrEnum
from typing import Any, Final

__all__ = ["NAMESPACE", "Metric", "MetricsBatch", "Unit"]

NAMESPACE: Final = "Streamer"
_MAX_VALUES_PER_METRIC: Final = 100
"""EMF accepts at most 100 values in one metric's array."""


class Unit(StrEnum):
    """The CloudWatch units Streamer uses."""

    COUNT = "Count"
    MILLISECONDS = "Milliseconds"


class Metric(StrEnum):
    """Every metric Streamer publishes (DESIGN §9)."""

    CONNECTION_ESTABLISHED = "ConnectionEstablished"
    CONNECTION_CLOSED = "ConnectionClosed"
    AUTHENTICATION_FAILED = "AuthenticationFailed"
    ACTIVE_CONNECTIONS = "ActiveConnections"
    REQUESTS_QUEUED = "RequestsQueued"
    REQUESTS_COMPLETED = "RequestsCompleted"
    REQUESTS_FAILED = "RequestsFailed"
    PROCESSING_LATENCY = "ProcessingLatency"


def _stdout_line(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


class MetricsBatch:
    """Metrics of one invocation, written as one EMF line by `flush`.

    Args:
        properties: extra top-level fields of the line (function name, request id);
            never dimensions.
        write: where the line goes (stdout by default).
        now_ms: the timestamp source, epoch milliseconds.
    """

    def __init__(
        self,
        *,
        properties: dict[str, Any] | None = None,
        write: Callable[[str], None] = _stdout_line,
        now_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        self._properties = dict(properties or {})
        self._write = write
        self._now_ms = now_ms
        self._values: dict[Metric, list[float]] = {}
        self._units: dict[Metric, Unit] = {}

    def add(self, metric: Metric, value: float = 1, unit: Unit = Unit.COUNT) -> None:
        """Record one value: counts add up into one number, other units (latencies)
        keep every value so CloudWatch sees the distribution."""
        values = self._values.setdefault(metric, [])
        if unit is Unit.COUNT and values:
            values[0] += float(value)
        else:
            values.append(float(value))
        self._units[metric] = unit

    def set(self, metric: Metric, value: float, unit: Unit = Unit.COUNT) -> None:
        """Record a gauge: replaces any value recorded before in this batch."""
        self._values[metric] = [float(value)]
        self._units[metric] = unit

    @property
    def is_empty(self) -> bool:
        """True when nothing was recorded since the last flush."""
        return not self._values

    def render(self) -> str | None:
        """The EMF line for what was recorded, or None when nothing was."""
        if not self._values:
            return None
        body: dict[str, Any] = dict(self._properties)
        body["_aws"] = {
            "Timestamp": self._now_ms(),
            "CloudWatchMetrics": [
                {
                    "Namespace": NAMESPACE,
                    "Dimensions": [[]],
                    "Metrics": [
                        {"Name": metric.value, "Unit": self._units[metric].value}
                        for metric in self._values
                    ],
                }
            ],
        }
        for metric, values in self._values.items():
            kept = values[-_MAX_VALUES_PER_METRIC:]
            body[metric.value] = kept[0] if len(kept) == 1 else kept
        return json.dumps(body, separators=(",", ":"))

    def flush(self) -> None:
        """Write one EMF line (nothing when empty) and start over."""
        line = self.render()
        if line is not None:
            self._write(line)
        self._values.clear()
        self._units.clear()
