"""A time limit on one coroutine whose timer is armed only once the coroutine waits."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Generator
from typing import Any, Generic, TypeVar

__all__ = ["LazyTimeout"]

T = TypeVar("T")


class LazyTimeout:
    """`asyncio.timeout(timeout_s)` around one coroutine, with the same outcome,
    except that no timer exists while the coroutine has not suspended.

    The coroutine's first step runs at once; one that finishes there (most sync
    actions, a send into a socket buffer with room) never touches the loop's
    timer heap, which costs as much as the rest of routing a small frame. One
    that suspends goes on under `asyncio.timeout_at` with the deadline counted
    from the start, so the limit is the same. Cancellation only ever lands at a
    suspension, which is why nothing is lost by arming late.

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
        steps = awaitable.__await__()
        try:
            waiting_on = steps.send(None)
        except StopIteration as finished:
            value: T = finished.value
            return value
        self._scope = asyncio.timeout_at(deadline)
        async with self._scope:
            return await _Resumed(steps, waiting_on)

    def expired(self) -> bool:
        """Whether the limit passed (what `asyncio.Timeout.expired` says)."""
        return self._scope is not None and self._scope.expired()


class _Resumed(Generic[T]):
    """Awaits the steps of an awaitable that has already taken its first one
    (and yielded `waiting_on` to the event loop): `yield from` by hand (PEP 380)."""

    __slots__ = ("_steps", "_waiting_on")

    def __init__(self, steps: Generator[Any, None, T], waiting_on: Any) -> None:
        self._steps = steps
        self._waiting_on = waiting_on

    def __await__(self) -> Generator[Any, None, T]:
        coro, waiting_on = self._steps, self._waiting_on
        while True:
            try:
                sent = yield waiting_on
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:
                try:
                    waiting_on = coro.throw(exc)
                except StopIteration as finished:
                    thrown_out: T = finished.value
                    return thrown_out
            else:
                try:
                    waiting_on = coro.send(sent)
                except StopIteration as finished:
                    sent_out: T = finished.value
                    return sent_out
