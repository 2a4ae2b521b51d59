"""The SQL interface-table adapter, on an SQLite file and on PostgreSQL.

PostgreSQL runs when ``POUCH_TEST_DATABASE_URL`` names a server; each test gets a fresh
schema, dropped afterwards. Without it the PostgreSQL half is skipped locally and fails
under CI (``CI=true``).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, exc, func, select, update
from sqlalchemy.engine import make_url

from adapters.base import (
    APPLIED,
    GENERIC_REJECTION,
    InboundUpdate,
    RegistryDecision,
    RegistryOutcome,
    RegistryUnavailable,
)
from adapters.sql_table import SqlTableAdapter, inbound_updates
from gateway.store.engine import create_engine
from pouch.v1 import civil_pb2, common_pb2

DATABASE_URL_ENV = "POUCH_TEST_DATABASE_URL"
RECEIVED = datetime(2025, 1, 2, 8, 30, tzinfo=UTC)


def _postgresql_server_url() -> str:
    url = os.environ.get(DATABASE_URL_ENV)
    if url:
        return url
    if os.environ.get("CI") == "true":
        pytest.fail(f"{DATABASE_URL_ENV} is not set: under CI the PostgreSQL tests must run")
    pytest.skip(f"{DATABASE_URL_ENV} is not set; PostgreSQL tests skipped locally")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """An engine on an empty database of one kind, private to this test."""
    if request.param == "sqlite":
        created = create_engine(f"sqlite:///{tmp_path / 'registry.db'}")
        try:
            yield created
        finally:
            created.dispose()
        return
    server_url = _postgresql_server_url()
    schema = f"pouch_adapter_test_{secrets.token_hex(6)}"
    admin = create_engine(server_url)
    try:
        with admin.begin() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        url = (
            make_url(server_url)
            .update_query_dict({"options": f"-csearch_path={schema}"})
            .render_as_string(hide_password=False)
        )
        created = create_engine(url)
        try:
            yield created
        finally:
            created.dispose()
            with admin.begin() as conn:
                conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
    finally:
        admin.dispose()


def _update(message_id: str, family_name: str = "Martin") -> InboundUpdate:
    return InboundUpdate(
        message_id=message_id,
        sender_state="FR",
        agreement_id="FR-DE/civil-records",
        purpose="civil-status-update",
        update=civil_pb2.CivilRecordUpdate(
            event_type=civil_pb2.CIVIL_EVENT_TYPE_BIRTH,
            parties=[
                civil_pb2.Party(
                    role=civil_pb2.PARTY_ROLE_SUBJECT,
                    person=civil_pb2.Person(name=common_pb2.PersonName(family_names=[family_name])),
                )
            ],
        ),
    )


def _adapter(engine: Engine) -> SqlTableAdapter:
    return SqlTableAdapter(engine, clock=lambda: RECEIVED)


def _registry_decides(engine: Engine, message_id: str, status: str, reason: str = "") -> None:
    """What the registry does: mark a row it has processed."""
    with engine.begin() as conn:
        conn.execute(
            update(inbound_updates)
            .where(inbound_updates.c.message_id == message_id)
            .values(status=status, reason_code=reason)
        )


def test_update_is_handed_over_as_a_new_row_created_on_first_use(engine: Engine) -> None:
    assert asyncio.run(_adapter(engine).apply(_update("m-1"))) == APPLIED
    with engine.connect() as conn:
        row = conn.execute(select(inbound_updates)).one()
    assert (row.message_id, row.sender_state, row.event_type, row.status) == (
        "m-1",
        "FR",
        "CIVIL_EVENT_TYPE_BIRTH",
        "new",
    )
    assert row.received_at == RECEIVED
    payload = json.loads(row.payload_json)
    assert payload["parties"][0]["person"]["name"]["family_names"] == ["Martin"]


def test_same_message_handed_over_twice_leaves_one_untouched_row(engine: Engine) -> None:
    adapter = _adapter(engine)
    assert asyncio.run(adapter.apply(_update("m-2"))) == APPLIED
    _registry_decides(engine, "m-2", "applied")
    # A second adapter (a restarted gateway) finds the table already there.
    again = _adapter(engine)
    assert asyncio.run(again.apply(_update("m-2", family_name="Other"))) == APPLIED
    with engine.connect() as conn:
        rows = conn.execute(select(inbound_updates.c.status, inbound_updates.c.payload_json)).all()
    assert len(rows) == 1
    assert rows[0].status == "applied"
    assert "Other" not in rows[0].payload_json


def test_registry_decisions_are_reported_until_acknowledged(engine: Engine) -> None:
    adapter = _adapter(engine)

    async def scenario() -> None:
        for message_id in ("m-a", "m-b", "m-c"):
            await adapter.apply(_update(message_id))
        assert await adapter.poll_outcomes() == ()
        _registry_decides(engine, "m-a", "applied")
        _registry_decides(engine, "m-b", "rejected", "UNKNOWN_PERSON")
        decisions = await adapter.poll_outcomes()
        assert set(decisions) == {
            RegistryDecision("m-a", APPLIED),
            RegistryDecision("m-b", RegistryOutcome(applied=False, reason_code="UNKNOWN_PERSON")),
        }
        # Reading reports nothing as done: a gateway that crashes here sees them again.
        assert set(await adapter.poll_outcomes()) == set(decisions)
        await adapter.acknowledge_outcomes(["m-a", "m-c"])
        assert [d.message_id for d in await adapter.poll_outcomes()] == ["m-b"]
        await adapter.acknowledge_outcomes(["m-b"])
        assert await adapter.poll_outcomes() == ()

    asyncio.run(scenario())


def test_registry_reason_outside_the_code_pattern_is_reported_generically(
    engine: Engine,
) -> None:
    adapter = _adapter(engine)
    asyncio.run(adapter.apply(_update("m-d")))
    _registry_decides(engine, "m-d", "rejected", "person Jean Dupont unknown")
    (decision,) = asyncio.run(adapter.poll_outcomes())
    assert decision.outcome.reason_code == GENERIC_REJECTION


def test_poll_limit_is_respected_oldest_first(engine: Engine) -> None:
    adapter = _adapter(engine)
    for message_id in ("m-1", "m-2", "m-3"):
        asyncio.run(adapter.apply(_update(message_id)))
        _registry_decides(engine, message_id, "applied")
    decisions = asyncio.run(adapter.poll_outcomes(limit=2))
    assert [d.message_id for d in decisions] == ["m-1", "m-2"]


def test_status_outside_the_interface_is_refused_by_the_table(engine: Engine) -> None:
    asyncio.run(_adapter(engine).apply(_update("m-e")))
    with pytest.raises(exc.IntegrityError):
        _registry_decides(engine, "m-e", "done")
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(inbound_updates)).scalar_one() == 1


def test_unreachable_registry_database_is_unavailable() -> None:
    engine = create_engine("postgresql://pouch:pw@127.0.0.1:1/registry?connect_timeout=2")
    try:
        with pytest.raises(RegistryUnavailable):
            asyncio.run(SqlTableAdapter(engine).apply(_update("m-f")))
    finally:
        engine.dispose()
