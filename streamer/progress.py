"""`Progress`: what an async action reports through (throttled, monotonic,
persisted at most once a second, delivered to the origin and subscribers)."""

from __future__ import annotations

from typing import Any

__all__ = ["Progress"]


class Progress:
    """The progress reporter handed to an async action.

    Built by the `Processor`; users only call `report` and `check_cancelled`.
    """

    async def report(self, percentage: float, message: str = "", **metadata: Any) -> None:
        """Report progress. Percentages are clamped to 0–100 and never go back;
        updates beyond the rate limit are coalesced (the latest is sent later or
        at the end).

        Raises:
            RequestCancelled: the request was cancelled; stop working.
        """
        raise NotImplementedError

    async def check_cancelled(self) -> None:
        """Ask the store whether the request was cancelled.

        Raises:
            RequestCancelled: it was.
        """
        raise NotImplementedError
