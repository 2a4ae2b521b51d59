"""A database that is full, read-only or locked is named as such, and noticed while it lasts.

The read-only and locked faults are real: an SQLite file opened read-only, a write lock
held by another connection, a PostgreSQL session whose transactions are read-only, a
table locked by another session past ``lock_timeout``. A full disk is made for real by
``tests/integration/test_storage_full.py``; here its driver errors are only mapped.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg.errors
import pytest
from sqlalchemy import Connection, Engine, event, exc, insert, select
from sqlalchemy.engine import make_url

from gateway.errors import (
    StorageFull,
    StorageLocked,
    StorageReadOnly,
    StorageUnavailable,
)
from gateway.store.engine import (
    create_engine,
    read_transaction,
    storage_boundary,
    write_transaction,
)
from gateway.store.faults import StorageFaults
from gateway.store.group_commit import GroupCommit
from gateway.store.migrate import current_revision, head_revision, upgrade_to_head
from gateway.store.tables import agreement_lifecycle

PERSONAL = "Wouters-1950-06-02"


def _row(agreement_id: str) -> dict[str, Any]:
    return {
        "agreement_id": agreement_id,
        "agreement_version": 1,
        "status": "suspended",
        "changed_at": datetime.now(UTC),
        "changed_by_state": "AT",
        "reason_code": PERSONAL,
    }


def _write(engine: Engine, agreement_id: str) -> None:
    with write_transaction(engine) as conn:
        conn.execute(insert(agreement_lifecycle).values(_row(agreement_id)))


def _count(engine: Engine) -> int:
    with read_transaction(engine) as conn:
        return len(conn.execute(select(agreement_lifecycle.c.agreement_id)).all())


def _driver_failure(orig: BaseException) -> exc.OperationalError:
    return exc.OperationalError("INSERT INTO outbox VALUES (?)", (PERSONAL,), orig)


def _sqlite_error(code: int, message: str) -> sqlite3.OperationalError:
    error = sqlite3.OperationalError(message)
    error.sqlite_errorcode = code
    return error


def _mapped(failure: BaseException) -> StorageUnavailable:
    with pytest.raises(StorageUnavailable) as raised, storage_boundary():
        raise failure
    assert PERSONAL not in raised.value.message
    assert raised.value.__cause__ is failure
    return raised.value


# -- SQLite ----------------------------------------------------------------------


@pytest.fixture
def sqlite_path(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "pouch.db"
    engine = create_engine(f"sqlite:///{path}")
    upgrade_to_head(engine)
    engine.dispose()
    yield path


def test_a_write_to_a_read_only_sqlite_file_is_refused_as_storage_read_only(
    sqlite_path: Path,
) -> None:
    writable = create_engine(f"sqlite:///{sqlite_path}")
    read_only = create_engine(f"sqlite:///file:{sqlite_path}?mode=ro&uri=true")
    try:
        _write(writable, "AT-BE/first")
        assert _count(read_only) == 1

        with pytest.raises(StorageReadOnly) as raised:
            _write(read_only, "AT-BE/second")
    finally:
        read_only.dispose()
        writable.dispose()
    assert raised.value.reason == "STORAGE_READ_ONLY"
    assert PERSONAL not in raised.value.message


def test_a_write_lock_held_past_the_busy_timeout_is_refused_as_storage_locked(
    sqlite_path: Path,
) -> None:
    holder = create_engine(f"sqlite:///{sqlite_path}")
    waiter = create_engine(f"sqlite:///{sqlite_path}")

    def impatient(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.execute("PRAGMA busy_timeout=50")  # after the engine's own 5 s

    event.listen(waiter, "connect", impatient)
    try:
        _write(waiter, "AT-BE/before")
        with write_transaction(holder), pytest.raises(StorageLocked) as raised:
            _write(waiter, "AT-BE/while-held")
        _write(waiter, "AT-BE/after")
        assert _count(waiter) == 2
    finally:
        waiter.dispose()
        holder.dispose()
    assert raised.value.reason == "STORAGE_LOCKED"


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        (sqlite3.SQLITE_FULL, StorageFull),
        (sqlite3.SQLITE_READONLY, StorageReadOnly),
        (sqlite3.SQLITE_READONLY | (5 << 8), StorageReadOnly),  # SQLITE_READONLY_DBMOVED
        (sqlite3.SQLITE_BUSY, StorageLocked),
        (sqlite3.SQLITE_LOCKED, StorageLocked),
        (sqlite3.SQLITE_CANTOPEN, StorageUnavailable),
    ],
)
def test_each_sqlite_fault_is_named_by_its_primary_code(
    code: int, kind: type[StorageUnavailable]
) -> None:
    error = _mapped(_driver_failure(_sqlite_error(code, f"failed with {PERSONAL}")))
    assert type(error) is kind


@pytest.mark.parametrize(
    ("orig", "kind"),
    [
        (psycopg.errors.DiskFull(PERSONAL), StorageFull),
        (psycopg.errors.ReadOnlySqlTransaction(PERSONAL), StorageReadOnly),
        (psycopg.errors.LockNotAvailable(PERSONAL), StorageLocked),
        (psycopg.OperationalError("connection refused"), StorageUnavailable),
    ],
)
def test_each_postgresql_fault_is_named_by_its_sqlstate(
    orig: Exception, kind: type[StorageUnavailable]
) -> None:
    error = _mapped(_driver_failure(orig))
    assert type(error) is kind


def test_an_integrity_error_is_a_bug_and_not_a_storage_fault() -> None:
    failure = exc.IntegrityError("INSERT", (PERSONAL,), sqlite3.IntegrityError("UNIQUE"))
    with pytest.raises(exc.IntegrityError), storage_boundary():
        raise failure


# -- PostgreSQL -------------------------------------------------------------------


def _with_options(url: str, *options: str) -> str:
    parsed = make_url(url)
    existing = parsed.query.get("options", ())
    given = [existing] if isinstance(existing, str) else list(existing)
    joined = " ".join([*given, *options])
    return parsed.update_query_dict({"options": joined}).render_as_string(hide_password=False)


postgres_only = pytest.mark.parametrize(
    "database_url", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)


@postgres_only
def test_a_write_to_a_read_only_postgresql_session_is_refused_as_storage_read_only(
    migrated_engine: Engine, database_url: str
) -> None:
    read_only = create_engine(_with_options(database_url, "-cdefault_transaction_read_only=on"))
    try:
        _write(migrated_engine, "AT-BE/first")
        assert _count(read_only) == 1

        with pytest.raises(StorageReadOnly) as raised:
            _write(read_only, "AT-BE/second")
    finally:
        read_only.dispose()
    assert raised.value.reason == "STORAGE_READ_ONLY"
    assert PERSONAL not in raised.value.message


@postgres_only
def test_a_postgresql_table_locked_past_lock_timeout_is_refused_as_storage_locked(
    migrated_engine: Engine, database_url: str
) -> None:
    waiter = create_engine(_with_options(database_url, "-clock_timeout=100"))
    try:
        _write(waiter, "AT-BE/before")
        with migrated_engine.begin() as holder:
            holder.exec_driver_sql("LOCK TABLE agreement_lifecycle IN ACCESS EXCLUSIVE MODE")
            with pytest.raises(StorageLocked) as raised:
                _write(waiter, "AT-BE/while-held")
        _write(waiter, "AT-BE/after")
        assert _count(waiter) == 2
    finally:
        waiter.dispose()
    assert raised.value.reason == "STORAGE_LOCKED"


# -- a fault's start, course and end ------------------------------------------------


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _lines(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "gateway.store.faults"]


def test_a_fault_is_logged_once_at_start_at_most_once_a_minute_and_once_at_its_end(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = _Clock()
    faults = StorageFaults(monotonic=clock)
    told: list[str | None] = []
    faults.subscribe(told.append)
    caplog.set_level(logging.INFO, logger="gateway.store.faults")

    faults.committed()
    assert _lines(caplog) == []
    for _ in range(40):
        faults.refused(["STORAGE_FULL"])
        clock.now += 3.0  # 40 refusals over two minutes
    faults.committed()

    lines = _lines(caplog)
    assert lines[0] == (
        logging.WARNING,
        "storage fault STORAGE_FULL: writes are refused until the database takes one again",
    )
    summaries = [text for level, text in lines[1:-1]]
    assert len(summaries) == 1  # at 60 s; the next would be due at 120 s, after the end
    assert summaries[0].startswith("storage fault STORAGE_FULL goes on after 60 s")
    assert lines[-1] == (
        logging.INFO,
        "storage fault STORAGE_FULL ended after 120.0 s: 40 writes were refused meanwhile",
    )
    assert told == [None, "STORAGE_FULL", None]
    counts = faults.counts()
    assert counts.current is None
    assert counts.started["STORAGE_FULL"] == 1
    assert counts.refused["STORAGE_FULL"] == 40


def test_a_write_refused_for_its_own_reasons_starts_no_fault() -> None:
    faults = StorageFaults()
    faults.refused([])
    assert faults.current() is None
    assert faults.counts().started == dict.fromkeys(faults.counts().started, 0)


def _until(condition: Any, within_s: float = 10.0) -> None:
    deadline = time.monotonic() + within_s
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.01)


def test_a_fault_ends_by_the_committers_probe_without_any_write(
    sqlite_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    engine = create_engine(f"sqlite:///{sqlite_path}")
    group = GroupCommit(engine)
    told: list[str | None] = []
    group.faults.subscribe(told.append)
    caplog.set_level(logging.INFO, logger="gateway.store.faults")

    def full(conn: Connection) -> None:
        raise _driver_failure(_sqlite_error(sqlite3.SQLITE_FULL, "database or disk is full"))

    try:
        group.run(lambda conn: conn.execute(insert(agreement_lifecycle).values(_row("AT-BE/ok"))))
        event.listen(engine, "commit", full)
        with pytest.raises(StorageFull):
            group.run(
                lambda conn: conn.execute(insert(agreement_lifecycle).values(_row("AT-BE/lost")))
            )
        assert group.faults.current() == "STORAGE_FULL"
        time.sleep(0.6)  # the probe is refused at least once: the fault goes on
        assert group.faults.current() == "STORAGE_FULL"
        event.remove(engine, "commit", full)

        _until(lambda: group.faults.current() is None)
    finally:
        group.close()
        engine.dispose()
    assert told == [None, "STORAGE_FULL", None]
    ended = [text for level, text in _lines(caplog) if level == logging.INFO]
    assert len(ended) == 1
    assert "1 writes were refused meanwhile" in ended[0]
    assert PERSONAL not in caplog.text
    check = create_engine(f"sqlite:///{sqlite_path}")
    try:
        assert _count(check) == 1
        assert current_revision(check) == head_revision()  # the probe stored nothing
    finally:
        check.dispose()


def test_a_probe_stops_when_the_committer_closes(sqlite_path: Path) -> None:
    engine = create_engine(f"sqlite:///{sqlite_path}")
    group = GroupCommit(engine)

    def full(conn: Connection) -> None:
        raise _driver_failure(_sqlite_error(sqlite3.SQLITE_FULL, "database or disk is full"))

    event.listen(engine, "commit", full)
    try:
        with pytest.raises(StorageFull):
            group.run(lambda conn: conn.execute(insert(agreement_lifecycle).values(_row("x"))))
        closing = threading.Thread(target=group.close)
        closing.start()
        closing.join(timeout=2)
        assert not closing.is_alive()
        assert group.faults.current() == "STORAGE_FULL"
    finally:
        event.remove(engine, "commit", full)
        engine.dispose()
