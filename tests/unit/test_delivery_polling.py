"""The pause of a polling loop: a wake-up is never slept through, and the poll still ends it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest

from gateway.delivery.polling import pause

LONG_S = 30.0


def _timed(waiting: Callable[[], Awaitable[None]]) -> float:
    """Seconds ``waiting`` took, run on a loop of its own."""

    async def scenario() -> float:
        started = time.monotonic()
        await waiting()
        return time.monotonic() - started

    return asyncio.run(scenario())


def test_wake_up_that_arrived_while_the_loop_looked_for_work_is_not_slept_through() -> None:
    async def scenario() -> None:
        stopping, wake = asyncio.Event(), asyncio.Event()
        wake.set()  # set during the round, before the loop pauses
        await pause(stopping, wake, LONG_S)

    assert _timed(scenario) < 1.0


@pytest.mark.parametrize("event", ["wake", "stopping"])
def test_wake_up_or_stopping_during_the_pause_ends_it(event: str) -> None:
    async def scenario() -> None:
        events = {"stopping": asyncio.Event(), "wake": asyncio.Event()}
        asyncio.get_running_loop().call_later(0.05, events[event].set)
        await pause(events["stopping"], events["wake"], LONG_S)

    assert _timed(scenario) < 1.0


def test_without_a_wake_up_the_pause_lasts_the_poll_interval() -> None:
    async def scenario() -> None:
        await pause(asyncio.Event(), asyncio.Event(), 0.3)

    assert 0.25 < _timed(scenario) < 5.0


def test_pause_leaves_no_waiter_behind() -> None:
    async def scenario() -> int:
        stopping, wake = asyncio.Event(), asyncio.Event()
        asyncio.get_running_loop().call_later(0.01, wake.set)
        await pause(stopping, wake, LONG_S)
        await asyncio.sleep(0)  # let the cancelled waiters finish
        current = asyncio.current_task()
        return len([t for t in asyncio.all_tasks() if t is not current and not t.done()])

    assert asyncio.run(scenario()) == 0
