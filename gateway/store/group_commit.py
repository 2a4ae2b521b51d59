"""Group commit: the writes of many concurrent callers, committed in one transaction.

A caller hands :meth:`GroupCommit.run` a *write unit*, a function that writes through
the connection it is given. One committer thread takes every unit waiting (up to
``max_batch``), runs them in one transaction, commits once, and only then answers each
caller. Guarantees:

* :meth:`GroupCommit.run` returns only after the transaction holding the unit has
  committed: what a caller was told is stored survives ``kill -9``;
* a unit is atomic: all of its writes commit, or (when it raises) none do, and its
  exception reaches its own caller only; the other units of the batch are unaffected
  (the attempt is rolled back and runs again without the failed unit, so a unit must
  write only through its connection and may run more than once);
* if the connection is lost before the commit (a server restart), the batch runs
  again once on a new connection; the committer keeps its connection open between
  batches, so this is how it notices;
* if the commit itself fails, every unit of the batch fails with
  :class:`~gateway.errors.StorageUnavailable`, and nothing of it is stored;
* units run in the order they were handed over, so an audit entry written by a unit
  gets an index after those of earlier units;
* every batch is reported to :attr:`GroupCommit.faults`: whether a write committed, and
  which were refused for a fault of the database itself (full, read-only, locked,
  unreachable). While such a fault lasts and no unit waits, the committer probes with a
  small write of its own, backed off, until one commits or the committer is closed; the
  probe stores nothing (see :mod:`gateway.store.faults`).

:meth:`GroupCommit.write` is the same for a coroutine: it waits on the event loop, not
on a thread, and the committer wakes each loop once per batch for all of its units.

Under load, one commit (one fsync on SQLite, one WAL flush on PostgreSQL) serves many
callers; alone, a caller waits for nothing but its own transaction. A unit runs on the
committer thread, so it must only write through its connection: no network, no sleep.

A transaction costs much the same whatever it holds: its statements hand the
interpreter lock back and forth between the committer and the event loop, and its
answer wakes the loop. So under sustained load, when writes keep arriving faster than
they commit one by one (on average :data:`PRESSURE_TO_DELAY` or more units already
waiting whenever a batch starts), the committer waits ``commit_delay_s`` for more
before it begins, as PostgreSQL's ``commit_delay`` does: fewer, larger transactions
for a little latency. A lone writer, or a few, never finds units waiting, so never
waits; ``commit_delay_s=0`` turns the delay off.

A writer whose rows are cheaper to insert together (the audit log: one index lookup and
one tree extension for the whole batch) hands them to :func:`defer`: inside a group
transaction they are written by the writer's flush function once, just before the
commit (an attempt rolled back takes them with it); outside one they are written at
once. A writer that keeps a cache of what it stored (the audit log's tree frontier)
updates it from :func:`after_commit`, which runs only once the transaction committed.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, exc

from gateway.errors import PouchError, StorageUnavailable, unexpected_summary
from gateway.store.engine import storage_boundary, writer_connection
from gateway.store.faults import (
    PROBE_FIRST_S,
    PROBE_LAST_S,
    StorageFaults,
    fault_reason,
    is_storage_fault,
    probe,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
WriteUnit = Callable[[Connection], T]
Flush = Callable[[Connection, list[Any]], object]
"""Writes a batch of deferred rows through the connection, in the order given."""

_DEFERRED = "pouch.group_commit.deferred"
_AFTER_COMMIT = "pouch.group_commit.after_commit"


class _Deferred:
    """Rows deferred by the units of one group transaction, per flush function."""

    def __init__(self) -> None:
        self._rows: dict[Flush, list[Any]] = {}

    def add(self, flush: Flush, rows: list[Any]) -> None:
        self._rows.setdefault(flush, []).extend(rows)

    def flush(self, conn: Connection) -> None:
        for flush, rows in self._rows.items():
            if rows:
                flush(conn, rows)


def defer(conn: Connection, flush: Flush, rows: list[Any]) -> None:
    """Write ``rows`` with ``flush`` before this group transaction commits, or now."""
    deferred = conn.info.get(_DEFERRED)
    if isinstance(deferred, _Deferred):
        deferred.add(flush, rows)
    else:
        flush(conn, rows)


def after_commit(conn: Connection, callback: Callable[[], object]) -> None:
    """Call ``callback`` once this group transaction has committed; outside one, never.

    For caches of what is stored: a callback must not fail, and a writer that was not
    told must not assume its rows are stored (it reads them again instead).
    """
    callbacks = conn.info.get(_AFTER_COMMIT)
    if isinstance(callbacks, list):
        callbacks.append(callback)


DEFAULT_MAX_BATCH = 256
PRESSURE_TO_DELAY = 2.5
"""Units waiting when a batch starts (a moving average) from which the delay applies."""
_PRESSURE_WEIGHT = 0.2  # of the newest batch in that average


class _LoopAnswer:
    """The answer of a unit handed over by a coroutine: settled on its own event loop."""

    __slots__ = ("future", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.future: asyncio.Future[Any] = loop.create_future()


Answer = Future[Any] | _LoopAnswer


@dataclass(frozen=True)
class _Pending:
    unit: WriteUnit[Any]
    answer: Answer


Outcome = tuple[Future[Any] | asyncio.Future[Any], Any, BaseException | None]
"""A unit's answer, its result, and the error it failed with (``None`` if it did not)."""


def _settle(outcomes: list[Outcome]) -> None:
    """Answer each unit; on its event loop's thread, for a coroutine's unit."""
    for future, result, error in outcomes:
        if future.done():  # its caller was cancelled; the write stands all the same
            continue
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)


class _Outcomes:
    """What each unit of a batch is answered; delivered at once, one wake-up per loop."""

    def __init__(self) -> None:
        self._by_loop: dict[asyncio.AbstractEventLoop, list[Outcome]] = {}
        self._threads: list[Outcome] = []
        self.committed = 0
        self.refused: list[str] = []  # the reason of each write a storage fault refused

    def add(self, pending: _Pending, result: Any, error: BaseException | None) -> None:
        if error is None:
            self.committed += 1
        elif is_storage_fault(error):
            self.refused.append(fault_reason(error))
        answer = pending.answer
        if isinstance(answer, _LoopAnswer):
            self._by_loop.setdefault(answer.loop, []).append((answer.future, result, error))
        else:
            self._threads.append((answer, result, error))

    def deliver(self) -> None:
        _settle(self._threads)
        for loop, outcomes in self._by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle, outcomes)
            except RuntimeError:  # the loop closed: nobody is left to answer
                log.warning("a group commit answered a closed event loop")


class _UnitFailed(Exception):
    """One unit raised: the attempt is rolled back and runs again without it."""

    def __init__(self, pending: _Pending, error: Exception) -> None:
        super().__init__("a write unit failed")
        self.pending = pending
        self.error = error


class _ConnectionLost(Exception):
    """The connection broke before the commit: nothing of the attempt is stored."""


def _connection_lost(error: BaseException) -> bool:
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, exc.DBAPIError) and cause.connection_invalidated:
            return True
        cause = cause.__cause__
    return False


def _lost_before_commit(error: BaseException) -> bool:
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, _ConnectionLost):
            return True
        seen = seen.__context__
    return False


@dataclass(frozen=True)
class CommitStats:
    """What a committer has taken since it started: counters, for monitoring."""

    batches: int = 0  # each run as one transaction
    units: int = 0
    delayed_batches: int = 0  # that waited for more units under sustained load


class GroupCommit:
    """One committer thread per engine; share the instance between every store's writes."""

    def __init__(
        self, engine: Engine, *, max_batch: int = DEFAULT_MAX_BATCH, commit_delay_s: float = 0.0
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        if commit_delay_s < 0:
            raise ValueError("commit_delay_s must not be negative")
        self._engine = engine
        self._max_batch = max_batch
        self._commit_delay_s = commit_delay_s
        self._queue: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._conn: Connection | None = None  # the committer thread's own, kept open
        self._stats = CommitStats()
        self.faults = StorageFaults()

    def run(self, unit: WriteUnit[T]) -> T:
        """Blocking: run ``unit`` in the next group transaction and return its result."""
        if threading.current_thread() is self._thread:
            # It would wait for the very transaction it runs in: write through ``conn``.
            raise RuntimeError("a write unit may not hand over another unit")
        answer: Future[T] = Future()
        self._hand_over(_Pending(unit, answer))
        return answer.result()

    async def write(self, unit: WriteUnit[T]) -> T:
        """:meth:`run` for a coroutine: the event loop goes on while the unit commits."""
        answer = _LoopAnswer(asyncio.get_running_loop())
        self._hand_over(_Pending(unit, answer))
        result: T = await answer.future
        return result

    def _hand_over(self, pending: _Pending) -> None:
        with self._lock:
            if self._closed:
                raise StorageUnavailable("the gateway is stopping; nothing more is written")
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._commit_forever, name="group-commit", daemon=True
                )
                self._thread.start()
            self._queue.put(pending)

    def waiting(self) -> int:
        """How many units wait for the next transaction (approximate, for monitoring)."""
        return self._queue.qsize()

    def stats(self) -> CommitStats:
        """The batches and units taken so far, and how many batches waited for more."""
        return self._stats

    def close(self) -> None:
        """Commit what was handed over, then stop the committer thread."""
        with self._lock:
            self._closed = True
            thread = self._thread
            if thread is not None:
                self._queue.put(None)
        if thread is not None:
            thread.join()

    def _commit_forever(self) -> None:
        try:
            self._take_batches()
        finally:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _take_batches(self) -> None:
        pressure = 1.0
        while True:
            first = self._next_unit()
            if first is None:
                return
            batch = [first]
            stop = self._take_waiting(batch)
            pressure += _PRESSURE_WEIGHT * (len(batch) - pressure)
            delayed = bool(self._commit_delay_s) and pressure >= PRESSURE_TO_DELAY and not stop
            if delayed:
                time.sleep(self._commit_delay_s)
                stop = self._take_waiting(batch)
            taken = self._stats
            self._stats = CommitStats(
                batches=taken.batches + 1,
                units=taken.units + len(batch),
                delayed_batches=taken.delayed_batches + int(delayed),
            )
            self._commit(batch)
            if stop:
                return

    def _next_unit(self) -> _Pending | None:
        """The next unit handed over; while a storage fault lasts, probe in between."""
        delay = PROBE_FIRST_S
        while self.faults.current() is not None:
            try:
                return self._queue.get(timeout=delay)
            except queue.Empty:
                self._probe()
                delay = min(delay * 2, PROBE_LAST_S)
        return self._queue.get()

    def _probe(self) -> None:
        try:
            self._attempt([_Pending(probe, Future())])
        except Exception as e:
            self.faults.probe_failed(fault_reason(e))
        else:
            self.faults.committed()

    def _take_waiting(self, batch: list[_Pending]) -> bool:
        """Add the units waiting to ``batch``, up to its limit; whether ``close`` was asked."""
        while len(batch) < self._max_batch:
            try:
                following = self._queue.get_nowait()
            except queue.Empty:
                return False
            if following is None:
                return True
            batch.append(following)
        return False

    def _commit(self, batch: list[_Pending]) -> None:
        outcomes = _Outcomes()
        try:
            self._settle(batch, outcomes)
        finally:
            outcomes.deliver()
        if outcomes.committed:
            self.faults.committed(outcomes.refused)
        else:
            self.faults.refused(outcomes.refused)

    def _settle(self, batch: list[_Pending], outcomes: _Outcomes) -> None:
        # Units run without savepoints (two statements each saved); a unit that raises
        # rolls back the whole attempt, gets its own error, and the others run again.
        remaining = batch
        reconnected = False
        while remaining:
            try:
                results = self._attempt(remaining)
            except _ConnectionLost as lost:
                # A server restart or a dropped connection, found before the commit: the
                # units run again once, on a new connection (they may run more than once).
                if reconnected:
                    log.error("group commit failed: %s", unexpected_summary(lost))
                    error = StorageUnavailable("the database connection was lost")
                    error.__cause__ = lost  # a fault of the database, as if raised from it
                    self._fail(remaining, error, outcomes)
                    return
                reconnected = True
                continue
            except _UnitFailed as failed:
                outcomes.add(failed.pending, None, failed.error)
                remaining = [p for p in remaining if p is not failed.pending]
                continue
            except PouchError as e:
                self._fail(remaining, e, outcomes)
                return
            except Exception as e:  # a failed commit must answer every caller, not hang them
                log.error("group commit failed: %s", unexpected_summary(e))
                error = StorageUnavailable("the database did not commit the write")
                error.__cause__ = e
                self._fail(remaining, error, outcomes)
                return
            for pending, result in zip(remaining, results, strict=True):
                outcomes.add(pending, result, None)
            return

    def _attempt(self, batch: list[_Pending]) -> list[Any]:
        """Run every unit in one transaction and commit it; the results, in order."""
        results: list[Any] = []
        committed: list[Callable[[], object]] = []
        if self._conn is None:
            self._conn = writer_connection(self._engine)
        conn = self._conn
        try:
            with storage_boundary(), conn.begin():
                deferred = _Deferred()
                conn.info[_DEFERRED] = deferred
                conn.info[_AFTER_COMMIT] = committed
                try:
                    for pending in batch:
                        try:
                            with storage_boundary():
                                results.append(pending.unit(conn))
                        except Exception as e:  # the unit's failure goes to its caller only
                            if _connection_lost(e):
                                raise _ConnectionLost("lost before the commit") from e
                            raise _UnitFailed(pending, e) from e
                    try:
                        deferred.flush(conn)
                    except Exception as e:
                        if _connection_lost(e):
                            raise _ConnectionLost("lost before the commit") from e
                        raise
                finally:
                    del conn.info[_DEFERRED]
                    del conn.info[_AFTER_COMMIT]
        except _UnitFailed:
            raise
        except BaseException as e:
            # The connection may be broken (a lost server, a failed commit): start afresh.
            self._conn = None
            conn.close()
            if _lost_before_commit(e):  # rolling back a dead connection raises anew
                raise _ConnectionLost("lost before the commit") from e
            raise
        for callback in committed:
            try:
                callback()
            except Exception as e:  # committed is committed: a cache's fault answers no caller
                log.error("after-commit callback failed: %s", unexpected_summary(e))
        return results

    @staticmethod
    def _fail(batch: list[_Pending], error: BaseException, outcomes: _Outcomes) -> None:
        for pending in batch:
            outcomes.add(pending, None, error)
