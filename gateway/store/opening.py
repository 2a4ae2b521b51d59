"""Creating a Pouch database is an explicit step; opening one never creates anything.

:func:`initialise_database` is what ``pouch db init`` runs: it creates the SQLite file
(never its directory) or the schema in an existing PostgreSQL database, and migrates it
to head. :func:`open_database` is what a gateway runs at start: the database must exist
and hold a Pouch schema this build knows, or start-up stops with the reason. A typo in
``database_url`` therefore fails loudly instead of starting a second, empty state.

Every refusal is a :class:`~gateway.errors.StorageUnavailable` whose message is the
rule alone (the caller adds the configuration key and the redacted URL) and whose
reason code says which rule: a missing database, a directory that does not exist, a
file that is not a database, a database of something else, a server that refuses,
authentication, a database name the server does not know. Messages of the drivers are
never quoted: they can carry the user name or parts of the URL.

Every call here blocks.

Example::

    initialise_database("sqlite:////var/lib/pouch/pouch.db", init_hint="pouch db init")
    engine = open_database("sqlite:////var/lib/pouch/pouch.db", init_hint="pouch db init")
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sqlalchemy import Engine, exc, inspect

from gateway.errors import StorageUnavailable
from gateway.store.engine import create_engine, open_engine, read_transaction, sqlite_path
from gateway.store.migrate import (
    current_revision,
    head_revision,
    known_revisions,
    upgrade_to_head,
)
from gateway.store.tables import VERSION_TABLE

_SQLITE_NOTADB = 26
_AUTHENTICATION_STATES = {"28P01", "28000"}
_UNKNOWN_DATABASE_STATE = "3D000"


def _refused(message: str, reason: str) -> StorageUnavailable:
    return StorageUnavailable(message, reason=reason)


def open_database(url: str, *, init_hint: str) -> Engine:
    """The engine of the existing Pouch database at ``url``, checked to be one.

    ``init_hint`` is the command that creates it, quoted when it is missing. Migrations
    are not applied here: the caller runs :func:`~gateway.store.migrate.upgrade_to_head`.
    """
    engine = open_engine(url)
    try:
        require_pouch_database(engine, url, init_hint=init_hint)
    except BaseException:
        engine.dispose()
        raise
    return engine


def require_pouch_database(engine: Engine, url: str, *, init_hint: str) -> None:
    """Refuse unless ``engine`` (made by ``open_engine(url)``) reaches a Pouch database."""
    path = sqlite_path(url)
    if path is not None:
        _require_sqlite_file(path, init_hint)
    _require_pouch_schema(engine, init_hint)


def initialise_database(url: str) -> tuple[str, bool]:
    """Create the database at ``url`` if need be and migrate it to head.

    Returns the revision it is at and whether it held no Pouch schema before. A database
    holding tables of something else is refused, never migrated into.
    """
    path = sqlite_path(url)
    if path is not None:
        if not path.parent.is_dir():
            raise _refused(
                f"the directory {path.parent} does not exist; create it first "
                "(it is never created for you)",
                "DATABASE_DIRECTORY_MISSING",
            )
        if path.exists() and not path.is_file():
            raise _refused("is not a regular file", "DATABASE_NOT_A_FILE")
    engine = create_engine(url)
    try:
        revision = _probe(engine)
        fresh = revision is None
        if fresh and _has_tables(engine):
            raise _refused(
                f"holds tables but no {VERSION_TABLE} table: not a Pouch database, "
                "refusing to add one to it",
                "NOT_A_POUCH_DATABASE",
            )
        _require_known(revision)
        upgrade_to_head(engine)
    finally:
        engine.dispose()
    return head_revision(), fresh


def _require_sqlite_file(path: Path, init_hint: str) -> None:
    if not path.parent.is_dir():
        raise _refused(
            f"the directory {path.parent} does not exist (it is never created at start); "
            f"create it, then run `{init_hint}`",
            "DATABASE_DIRECTORY_MISSING",
        )
    if not path.exists():
        raise _refused(
            f"no database here; a new state's database is created once, by `{init_hint}`",
            "DATABASE_MISSING",
        )
    if not path.is_file():
        raise _refused("is not a regular file: name the database file", "DATABASE_NOT_A_FILE")


def _require_pouch_schema(engine: Engine, init_hint: str) -> None:
    revision = _probe(engine)
    if revision is None:
        if _has_tables(engine):
            raise _refused(
                f"holds no {VERSION_TABLE} table: not a Pouch database",
                "NOT_A_POUCH_DATABASE",
            )
        raise _refused(
            f"holds no Pouch schema yet; create it once with `{init_hint}`",
            "DATABASE_MISSING",
        )
    _require_known(revision)


def _require_known(revision: str | None) -> None:
    if revision is not None and revision not in known_revisions():
        raise _refused(
            f"is at schema revision {revision}, unknown to this version of Pouch "
            "(written by a newer one?)",
            "UNKNOWN_SCHEMA_REVISION",
        )


def _probe(engine: Engine) -> str | None:
    """The schema revision, after the first real connection; failures named by rule."""
    try:
        return current_revision(engine)
    except StorageUnavailable as e:
        raise _classified(e.__cause__) from e
    except exc.DatabaseError as e:  # not operational: e.g. a file that is not a database
        raise _classified(e) from e


def _has_tables(engine: Engine) -> bool:
    with read_transaction(engine) as conn:
        return bool(inspect(conn).get_table_names())


def _classified(error: BaseException | None) -> StorageUnavailable:
    original = error.orig if isinstance(error, exc.DBAPIError) else error
    if isinstance(original, sqlite3.Error):
        if getattr(original, "sqlite_errorcode", None) == _SQLITE_NOTADB:
            return _refused("is not an SQLite database file", "NOT_A_DATABASE")
        return _refused(
            "cannot be opened: check its permissions, and that it is not locked",
            "DATABASE_UNREACHABLE",
        )
    state = getattr(original, "sqlstate", None)
    text = str(original).lower()
    if state in _AUTHENTICATION_STATES or "authentication failed" in text:
        return _refused(
            "authentication failed: check the user and password", "DATABASE_AUTHENTICATION"
        )
    if state == _UNKNOWN_DATABASE_STATE or ("database" in text and "does not exist" in text):
        return _refused(
            "the server has no such database: create it (CREATE DATABASE), "
            "then run `pouch db init`",
            "DATABASE_UNKNOWN",
        )
    if "connection refused" in text:
        return _refused(
            "the host refused the connection: is PostgreSQL running and listening there?",
            "DATABASE_REFUSED",
        )
    if "translate host name" in text or "name or service not known" in text:
        return _refused("the host name does not resolve", "DATABASE_HOST_UNKNOWN")
    if "timeout" in text:
        return _refused("no answer from the host before the connect timeout", "DATABASE_TIMEOUT")
    return _refused("cannot be reached or is busy", "DATABASE_UNREACHABLE")
