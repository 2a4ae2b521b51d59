"""Database engines for the gateway, and the boundary where database failures are wrapped.

Two engines are supported and nothing else is accepted:

* ``sqlite:///path`` is the embedded default. Every connection runs in WAL mode with
  ``synchronous=FULL`` (a committed transaction is on disk before the commit returns, so
  ``kill -9`` or a power cut loses nothing that was acknowledged), ``foreign_keys=ON``
  and a busy timeout. An in-memory database is refused: it is never durable, and each
  pooled connection would see a different one.
* ``postgresql://`` or ``postgresql+psycopg://`` is the production engine, shared by
  several replicas of one state; plain ``postgresql://`` is normalised to psycopg 3.
  Pooled connections are pinged before use, and connecting gives up after ten seconds
  unless the URL sets its own ``connect_timeout``.

Database failures leave :func:`storage_boundary` as
:class:`~gateway.errors.StorageUnavailable` or the subclass naming the fault (full,
read-only, locked); :mod:`gateway.store.faults` holds the map.

On SQLite the gateway, not the ``sqlite3`` module, emits ``BEGIN``: the module's legacy
transaction control would leave DDL and SELECTs outside the transaction. A transaction
opened by :func:`write_transaction` starts with ``BEGIN IMMEDIATE``, taking the write
lock up front, so concurrent writers queue on the busy timeout instead of failing on a
lock upgrade halfway through.

Every call here blocks. The async server writes through the group committer
(:meth:`~gateway.store.group_commit.GroupCommit.write` awaits a unit the committer thread
runs) and calls the rest of the store through ``asyncio.to_thread``; nothing else in this
package may be called on the event loop.
"""

from __future__ import annotations

import functools
import sqlite3
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import sqlalchemy
from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Insert,
    Table,
    bindparam,
    event,
    exc,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, make_url

from gateway.store.faults import storage_error
from gateway.store.prepared import Prepared

SQLITE_BUSY_TIMEOUT_MS = 5000
"""How long an SQLite connection waits for another writer before giving up."""

_BEGIN_IMMEDIATE = "pouch_sqlite_begin_immediate"


def create_engine(url: str) -> Engine:
    """Create the engine for ``url``; raise :class:`ValueError` for anything unsupported.

    An SQLite file and its directory are created on first connection: for tools and
    tests. A gateway opens its database with :func:`open_engine`, which creates nothing.
    """
    parsed = _parse(url)
    if parsed.get_backend_name() == "sqlite":
        return _create_sqlite_engine(parsed)
    connect_args = {} if "connect_timeout" in parsed.query else {"connect_timeout": 10}
    return sqlalchemy.create_engine(parsed, pool_pre_ping=True, connect_args=connect_args)


def open_engine(url: str) -> Engine:
    """The engine for an existing database at ``url``; nothing is ever created through it.

    An SQLite file is opened read-write but never created (``mode=rw``), so a mistyped
    path fails instead of starting an empty database next to the real one. A URL that
    already sets ``uri=true`` is used as given.
    """
    parsed = _parse(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url)
    database = parsed.database or ""
    if parsed.query.get("uri") or database in ("", ":memory:"):
        return _create_sqlite_engine(parsed)
    existing = parsed.set(database="file:" + quote(database)).update_query_dict(
        {"mode": "rw", "uri": "true"}
    )
    return _create_sqlite_engine(existing)


def sqlite_path(url: str) -> Path | None:
    """The file an ``sqlite:///path`` URL names; ``None`` for other engines and URI forms."""
    parsed = _parse(url)
    if parsed.get_backend_name() != "sqlite" or parsed.query.get("uri"):
        return None
    database = parsed.database or ""
    return None if database in ("", ":memory:") else Path(database)


def redact_url(url: str) -> str:
    """Render ``url`` for logs, with any password (in the authority or query) hidden."""
    try:
        parsed = make_url(url)
    except exc.ArgumentError:
        return "<unparseable database url>"
    if "password" in parsed.query:
        parsed = parsed.update_query_dict({"password": "***"})
    return parsed.render_as_string(hide_password=True)


def is_postgresql(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


def insert_unless_present(engine: Engine, table: Table) -> Insert:
    """``INSERT ... ON CONFLICT DO NOTHING`` in the engine's dialect.

    A row whose key is already stored is skipped without an error and without waiting
    for a retry; add ``RETURNING`` to learn which rows were new.
    """
    if is_postgresql(engine):
        return postgresql.insert(table).on_conflict_do_nothing()
    return sqlite.insert(table).on_conflict_do_nothing()


@functools.cache
def keyed_update(
    table: Table, condition: ColumnElement[bool], columns: tuple[str, ...]
) -> Prepared:
    """``UPDATE table SET column = :new_<column>, ... WHERE message_id = :target_message_id
    AND condition``, prepared once per (table, condition, columns): pass module-level
    conditions, and execute with :func:`keyed_update_parameters`."""
    return Prepared(
        update(table)
        .where(table.c.message_id == bindparam("target_message_id"), condition)
        .values({column: bindparam(f"new_{column}") for column in columns})
    )


def keyed_update_parameters(message_id: str, values: Mapping[str, object]) -> dict[str, object]:
    """The parameters of :func:`keyed_update` setting ``values`` on ``message_id``'s row."""
    parameters = {f"new_{column}": value for column, value in values.items()}
    parameters["target_message_id"] = message_id
    return parameters


@contextmanager
def storage_boundary() -> Iterator[None]:
    """Turn a failure of the database itself into :class:`~gateway.errors.StorageUnavailable`.

    A full disk, a read-only database and a lock held past the timeout each leave as
    their own subclass; lost connections, timeouts and other operational failures as
    ``StorageUnavailable`` itself (the map is :func:`gateway.store.faults.storage_error`).
    Anything else (a constraint the code should have respected, an SQL error) is a bug
    and propagates unchanged.
    """
    try:
        yield
    except (exc.DBAPIError, exc.TimeoutError) as e:
        error = storage_error(e)
        if error is None:
            raise
        raise error from e


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """One transaction that will write, committed when the block ends without error.

    On SQLite it begins with ``BEGIN IMMEDIATE`` so that writers serialise at the start.
    Database failures leave as :class:`~gateway.errors.StorageUnavailable`.
    """
    with storage_boundary(), engine.connect() as conn:
        conn.execution_options(**{_BEGIN_IMMEDIATE: True})
        with conn.begin():
            yield conn


def writer_connection(engine: Engine) -> Connection:
    """A connection kept open by one writer, whose every ``begin()`` starts a write
    transaction (``BEGIN IMMEDIATE`` on SQLite); the caller closes it."""
    with storage_boundary():
        conn = engine.connect()
    conn.execution_options(**{_BEGIN_IMMEDIATE: True})
    return conn


@contextmanager
def read_transaction(engine: Engine) -> Iterator[Connection]:
    """One read-only transaction, begun on first use and rolled back at the end."""
    with storage_boundary(), engine.connect() as conn:
        yield conn


def _parse(url: str) -> URL:
    try:
        parsed = make_url(url)
    except exc.ArgumentError as e:
        raise ValueError(f"not a database URL: {redact_url(url)}") from e
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.drivername not in ("sqlite", "postgresql+psycopg"):
        raise ValueError(
            f"unsupported database {parsed.drivername!r}: use sqlite:///path or postgresql://"
        )
    return parsed


def _create_sqlite_engine(url: URL) -> Engine:
    database = url.database or ""
    if database in ("", ":memory:") or url.query.get("mode") == "memory":
        raise ValueError("an in-memory SQLite database is not durable: give a file path")
    if not url.query.get("uri"):
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = sqlalchemy.create_engine(url)
    event.listen(engine, "connect", _configure_sqlite_connection)
    event.listen(engine, "begin", _begin_sqlite_transaction)
    return engine


def _configure_sqlite_connection(dbapi_connection: Any, _record: Any) -> None:
    assert isinstance(dbapi_connection, sqlite3.Connection)
    # Hand transaction control to SQLAlchemy's "begin" event (see module docstring).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_MS)}")
        mode = _switch_to_wal(cursor)
        if mode != "wal":
            raise RuntimeError(f"SQLite refused WAL journal mode (got {mode!r})")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


def _switch_to_wal(cursor: sqlite3.Cursor) -> str:
    # SQLite answers SQLITE_BUSY at once, without calling the busy handler, when another
    # connection is switching a new file to WAL or opening its WAL; wait here instead.
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            (mode,) = cursor.execute("PRAGMA journal_mode=WAL").fetchone()
            return str(mode).lower()
        except sqlite3.OperationalError as e:
            busy = e.sqlite_errorcode & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
            if not busy or time.monotonic() > deadline:
                raise
            time.sleep(0.005)


_BEGIN = {True: Prepared(text("BEGIN IMMEDIATE")), False: Prepared(text("BEGIN"))}


def _begin_sqlite_transaction(conn: Connection) -> None:
    # Every group commit begins here: straight on the driver, errors wrapped alike.
    _BEGIN[bool(conn.get_execution_options().get(_BEGIN_IMMEDIATE, False))].execute(conn, {})
