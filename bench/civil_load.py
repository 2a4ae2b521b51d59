"""Bulk civil-record updates through the gateway chain, and their raw counterpart.

Gateway side: ``count`` updates (births, deaths and marriages in turn, from
``tests/integration/civil_builders.py``) streamed into AT's local API over
``streams`` ``SubmitUpdates`` streams; AT's dispatcher delivers each to BE, which
hands it to its registry. A round's time runs from the first submit (the caller's
clock) to the last update applied in BE's registry (its ``applied_at``); latency is per
update, from durable in AT's outbox (``created_at``) to applied at BE. The round ends
once AT also holds every signed "applied" acknowledgement, so each round's CPU covers
all the work an update causes, and no round leaves traffic for the next one.

Raw side: the same number of 1 KiB messages over as many ``Submit`` streams to relay A,
which acknowledges each as it takes it and forwards it as its own unary call to relay
B, which forwards it to the registry stub (see :mod:`bench.relay`). Time runs from the
first submit to the last message the stub counted; latency is per message, from the
send time the caller wrote into it to the stub's clock.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from bench.chains import RelayChain
from bench.relay import SUBMIT, stamped
from bench.rounds import Measured
from gateway.connect import secure_channel
from pouch_devtools.demo.deployment import Site
from tests.integration.civil_builders import (
    BulkSubmission,
    gateway_database,
    query_sqlite,
    update_requests,
    wait_until,
)

MESSAGE_BYTES = 1024


def _epoch(text: str) -> float:
    """A UTC timestamp as SQLAlchemy stores it in SQLite (no offset), as epoch seconds."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def _count(db: Path, sql: str) -> int:
    return int(query_sqlite(db, sql)[0][0])


def gateway_round(at: Site, be: Site, run: str, count: int, streams: int) -> Measured:
    applied_sql = "SELECT count(*) FROM applied_updates"
    outcomes_sql = "SELECT count(*) FROM outbox WHERE outcome = 'applied'"
    applied_before = _count(be.registry_db, applied_sql)
    outcomes_before = _count(gateway_database(at), outcomes_sql)
    submission = BulkSubmission(
        at, update_requests(run, count), stream_size=math.ceil(count / streams), parallel=streams
    )
    started = time.time()
    asyncio.run(submission.run())
    wait_until(
        lambda: _count(be.registry_db, applied_sql) >= applied_before + count,
        timeout_s=max(300.0, count / 10),
        describe=lambda: f"{_count(be.registry_db, applied_sql) - applied_before} applied at BE",
        interval_s=0.2,
    )
    ours = set(submission.message_ids.values())
    applied = {
        m: _epoch(t)
        for m, t in query_sqlite(
            be.registry_db, "SELECT message_id, applied_at FROM applied_updates"
        )
        if m in ours
    }
    durable = {
        m: _epoch(t)
        for m, t in query_sqlite(gateway_database(at), "SELECT message_id, created_at FROM outbox")
        if m in ours
    }
    wait_until(
        lambda: _count(gateway_database(at), outcomes_sql) >= outcomes_before + count,
        timeout_s=max(300.0, count / 10),
        describe=lambda: "outcomes recorded at AT",
        interval_s=0.2,
    )
    latencies = [applied[m] - durable[m] for m in ours]
    return Measured(count, max(applied.values()) - started, latencies)


def relay_round(chain: RelayChain, count: int, streams: int) -> Measured:
    return asyncio.run(_relay_round(chain, count, streams))


async def _relay_round(chain: RelayChain, count: int, streams: int) -> Measured:
    await chain.tally(reset=True)
    sizes = [count // streams + (1 if i < count % streams else 0) for i in range(streams)]

    def messages(n: int) -> Iterator[bytes]:
        for _ in range(n):
            yield stamped(MESSAGE_BYTES)  # stamped as the stream takes it

    started = time.time()
    async with secure_channel(chain.caller_target, chain.caller_identity()) as channel:
        submit = channel.stream_stream(SUBMIT, request_serializer=None, response_deserializer=None)

        async def one(n: int) -> None:
            async for _ in submit(messages(n), timeout=600):
                pass

        await asyncio.gather(*(one(n) for n in sizes if n))
    deadline = time.monotonic() + max(120.0, count / 10)
    while True:
        tally = await chain.tally()
        if tally.applied >= count:
            break
        if time.monotonic() > deadline:
            raise AssertionError(f"the stub applied {tally.applied} of {count}")
        await asyncio.sleep(0.05)
    return Measured(count, tally.last_applied - started, tally.latencies)
