"""Statements compiled once and run straight on the driver's cursor: the hottest ones.

SQLAlchemy Core spends tens of microseconds on every execution redoing what does not
change between two calls of one statement: the cache key, the parameter set, the
execution context, the result's metadata. The statements every exchange runs (the
audit rows, identity-query records, the quota step, the lifecycle read, the outbox's
and inbox's keyed updates, ``BEGIN`` on SQLite) are :class:`Prepared` instead:
compiled once per dialect and executed on the DBAPI cursor of the caller's
connection, inside its transaction (or, outside one, in the driver's own, which the
pool rolls back when the connection is returned).

Guarantees, so that nothing else needs to know:

* parameters pass through the bind processors SQLAlchemy itself would apply (a
  ``UTCDateTime`` is stored exactly as a Core insert stores it), so rows read back
  through SQLAlchemy are the same;
* a driver error is wrapped as SQLAlchemy wraps it, and a lost connection is
  invalidated first, so :func:`~gateway.store.engine.storage_boundary` and the group
  committer treat both alike;
* rows come back as the driver's tuples, without result processing: select only
  integers, strings and bytes.

An insert is compiled for the columns its rows name (``columns``): a column left out
gets its server default, never a Python-side one, and the tables used here have none.

Why it is kept, measured (``bench/fast_paths.py``, 2026-12-03, 2-core AMD EPYC, inside
one transaction, commits left out): against ``Connection.execute`` of the same
statement, an audit-entry insert is 1.5x faster on SQLite (saving 18-24 µs), an
identity-query insert 1.9-2.1x (11-14 µs), the lifecycle read 5.3-6x (14-16 µs); on
PostgreSQL 1.2x, 1.2x and 2.3x (30-75 µs of 130-200). An identity confirmation runs
about a dozen of these statements across both gateways: some 150-200 µs of the roughly
3,000 µs of gateway CPU it costs (``bench/README.md``), about 5 %, the largest of the
three hand-written paths measured there, and the identity-32 throughput is bound by
that CPU (as :mod:`gateway.jcs` and :mod:`gateway.protojson` are, for the same
reason). Nothing here is evidence: the rows are the ones SQLAlchemy writes, and
``tests/unit/store/test_prepared.py`` holds them equal.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, exc
from sqlalchemy.engine import Dialect
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

Processor = Callable[[Any], Any]


@dataclass(frozen=True)
class _Compiled:
    sql: str
    positional: bool
    defaults: tuple[tuple[str, Any], ...]  # every bind parameter, once, with its own value
    order: tuple[str, ...]  # for a positional driver: the parameters as the SQL places them
    processors: tuple[tuple[str, Processor], ...]

    def parameters(self, values: Mapping[str, Any]) -> Sequence[Any] | Mapping[str, Any]:
        """The driver's parameters. A name ``values`` lacks takes the value the statement
        gave it (a literal, such as a ``LIMIT``), or else NULL, as in a Core insert."""
        named = {name: values.get(name, default) for name, default in self.defaults}
        for name, process in self.processors:
            value = named[name]
            if value is not None:
                named[name] = process(value)
        return tuple(named[name] for name in self.order) if self.positional else named


def _compile(statement: ClauseElement, dialect: Dialect, columns: Sequence[str]) -> _Compiled:
    compiled = statement.compile(dialect=dialect, column_keys=list(columns) or None)
    if not isinstance(compiled, SQLCompiler):
        raise TypeError("only SQL statements can be prepared")
    if compiled.post_compile_params or compiled.literal_execute_params:
        # An expanding IN or a rendered LIMIT changes the SQL with each call's values.
        raise ValueError("a statement whose SQL depends on its values cannot be prepared")
    binds = {name: bind for bind, name in compiled.bind_names.items()}  # as rendered
    order = tuple(compiled.positiontup or ()) if dialect.positional else ()
    processors: list[tuple[str, Processor]] = []
    for name, bind in binds.items():
        process = bind.type.dialect_impl(dialect).bind_processor(dialect)
        if process is not None:
            processors.append((name, process))
    return _Compiled(
        sql=str(compiled),
        positional=bool(dialect.positional),
        defaults=tuple(
            (name, None if bind.required else bind.effective_value) for name, bind in binds.items()
        ),
        order=order,
        processors=tuple(processors),
    )


class Prepared:
    """One statement, compiled on first use for each dialect it runs on."""

    def __init__(self, statement: ClauseElement, *, columns: Sequence[str] = ()) -> None:
        self._statement = statement
        self._columns = tuple(columns)
        self._by_dialect: dict[str, _Compiled] = {}
        self._lock = threading.Lock()

    def _for(self, dialect: Dialect) -> _Compiled:
        compiled = self._by_dialect.get(dialect.name)
        if compiled is None:
            with self._lock:
                compiled = self._by_dialect.get(dialect.name)
                if compiled is None:
                    compiled = _compile(self._statement, dialect, self._columns)
                    self._by_dialect[dialect.name] = compiled
        return compiled

    def execute(self, conn: Connection, values: Mapping[str, Any]) -> int:
        """Run once in ``conn``'s transaction; the number of rows it changed."""
        compiled = self._for(conn.dialect)
        parameters = compiled.parameters(values)
        with _DriverCursor(conn, compiled.sql, parameters) as cursor:
            cursor.execute(compiled.sql, parameters)
            return int(cursor.rowcount)

    def execute_many(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        """Run once per row of ``rows``, in order, in ``conn``'s transaction."""
        if not rows:
            return
        compiled = self._for(conn.dialect)
        parameters = [compiled.parameters(row) for row in rows]
        with _DriverCursor(conn, compiled.sql, parameters) as cursor:
            cursor.executemany(compiled.sql, parameters)

    def rows(self, conn: Connection, values: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """Run once and return every row, as the driver gives it."""
        compiled = self._for(conn.dialect)
        parameters = compiled.parameters(values)
        with _DriverCursor(conn, compiled.sql, parameters) as cursor:
            cursor.execute(compiled.sql, parameters)
            return [tuple(row) for row in cursor.fetchall()]


class _DriverCursor:
    """A cursor of ``conn``'s driver connection; its errors wrapped as SQLAlchemy does."""

    def __init__(self, conn: Connection, sql: str, parameters: Any) -> None:
        self._conn = conn
        self._sql = sql
        self._parameters = parameters
        self._dbapi_connection = conn.connection.dbapi_connection
        self._cursor: Any = None

    def __enter__(self) -> Any:
        assert self._dbapi_connection is not None
        self._cursor = self._dbapi_connection.cursor()
        return self._cursor

    def __exit__(self, kind: object, error: BaseException | None, traceback: object) -> None:
        cursor, self._cursor = self._cursor, None
        if cursor is not None:
            cursor.close()
        dialect = self._conn.dialect
        if not isinstance(error, dialect.loaded_dbapi.Error):
            return
        lost = dialect.is_disconnect(error, self._dbapi_connection, cursor)
        if lost:
            self._conn.invalidate(error)
        raise exc.DBAPIError.instance(
            self._sql,
            self._parameters,
            error,
            dialect.loaded_dbapi.Error,
            connection_invalidated=lost,
            dialect=dialect,
        ) from error
