"""Eager starts: the first step now, the rest only if it waits; LazyTimeout on top."""

from __future__ import annotations

import asyncio
import contextvars
from typing import Any

import pytest

from streamer.eager import Eager, LazyTimeout


class _TimerSpy:
    """Counts the timers scheduled on the running loop (what a timeout arms)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        loop = asyncio.get_running_loop()
        real_call_at = loop.call_at
        self.armed = 0

        def call_at(when: float, callback: Any, *args: Any, **kwargs: Any) -> asyncio.TimerHandle:
            self.armed += 1
            return real_call_at(when, callback, *args, **kwargs)

        monkeypatch.setattr(loop, "call_at", call_at)


async def _answer_at_once() -> str:
    return "done"


async def _answer_after(event: asyncio.Event) -> str:
    await event.wait()
    return "done late"


async def test_work_that_never_waits_arms_no_timer(monkeypatch: pytest.MonkeyPatch) -> None:
    spy = _TimerSpy(monkeypatch)
    scope = LazyTimeout(5.0)
    assert await scope.run(_answer_at_once()) == "done"
    assert spy.armed == 0
    assert not scope.expired()


async def test_work_that_waits_is_limited_and_gets_its_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spy = _TimerSpy(monkeypatch)
    event = asyncio.Event()
    asyncio.get_running_loop().call_soon(event.set)
    scope = LazyTimeout(5.0)
    assert await scope.run(_answer_after(event)) == "done late"
    assert spy.armed == 1
    assert not scope.expired()


async def test_work_that_waits_past_the_limit_times_out() -> None:
    scope = LazyTimeout(0.01)
    cleaned_up = asyncio.Event()

    async def wait_forever() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cleaned_up.set()

    with pytest.raises(TimeoutError):
        await scope.run(wait_forever())
    assert scope.expired()
    assert cleaned_up.is_set()


async def test_the_limit_counts_from_the_start_not_from_the_first_wait() -> None:
    """A first step that used up the whole limit times out at its first wait."""
    scope = LazyTimeout(0.0)
    with pytest.raises(TimeoutError):
        await scope.run(_answer_after(asyncio.Event()))
    assert scope.expired()


async def test_a_timeout_error_raised_by_the_work_is_not_the_limit() -> None:
    async def raise_timeout() -> None:
        raise TimeoutError

    async def wait_then_raise_timeout() -> None:
        await asyncio.sleep(0)
        raise TimeoutError

    for work in (raise_timeout, wait_then_raise_timeout):
        scope = LazyTimeout(5.0)
        with pytest.raises(TimeoutError):
            await scope.run(work())
        assert not scope.expired()


async def test_errors_after_a_wait_reach_the_caller() -> None:
    future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    future.get_loop().call_soon(future.set_exception, ValueError("bad"))
    with pytest.raises(ValueError, match="bad"):
        await LazyTimeout(5.0).run(future)


async def test_cancelling_the_caller_cancels_the_waiting_work() -> None:
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def work() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    task = asyncio.create_task(LazyTimeout(5.0).run(work()))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cancelled.is_set()


async def test_an_eager_start_that_finishes_holds_its_value_and_awaits_to_it() -> None:
    started = Eager(_answer_at_once())
    assert started.is_done
    assert started.value == "done"
    assert await started == "done"


async def test_an_eager_start_that_waits_finishes_when_awaited() -> None:
    event = asyncio.Event()
    started = Eager(_answer_after(event))
    assert not started.is_done
    event.set()
    assert await started == "done late"
    assert started.is_done


async def test_an_eager_start_raises_its_first_steps_error_at_once() -> None:
    async def refuse() -> None:
        raise ValueError("no")

    with pytest.raises(ValueError, match="no"):
        _ = Eager(refuse())


async def test_every_step_runs_in_the_given_context() -> None:
    """A context variable the work sets stays in its own context, before and after a wait."""
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="outside")
    event = asyncio.Event()
    seen: list[str] = []

    async def work() -> None:
        var.set("inside")
        await event.wait()
        seen.append(var.get())

    context = contextvars.copy_context()
    started = Eager(work(), context)
    assert var.get() == "outside"
    event.set()
    await started
    assert seen == ["inside"]
    assert var.get() == "outside"
    assert context[var] == "inside"
