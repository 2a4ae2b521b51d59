"""Schema migrations: applied at start, idempotent, concurrent-safe, and true to tables.py."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from threading import Barrier

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, String, column, exc, insert, inspect, select, table, text

from gateway.envelope import envelope_digest
from gateway.pki.sealing import KEY_BYTES, PayloadSealer, SealingKeys
from gateway.store import tables
from gateway.store.engine import create_engine, write_transaction
from gateway.store.inbox import Inbox, InboxStatus
from gateway.store.migrate import (
    SCRIPT_LOCATION,
    current_revision,
    head_revision,
    schema_drift,
    upgrade_to_head,
)
from gateway.store.outbox import Outbox, OutboxStatus
from gateway.store.tables import VERSION_TABLE
from tests.unit.envelope import make_pki

from .conftest import START, FakeClock


def test_migrations_apply_from_empty_database_and_are_idempotent(engine: Engine) -> None:
    assert current_revision(engine) is None

    upgrade_to_head(engine)
    upgrade_to_head(engine)

    assert current_revision(engine) == head_revision() == "0011"
    tables = set(inspect(engine).get_table_names())
    assert {"outbox", "inbox", "quota_usage", "agreement_lifecycle", VERSION_TABLE} <= tables
    assert set(_AUDIT_TABLES) <= tables
    with engine.connect() as conn:
        query = select(column("version_num", String)).select_from(table(VERSION_TABLE))
        versions = conn.execute(query).scalars().all()
    assert versions == ["0011"]


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


def test_migration_0002_upgrades_a_0001_database_with_rows(engine: Engine) -> None:
    _alembic(engine, command.upgrade, "0001")
    with write_transaction(engine) as conn:
        conn.execute(insert(tables.outbox).values(_OUTBOX_0001_ROW))
        conn.execute(insert(tables.inbox).values(_INBOX_0001_ROW))

    upgrade_to_head(engine)

    assert current_revision(engine) == head_revision()
    assert schema_drift(engine) == []
    clock = FakeClock(START)
    queued = Outbox(engine, clock=clock).get("m-out")
    assert queued is not None
    assert queued.envelope == b"signed envelope m-out"
    assert queued.status is OutboxStatus.PENDING
    assert (queued.deadline_at, queued.created_at) == (START + timedelta(days=7), START)
    assert (queued.principal, queued.client_reference, queued.kind) == (None, None, None)
    assert (queued.outcome, queued.receipt, queued.payload_purged_at) == (None, None, None)
    received = Inbox(engine, clock=clock).get("m-in")
    assert received is not None
    assert received.envelope == b"signed envelope m-in"
    assert received.status is InboxStatus.HANDED_OVER
    assert received.ack_sent is False
    assert (received.kind, received.purpose, received.handed_over_at) == (None, None, None)
    # The upgraded rows keep working with the new code.
    (claimed,) = Outbox(engine, clock=clock).claim_due("worker-a", limit=5, lease_s=30)
    assert claimed.message_id == "m-out"
    assert Inbox(engine, clock=clock).record_outcome("m-in", "applied") is True


def test_check_constraints_survive_the_0002_rebuild(migrated_engine: Engine) -> None:
    # SQLite rebuilds outbox and inbox to relax envelope; the rebuild must keep the rules.
    bad_rows = [
        (tables.outbox, {**_OUTBOX_0001_ROW, "status": "lost"}),
        (tables.outbox, {**_OUTBOX_0001_ROW, "attempts": -1}),
        (tables.outbox, {**_OUTBOX_0001_ROW, "outcome": "maybe"}),
        (tables.inbox, {**_INBOX_0001_ROW, "status": "lost"}),
    ]
    for table_, row in bad_rows:
        with pytest.raises(exc.IntegrityError), write_transaction(migrated_engine) as conn:
            conn.execute(insert(table_).values(row))


def test_0002_downgrades_to_0001_and_upgrades_again(migrated_engine: Engine) -> None:
    _alembic(migrated_engine, command.downgrade, "0001")
    assert current_revision(migrated_engine) == "0001"
    assert "quota_usage" not in inspect(migrated_engine).get_table_names()

    upgrade_to_head(migrated_engine)

    assert schema_drift(migrated_engine) == []


def test_0003_downgrades_to_0002_and_upgrades_again(migrated_engine: Engine) -> None:
    _alembic(migrated_engine, command.downgrade, "0002")
    assert current_revision(migrated_engine) == "0002"
    assert not set(_AUDIT_TABLES) & set(inspect(migrated_engine).get_table_names())

    upgrade_to_head(migrated_engine)

    assert schema_drift(migrated_engine) == []


_AUDIT_TABLES = (
    "audit_entries",
    "audit_nodes",
    "audit_checkpoints",
    "audit_cosignatures",
    "witnessed_checkpoints",
)

_OUTBOX_0001_ROW = {
    "message_id": "m-out",
    "agreement_id": "FR-DE/civil-records",
    "agreement_version": 3,
    "exchange_type": "civil_record_update",
    "recipient_state": "DE",
    "purpose": "civil-status-update",
    "envelope": b"signed envelope m-out",
    "status": "pending",
    "attempts": 0,
    "next_attempt_at": START,
    "deadline_at": START + timedelta(days=7),
    "created_at": START,
    "updated_at": START,
}
_INBOX_0001_ROW = {
    "message_id": "m-in",
    "sender_state": "FR",
    "agreement_id": "FR-DE/civil-records",
    "exchange_type": "civil_record_update",
    "received_at": START,
    "envelope": b"signed envelope m-in",
    "status": "handed_over",
}


def _alembic(engine: Engine, step: Callable[[Config, str], None], revision: str) -> None:
    """Move the schema to ``revision``, as ``upgrade_to_head`` does but to any revision."""
    with write_transaction(engine) as conn:
        config = Config()
        config.set_main_option("script_location", str(SCRIPT_LOCATION))
        config.set_main_option("path_separator", "os")
        config.attributes["connection"] = conn
        step(config, revision)


def test_0010_fills_the_request_digest_of_rows_stored_before_it_was_kept(
    engine: Engine, tmp_path: Path
) -> None:
    envelope = make_pki(tmp_path).envelope()
    sealer = PayloadSealer(SealingKeys(secrets.token_bytes(KEY_BYTES)))
    _alembic(engine, command.upgrade, "0009")
    stored = sealer.seal(envelope.SerializeToString(), aad=f"inbox:{envelope.message_id}")
    with write_transaction(engine) as conn:
        conn.execute(
            insert(tables.inbox).values(
                {**_INBOX_0001_ROW, "message_id": envelope.message_id, "envelope": stored}
            )
        )
        purged = {**_INBOX_0001_ROW, "message_id": "m-purged", "envelope": None}
        conn.execute(insert(tables.inbox).values(purged))

    upgrade_to_head(engine, sealer=sealer)

    received = Inbox(engine, clock=FakeClock(START), sealer=sealer)
    kept = received.get(envelope.message_id)
    assert kept is not None
    assert kept.request_digest == envelope_digest(envelope)
    assert kept.dead_reason is None
    lost = received.get("m-purged")
    assert lost is not None
    assert (lost.request_digest, lost.dead_reason) == (None, "REQUEST_DIGEST_LOST")


def test_0010_without_the_sealing_keys_stops_and_changes_nothing(
    engine: Engine, tmp_path: Path
) -> None:
    envelope = make_pki(tmp_path).envelope()
    sealer = PayloadSealer(SealingKeys(secrets.token_bytes(KEY_BYTES)))
    _alembic(engine, command.upgrade, "0009")
    stored = sealer.seal(envelope.SerializeToString(), aad=f"inbox:{envelope.message_id}")
    with write_transaction(engine) as conn:
        conn.execute(
            insert(tables.inbox).values(
                {**_INBOX_0001_ROW, "message_id": envelope.message_id, "envelope": stored}
            )
        )

    with pytest.raises(RuntimeError, match="sealing keys"):
        upgrade_to_head(engine)

    assert current_revision(engine) == "0009"
