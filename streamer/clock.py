"""The real clock: wall time in UTC, the monotonic clock, and asyncio sleep; UTC
times written out for the wire, the logs and the store."""

from __future__ import annotations

import asyncio
import functools
import time
from datetime import UTC, datetime

__all__ = ["MILLISECONDS_Z", "SystemClock", "utc_second"]


def utc_second(at: datetime) -> str:
    """`2026-11-25T08:00:00` of a UTC time. strftime goes through the C library on
    every call, and several times of one second are written at once: each second
    is formatted once."""
    return _whole_second(at.year, at.month, at.day, at.hour, at.minute, at.second)


@functools.lru_cache(maxsize=16)
def _whole_second(year: int, month: int, day: int, hour: int, minute: int, second: int) -> str:
    return f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}"


MILLISECONDS_Z = tuple(f".{ms:03d}Z" for ms in range(1000))
"""`.123Z` for each millisecond: what follows `utc_second` in a timestamp."""


class SystemClock:
    """`Clock` on the system's clocks."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
