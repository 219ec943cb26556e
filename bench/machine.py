"""The machine a run happened on, for the report."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

__all__ = ["Machine", "describe_machine"]


@dataclass(frozen=True, slots=True)
class Machine:
    """Where and when a run happened.

    Args:
        cpus: logical CPUs (nproc).
        cpu_model: `model name` from /proc/cpuinfo.
        memory_gb: total memory.
        python: the interpreter version.
        system: kernel name and release.
        date: when the run started (UTC).
    """

    cpus: int
    cpu_model: str
    memory_gb: float
    python: str
    system: str
    date: datetime

    def as_json(self) -> dict[str, object]:
        return {
            "cpus": self.cpus,
            "cpu_model": self.cpu_model,
            "memory_gb": self.memory_gb,
            "python": self.python,
            "system": self.system,
            "date": self.date.isoformat(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Machine:
        return cls(
            cpus=int(data["cpus"]),
            cpu_model=str(data["cpu_model"]),
            memory_gb=float(data["memory_gb"]),
            python=str(data["python"]),
            system=str(data["system"]),
            date=datetime.fromisoformat(str(data["date"])),
        )

    def one_line(self) -> str:
        return (
            f"{self.cpus} CPUs ({self.cpu_model}), {self.memory_gb:.0f} GB RAM, "
            f"Python {self.python}, {self.system}, {self.date:%Y-%m-%d %H:%M} UTC"
        )


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def describe_machine(started: datetime | None = None) -> Machine:
    """This machine, now (or at `started`)."""
    return Machine(
        cpus=len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count() or 0,
        cpu_model=_cpu_model(),
        memory_gb=psutil.virtual_memory().total / 1024**3,
        python=platform.python_version(),
        system=f"{platform.system()} {platform.release()}",
        date=started or datetime.now(UTC),
    )
