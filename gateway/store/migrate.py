"""Bring the database schema to the current revision at start, safely and idempotently.

:func:`upgrade_to_head` is what a gateway process calls before it serves anything. It
may be called by several processes at once (replicas of one state starting together
against one PostgreSQL database): the whole upgrade runs in one transaction that first
takes a transaction-scoped advisory lock, keyed on the current schema, so one process
migrates and the others then find the schema at head and do nothing. On SQLite the same
transaction begins with ``BEGIN IMMEDIATE``, which serialises starters the same way.
A failed upgrade rolls back as a whole, DDL included. The database lock is taken before
any Alembic code runs, which also keeps two threads of one process out of Alembic's
module-global migration context at the same time.

The Alembic script directory ships inside this package and the Alembic configuration
is built here in code; no ``alembic.ini`` is read. The version table is ``schema_info``.

Every call here blocks; from async code use ``asyncio.to_thread``.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, func, select

from gateway.pki.sealing import PayloadSealer
from gateway.store.engine import is_postgresql, read_transaction, write_transaction
from gateway.store.tables import VERSION_TABLE, metadata

SCRIPT_LOCATION = Path(__file__).parent / "migrations"

# First key of the two-key advisory lock: "Pouc". The second key is the schema's hash,
# so separate schemas in one database migrate independently.
_MIGRATION_LOCK_CLASS = 0x506F7563


def upgrade_to_head(engine: Engine, *, sealer: PayloadSealer | None = None) -> None:
    """Apply every migration not yet applied; do nothing if the schema is at head.

    ``sealer`` opens stored payloads for a migration that reads them (0010 computes the
    request digests of inbox rows stored before they were kept); without it such a
    migration stops at the first sealed payload it needs, and nothing is applied.
    """
    with write_transaction(engine) as conn:
        if is_postgresql(engine):
            conn.execute(
                select(
                    func.pg_advisory_xact_lock(
                        _MIGRATION_LOCK_CLASS, func.hashtext(func.current_schema())
                    )
                )
            )
        config = _config(conn)
        config.attributes["sealer"] = sealer
        command.upgrade(config, "head")


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, or ``None`` if it was never migrated."""
    with read_transaction(engine) as conn:
        return _migration_context(conn).get_current_revision()


def head_revision() -> str:
    """The newest revision this build of the gateway knows."""
    head = ScriptDirectory.from_config(_config()).get_current_head()
    if head is None:
        raise RuntimeError(f"no migrations found in {SCRIPT_LOCATION}")
    return head


def known_revisions() -> frozenset[str]:
    """Every revision this build of the gateway can migrate from."""
    return frozenset(s.revision for s in ScriptDirectory.from_config(_config()).walk_revisions())


def schema_drift(engine: Engine) -> list[object]:
    """Differences between the migrated schema and ``tables.metadata``; empty if none."""
    with read_transaction(engine) as conn:
        return list(compare_metadata(_migration_context(conn), metadata))


def _migration_context(conn: Connection) -> MigrationContext:
    return MigrationContext.configure(
        conn, opts={"version_table": VERSION_TABLE, "compare_type": True}
    )


def _config(connection: Connection | None = None) -> Config:
    config = Config()
    # Config values go through ConfigParser interpolation; a '%' in the path must not.
    config.set_main_option("script_location", str(SCRIPT_LOCATION).replace("%", "%%"))
    config.set_main_option("path_separator", "os")
    if connection is not None:
        config.attributes["connection"] = connection
    return config
