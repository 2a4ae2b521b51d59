"""The record of identity queries: a partner's query id is answered once, on both engines."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, select

from gateway.errors import ReplayRejected
from gateway.store.engine import write_transaction
from gateway.store.identity_queries import IdentityQueries, IdentityQuery
from gateway.store.tables import identity_queries
from tests.unit.store.conftest import FakeClock

QUERY_ID = "7d0f6c2e-9a51-4f0b-8a55-2f6f3b8f1c11"


def _inbound(message_id: str = QUERY_ID) -> IdentityQuery:
    return IdentityQuery(
        message_id=message_id,
        direction="inbound",
        partner_state="AT",
        agreement_id="at-be-civil",
        purpose="emergency_travel_document",
        kind="passport",
    )


def test_a_query_id_seen_before_is_refused_as_a_replay(
    migrated_engine: Engine, clock: FakeClock
) -> None:
    queries = IdentityQueries(migrated_engine, clock=clock)
    with write_transaction(migrated_engine) as conn:
        queries.admit_inbound_within(conn, _inbound())

    with pytest.raises(ReplayRejected), write_transaction(migrated_engine) as conn:
        queries.admit_inbound_within(conn, _inbound())


def test_an_answer_is_recorded_once_and_never_overwritten(
    migrated_engine: Engine, clock: FakeClock
) -> None:
    queries = IdentityQueries(migrated_engine, clock=clock)
    with write_transaction(migrated_engine) as conn:
        queries.admit_inbound_within(conn, _inbound())
        queries.record_answer_within(
            conn, QUERY_ID, result="MATCH_RESULT_MATCH", document_status="DOCUMENT_STATUS_VALID"
        )
    clock.advance(5)
    with write_transaction(migrated_engine) as conn:
        # A replay's refusal must not rewrite what the first query was answered.
        queries.record_answer_within(
            conn, QUERY_ID, result=None, document_status=None, reason_code="REPLAY"
        )

    with migrated_engine.connect() as conn:
        row = conn.execute(select(identity_queries)).mappings().one()
    assert (row["result"], row["document_status"], row["reason_code"]) == (
        "MATCH_RESULT_MATCH",
        "DOCUMENT_STATUS_VALID",
        None,
    )


def test_outbound_and_inbound_records_are_kept_apart(
    migrated_engine: Engine, clock: FakeClock
) -> None:
    queries = IdentityQueries(migrated_engine, clock=clock)
    outbound = IdentityQuery(
        message_id="0b4e1d9a-3c77-4b1e-9d2a-6a3f5e8c2b10",
        direction="outbound",
        partner_state="BE",
        agreement_id="at-be-civil",
        purpose="emergency_travel_document",
        kind="passport",
        principal="consul@at",
        case_id="5f0c2a1e-7b3d-4e9a-8c6f-1d2e3f4a5b6c",
    )
    with pytest.raises(ValueError), write_transaction(migrated_engine) as conn:
        queries.admit_inbound_within(conn, outbound)
    with write_transaction(migrated_engine) as conn:
        queries.record_outbound_within(conn, outbound)

    with migrated_engine.connect() as conn:
        rows = conn.execute(select(identity_queries.c.direction, identity_queries.c.case_id))
        assert rows.all() == [("outbound", outbound.case_id)]
