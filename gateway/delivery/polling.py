"""The pause of a loop that polls for work: cut short when work is known to be there.

The dispatcher and the inbound loop (hand-over to the registry, acknowledgements, case
events) look for work in the database. Work this process stores (a submitted update,
a message a partner delivered) wakes its loop at once; the poll interval only bounds
how long other work waits: a retry falling due, work stored by another replica on the
same PostgreSQL database, work left by a crash. So a long interval costs an idle
gateway little CPU and a new message no latency.

Guarantee: a loop that clears its wake-up event *before* it looks for work, and then
calls :func:`pause` when it found none, never sleeps on a wake-up that arrived while it
looked: the event is still set, and :func:`pause` returns at once.
"""

from __future__ import annotations

import asyncio


async def pause(stopping: asyncio.Event, wake: asyncio.Event, interval_s: float) -> None:
    """Return once ``stopping`` or ``wake`` is set, or after ``interval_s`` seconds."""
    if stopping.is_set() or wake.is_set():
        return
    waiters = {asyncio.ensure_future(stopping.wait()), asyncio.ensure_future(wake.wait())}
    try:
        await asyncio.wait(waiters, timeout=interval_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
