"""Schema migrations: applied at start, idempotent, concurrent-safe, and true to tables.py."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from threading import Barrier

from sqlalchemy import Engine, String, column, inspect, select, table, text

from gateway.store.engine import create_engine, write_transaction
from gateway.store.migrate import current_revision, head_revision, schema_drift, upgrade_to_head
from gateway.store.tables import VERSION_TABLE


def test_migrations_apply_from_empty_database_and_are_idempotent(engine: Engine) -> None:
    assert current_revision(engine) is None

    upgrade_to_head(engine)
    upgrade_to_head(engine)

    assert current_revision(engine) == head_revision() == "0001"
    tables = set(inspect(engine).get_table_names())
    assert {"outbox", "inbox", VERSION_TABLE} <= tables
    with engine.connect() as conn:
        query = select(column("version_num", String)).select_from(table(VERSION_TABLE))
        versions = conn.execute(query).scalars().all()
    assert versions == ["0001"]


def test_migrated_schema_matches_table_definitions(migrated_engine: Engine) -> None:
    assert schema_drift(migrated_engine) == []


def test_schema_drift_is_detected_when_the_database_differs(migrated_engine: Engine) -> None:
    # Guards the guard: a comparison that never finds anything would prove nothing.
    with write_transaction(migrated_engine) as conn:
        conn.execute(text("DROP INDEX ix_outbox_status_next_attempt_at"))
    drift = schema_drift(migrated_engine)
    assert drift
    assert "ix_outbox_status_next_attempt_at" in repr(drift)


def test_concurrent_migrations_on_postgres_do_not_fail(database_url: str) -> None:
    # Two replicas starting at once, each with its own engine (as two processes would).
    starting_line = Barrier(2)

    def start_replica() -> str | None:
        engine = create_engine(database_url)
        try:
            starting_line.wait(timeout=10)
            upgrade_to_head(engine)
            return current_revision(engine)
        finally:
            engine.dispose()

    with ThreadPoolExecutor(max_workers=2) as pool:
        revisions = [f.result(timeout=30) for f in [pool.submit(start_replica) for _ in "ab"]]

    assert revisions == [head_revision()] * 2
    engine = create_engine(database_url)
    try:
        assert schema_drift(engine) == []
    finally:
        engine.dispose()
