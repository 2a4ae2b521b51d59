"""The engine settings that durability and safe logging depend on."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from gateway.errors import StorageUnavailable
from gateway.store.engine import (
    SQLITE_BUSY_TIMEOUT_MS,
    create_engine,
    read_transaction,
    redact_url,
    write_transaction,
)


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Engine:
    return create_engine(f"sqlite:///{tmp_path / 'nested' / 'dir' / 'pouch.db'}")


def test_sqlite_runs_in_wal_mode(sqlite_engine: Engine) -> None:
    with write_transaction(sqlite_engine) as conn:
        conn.execute(text("CREATE TABLE probe (x INTEGER)"))
    # Every pooled connection is configured, not just the first one.
    with sqlite_engine.connect() as first, sqlite_engine.connect() as second:
        for conn in (first, second):
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            timeout = conn.exec_driver_sql("PRAGMA busy_timeout").scalar()
            assert timeout == SQLITE_BUSY_TIMEOUT_MS
    sqlite_engine.dispose()


def test_sqlite_parent_directory_is_created(tmp_path: Path, sqlite_engine: Engine) -> None:
    with read_transaction(sqlite_engine) as conn:
        conn.execute(text("SELECT 1"))
    assert (tmp_path / "nested" / "dir" / "pouch.db").is_file()
    sqlite_engine.dispose()


def test_sqlite_ddl_rolls_back_with_its_transaction(sqlite_engine: Engine) -> None:
    # The sqlite3 module would autocommit DDL; a failed migration must leave nothing.
    with pytest.raises(RuntimeError), write_transaction(sqlite_engine) as conn:
        conn.execute(text("CREATE TABLE half_migrated (x INTEGER)"))
        raise RuntimeError("migration failed midway")
    with read_transaction(sqlite_engine) as conn:
        names = conn.exec_driver_sql("SELECT name FROM sqlite_master").scalars().all()
    assert "half_migrated" not in names
    sqlite_engine.dispose()


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:"])
def test_in_memory_sqlite_is_refused_as_not_durable(url: str) -> None:
    with pytest.raises(ValueError, match="not durable"):
        create_engine(url)


@pytest.mark.parametrize("url", ["mysql://u@h/db", "postgresql+psycopg2://u@h/db", "nonsense"])
def test_unsupported_database_is_refused(url: str) -> None:
    with pytest.raises(ValueError):
        create_engine(url)


def test_plain_postgresql_url_uses_psycopg_3() -> None:
    engine = create_engine("postgresql://pouch@db.example:5432/pouch")
    assert engine.url.drivername == "postgresql+psycopg"
    assert engine.dialect.driver == "psycopg"
    assert engine.pool._pre_ping


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg://pouch:s3cr3t-pw@db.example:5432/pouch",
        "postgresql://pouch@db.example/pouch?password=s3cr3t-pw&sslmode=require",
    ],
)
def test_redacted_url_never_shows_the_password(url: str) -> None:
    redacted = redact_url(url)
    assert "s3cr3t-pw" not in redacted
    assert "db.example" in redacted


def test_unparseable_url_is_not_echoed_into_logs() -> None:
    assert "s3cr3t" not in redact_url("::s3cr3t::")


def test_unreachable_database_is_storage_unavailable() -> None:
    # Port 1 on loopback refuses at once: a system fault the caller may retry.
    engine = create_engine("postgresql://pouch:pw@127.0.0.1:1/pouch?connect_timeout=2")
    with pytest.raises(StorageUnavailable) as raised, read_transaction(engine) as conn:
        conn.execute(text("SELECT 1"))
    assert raised.value.retry_after_s is not None
    assert "pw" not in raised.value.message
    engine.dispose()
