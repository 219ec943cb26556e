"""Awaitables started at once: the first step runs now, the rest only if it waits."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Generator
from contextvars import Context
from typing import Any, Generic, TypeVar

__all__ = ["Eager", "LazyTimeout"]

T = TypeVar("T")


class Eager(Generic[T]):
    """An awaitable whose first step has already run, in the calling task.

    Most of what a small frame costs to answer (a sync action, a send into a
    socket buffer with room) finishes in that step: then `is_done` is True and
    `value` holds the result, and no task, timer or loop turn was spent on it.
    Otherwise `await` it (in the same task, or the task that was current then:
    whatever the first step bound to the task, a timeout or a task group, still
    holds) for the rest. Python 3.12's eager tasks do this for a whole task.

    Args:
        awaitable: started here; an exception of its first step propagates.
        context: every step runs in it when given (a copy per frame keeps
            context variables one frame sets away from the next).
    """

    __slots__ = ("_context", "_steps", "_waiting_on", "is_done", "value")

    is_done: bool
    value: T
    """The result, once `is_done`."""

    def __init__(self, awaitable: Awaitable[T], context: Context | None = None) -> None:
        self._steps = awaitable.__await__()
        self._context = context
        self.is_done = False
        try:
            self._waiting_on = self._send(None)
        except StopIteration as finished:
            self.is_done = True
            self.value = finished.value

    def _send(self, sent: Any) -> Any:
        if self._context is None:
            return self._steps.send(sent)
        return self._context.run(self._steps.send, sent)

    def _throw(self, exc: BaseException) -> Any:
        if self._context is None:
            return self._steps.throw(exc)
        return self._context.run(self._steps.throw, exc)

    def __await__(self) -> Generator[Any, None, T]:
        """The rest of the steps (`yield from` by hand, PEP 380)."""
        if not self.is_done:
            waiting_on = self._waiting_on
            while True:
                try:
                    sent = yield waiting_on
                except GeneratorExit:
                    self._steps.close()
                    raise
                except BaseException as exc:
                    try:
                        waiting_on = self._throw(exc)
                    except StopIteration as finished:
                        self.value = finished.value
                        break
                else:
                    try:
                        waiting_on = self._send(sent)
                    except StopIteration as finished:
                        self.value = finished.value
                        break
            self.is_done = True
        return self.value


class LazyTimeout:
    """`asyncio.timeout(timeout_s)` around one awaitable, with the same outcome,
    except that no timer exists while the awaitable has not suspended.

    A timer (`call_at`, a heap push, a cancel) costs as much as the rest of
    routing a small frame. The first step runs at once; only work that suspends
    goes on under `asyncio.timeout_at` with the deadline counted from the start,
    so the limit is the same: cancellation only ever lands at a suspension.

    Args:
        timeout_s: the limit, in seconds, from the call to `run`.
    """

    __slots__ = ("_scope", "_timeout_s")

    def __init__(self, timeout_s: float) -> None:
        self._timeout_s = timeout_s
        self._scope: asyncio.Timeout | None = None

    async def run(self, awaitable: Awaitable[T]) -> T:
        """`await awaitable` within the limit.

        Raises:
            TimeoutError: the limit passed (then `expired()` is True), or the
                awaitable raised it itself.
        """
        deadline = asyncio.get_running_loop().time() + self._timeout_s
        started = Eager(awaitable)
        if not started.is_done:
            self._scope = asyncio.timeout_at(deadline)
            async with self._scope:
                return await started
        return started.value

    def expired(self) -> bool:
        """Whether the limit passed (what `asyncio.Timeout.expired` says)."""
        return self._scope is not None and self._scope.expired()
