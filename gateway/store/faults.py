"""Storage faults: which one a database error is, and when one starts and ends.

:func:`storage_error` is the one map from a driver's error to what the caller is told;
:func:`~gateway.store.engine.storage_boundary` calls it and nothing else does:

===================  ==========================  =========================================
reason code          SQLite (primary code)       PostgreSQL (SQLSTATE)
===================  ==========================  =========================================
STORAGE_FULL         SQLITE_FULL                 53100 disk_full
STORAGE_READ_ONLY    SQLITE_READONLY             25006 read_only_sql_transaction
STORAGE_LOCKED       SQLITE_BUSY, SQLITE_LOCKED  55P03 lock_not_available
STORAGE_UNAVAILABLE  other operational errors    other operational errors
===================  ==========================  =========================================

A lost connection and a pool timeout are STORAGE_UNAVAILABLE too, on either engine.

Any other driver error (a constraint the code should have respected, an SQL error) is a
bug: :func:`storage_error` answers ``None`` and the error propagates unchanged.

:class:`StorageFaults` follows the write path; the group committer reports every batch to
it. A fault starts when writes are refused for one of these reasons and none commit, and
ends at the next write that commits. It promises:

* one WARNING line when a fault starts, with its reason code; at most one summary a
  minute while it lasts; one INFO line when it ends, with how many writes were refused
  meanwhile. A line holds reason codes, durations and counts only: never a driver's
  message, which can quote SQL parameters and so personal data;
* counters for monitoring (:meth:`StorageFaults.counts`): faults started and writes
  refused, by reason, and the fault under way;
* each subscriber is called with the reason when a fault starts or changes reason, and
  with ``None`` when it ends, on the thread that reported it.

While a fault lasts and no write arrives, the committer probes with :func:`probe` after
:data:`PROBE_FIRST_S`, doubling up to :data:`PROBE_LAST_S`: a gateway reported not
serving gets no traffic, so it must find out by itself that the database recovered.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from sqlalchemy import Connection, String, column, exc, func, table, update

from gateway.errors import (
    StorageFull,
    StorageLocked,
    StorageReadOnly,
    StorageUnavailable,
    unexpected_summary,
)
from gateway.store.tables import VERSION_TABLE

log = logging.getLogger(__name__)

RETRY_AFTER_S = 1.0
"""What a caller is told to wait after the database was locked or unreachable."""

RETRY_AFTER_OPERATOR_S = 30.0
"""What a caller is told to wait when the database is full or read-only: an operator
has to act, so retrying within the second only adds load."""

PROBE_FIRST_S = 0.25
PROBE_LAST_S = 5.0
SUMMARY_EVERY_S = 60.0

_SQLITE_CODES: dict[int, type[StorageUnavailable]] = {
    sqlite3.SQLITE_FULL: StorageFull,
    sqlite3.SQLITE_READONLY: StorageReadOnly,
    sqlite3.SQLITE_BUSY: StorageLocked,
    sqlite3.SQLITE_LOCKED: StorageLocked,
}
_SQLSTATES: dict[str, type[StorageUnavailable]] = {
    "53100": StorageFull,
    "25006": StorageReadOnly,
    "55P03": StorageLocked,
}
_MESSAGES: dict[type[StorageUnavailable], tuple[str, float]] = {
    StorageFull: ("the database has no space left to write", RETRY_AFTER_OPERATOR_S),
    StorageReadOnly: ("the database takes no writes: it is read-only", RETRY_AFTER_OPERATOR_S),
    StorageLocked: ("the database stayed locked by another writer", RETRY_AFTER_S),
    StorageUnavailable: ("the database is unreachable or busy", RETRY_AFTER_S),
}
REASONS = tuple(kind.reason for kind in _MESSAGES)


def storage_error(error: exc.SQLAlchemyError) -> StorageUnavailable | None:
    """What the caller is told for a failure of the database itself; ``None`` for a bug.

    The caller raises the answer ``from error``, so that :func:`is_storage_fault` knows it.
    """
    kind = _named(getattr(error, "orig", None))
    if kind is None:
        operational = exc.OperationalError | exc.TimeoutError | exc.InterfaceError
        lost = isinstance(error, exc.DBAPIError) and error.connection_invalidated
        if not (isinstance(error, operational) or lost):
            return None
        kind = StorageUnavailable
    message, retry_after_s = _MESSAGES[kind]
    return kind(message, retry_after_s=retry_after_s)


def _named(driver_error: object) -> type[StorageUnavailable] | None:
    if isinstance(driver_error, sqlite3.Error):
        code = getattr(driver_error, "sqlite_errorcode", None)
        return _SQLITE_CODES.get(code & 0xFF) if isinstance(code, int) else None
    sqlstate = getattr(driver_error, "sqlstate", None)  # psycopg's errors carry it
    return _SQLSTATES.get(sqlstate) if isinstance(sqlstate, str) else None


def is_storage_fault(error: BaseException) -> bool:
    """Whether ``error`` is the database's own failure, not a refusal a unit chose to raise."""
    if not isinstance(error, StorageUnavailable):
        return False
    cause = error.__cause__
    while cause is not None:
        if isinstance(cause, exc.SQLAlchemyError):
            return True
        cause = cause.__cause__
    return False


def fault_reason(error: BaseException) -> str:
    """The reason code of the storage fault behind ``error``, wherever it was wrapped."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, StorageUnavailable):
            return seen.reason
        seen = seen.__cause__ or seen.__context__
    return StorageUnavailable.reason


# The version table always holds one row once migrated. Changed and put back in one
# transaction, it leaves the database as it was, yet its page must reach the journal:
# SQLite skips writing a row updated to the same bytes, so a plain no-op update would
# succeed on a full disk.
_VERSION = table(VERSION_TABLE, column("version_num", String))
_PROBE = (
    update(_VERSION).values(version_num=_VERSION.c.version_num + "+"),
    update(_VERSION).values(
        version_num=func.substr(_VERSION.c.version_num, 1, func.length(_VERSION.c.version_num) - 1)
    ),
)


def probe(conn: Connection) -> None:
    """A write unit that stores nothing but needs the database to take a write."""
    for statement in _PROBE:
        conn.execute(statement)


@dataclass(frozen=True)
class FaultCounts:
    """What a :class:`StorageFaults` has seen since it started: counters, for monitoring."""

    current: str | None = None  # the reason of the fault under way
    started: Mapping[str, int] = field(default_factory=lambda: dict.fromkeys(REASONS, 0))
    refused: Mapping[str, int] = field(default_factory=lambda: dict.fromkeys(REASONS, 0))


Subscriber = Callable[[str | None], object]


class StorageFaults:
    """The storage fault under way, if any; safe to report to from several threads."""

    def __init__(self, *, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._subscribers: list[Subscriber] = []
        self._current: str | None = None
        self._started = dict.fromkeys(REASONS, 0)
        self._refused = dict.fromkeys(REASONS, 0)
        self._since = 0.0  # when the fault under way started
        self._last_line = 0.0
        self._refused_meanwhile = 0
        self._refused_since_line = 0

    def subscribe(self, subscriber: Subscriber) -> None:
        """Call ``subscriber`` with the fault under way now, then at every change."""
        with self._lock:
            self._subscribers.append(subscriber)
            current = self._current
        subscriber(current)

    def current(self) -> str | None:
        """The reason code of the fault under way; ``None`` while writes commit."""
        return self._current

    def counts(self) -> FaultCounts:
        with self._lock:
            return FaultCounts(self._current, dict(self._started), dict(self._refused))

    def committed(self, refused: Sequence[str] = ()) -> None:
        """Writes committed, and ``refused`` (reason codes) were refused beside them."""
        with self._lock:
            self._count_refused(refused)
            reason, self._current = self._current, None
            if reason is None:
                return
            log.info(
                "storage fault %s ended after %.1f s: %d writes were refused meanwhile",
                reason,
                self._monotonic() - self._since,
                self._refused_meanwhile + len(refused),
            )
        self._tell(None)

    def refused(self, refused: Sequence[str]) -> None:
        """Writes were refused for these reasons, and none committed."""
        if refused:
            self._refuse(refused[-1], refused)

    def probe_failed(self, reason: str) -> None:
        """The committer's probe was refused: the fault goes on, nobody's write lost."""
        self._refuse(reason, ())

    def _refuse(self, reason: str, refused: Sequence[str]) -> None:
        with self._lock:
            self._count_refused(refused)
            now = self._monotonic()
            was = self._current
            if was is None:
                self._since = now
                self._refused_meanwhile = self._refused_since_line = 0
            self._refused_meanwhile += len(refused)
            self._refused_since_line += len(refused)
            if was == reason:
                if now - self._last_line >= SUMMARY_EVERY_S:
                    log.warning(
                        "storage fault %s goes on after %.0f s: %d writes refused in %.0f s",
                        reason,
                        now - self._since,
                        self._refused_since_line,
                        now - self._last_line,
                    )
                    self._last_line, self._refused_since_line = now, 0
                return
            self._started[reason] += 1
            self._current = reason
            if was is None:
                log.warning(
                    "storage fault %s: writes are refused until the database takes one again",
                    reason,
                )
            else:
                log.warning("storage fault %s, after %s: writes are still refused", reason, was)
            self._last_line = now
        self._tell(reason)

    def _count_refused(self, refused: Sequence[str]) -> None:
        for reason in refused:
            self._refused[reason] += 1

    def _tell(self, reason: str | None) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        for subscriber in subscribers:
            try:
                subscriber(reason)
            except Exception as e:  # the committer reports on: a subscriber's fault is its own
                log.error("a storage fault subscriber failed: %s", unexpected_summary(e))
