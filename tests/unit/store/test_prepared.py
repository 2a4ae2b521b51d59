"""Prepared statements: the same rows as Core writes, and the same errors as Core raises."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, bindparam, exc, insert, select

from gateway.store.engine import storage_boundary, write_transaction
from gateway.store.group_commit import GroupCommit
from gateway.store.prepared import Prepared
from gateway.store.tables import agreement_lifecycle
from tests.unit.store.conftest import START

_INSERT = Prepared(insert(agreement_lifecycle), columns=agreement_lifecycle.c.keys())
_STATUS = Prepared(
    select(agreement_lifecycle.c.status, agreement_lifecycle.c.agreement_version).where(
        agreement_lifecycle.c.agreement_version == bindparam("version")
    )
)


def _row(agreement_id: str) -> dict[str, object]:
    return {
        "agreement_id": agreement_id,
        "agreement_version": 3,
        "status": "suspended",
        "changed_at": START,
        "changed_by_state": "AT",
        "reason_code": "TEST",
        "message_id": None,
    }


def test_a_prepared_insert_stores_what_a_core_insert_stores(migrated_engine: Engine) -> None:
    with write_transaction(migrated_engine) as conn:
        assert _INSERT.execute(conn, _row("prepared")) == 1
        conn.execute(insert(agreement_lifecycle).values(_row("core")))
    with migrated_engine.connect() as conn:
        stored = {
            row.agreement_id: {k: v for k, v in row._mapping.items() if k != "agreement_id"}
            for row in conn.execute(select(agreement_lifecycle))
        }
    assert stored["prepared"] == stored["core"]
    # The time comes back as the aware UTC datetime it was, through Core's own reading.
    assert stored["prepared"]["changed_at"] == START


def test_prepared_rows_are_the_drivers_values_in_the_callers_transaction(
    migrated_engine: Engine,
) -> None:
    with write_transaction(migrated_engine) as conn:
        _INSERT.execute_many(conn, [_row("prepared"), {**_row("core"), "status": "terminated"}])
        # Read in the same transaction, before the commit.
        assert sorted(_STATUS.rows(conn, {"version": 3})) == [("suspended", 3), ("terminated", 3)]
        assert _STATUS.rows(conn, {"version": 4}) == []


def test_a_statement_whose_sql_depends_on_its_values_is_refused(migrated_engine: Engine) -> None:
    expanding = Prepared(
        select(agreement_lifecycle.c.status).where(
            agreement_lifecycle.c.agreement_id.in_(["prepared", "core"])
        )
    )
    with (
        pytest.raises(ValueError, match="depends on its values"),
        write_transaction(migrated_engine) as conn,
    ):
        expanding.rows(conn, {})


def test_a_missing_parameter_is_null_as_in_a_core_insert(migrated_engine: Engine) -> None:
    row = _row("prepared")
    del row["message_id"]
    with write_transaction(migrated_engine) as conn:
        _INSERT.execute(conn, row)
        stored = conn.execute(select(agreement_lifecycle.c.message_id)).scalar_one()
    assert stored is None


def test_a_constraint_the_code_broke_raises_the_error_core_raises(migrated_engine: Engine) -> None:
    with pytest.raises(exc.IntegrityError), write_transaction(migrated_engine) as conn:
        _INSERT.execute(conn, _row("prepared"))
        _INSERT.execute(conn, _row("prepared"))
    with migrated_engine.connect() as conn:
        assert conn.execute(select(agreement_lifecycle)).all() == []


@pytest.mark.parametrize(
    "database_url", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)
def test_a_lost_connection_is_invalidated_and_reported_as_storage_unavailable(
    migrated_engine: Engine,
) -> None:
    conn = migrated_engine.connect()
    try:
        backend = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
        conn.rollback()
        with migrated_engine.connect() as admin:
            admin.exec_driver_sql(f"SELECT pg_terminate_backend({backend:d})")
        with pytest.raises(exc.DBAPIError) as raised:
            _INSERT.execute(conn, _row("prepared"))
        assert raised.value.connection_invalidated
        assert conn.invalidated
    finally:
        conn.close()
    # The group committer's mapping of the same failure: retry-able, not a bug.
    with pytest.raises(Exception) as mapped, storage_boundary():
        raise raised.value
    assert type(mapped.value).__name__ == "StorageUnavailable"


@pytest.mark.parametrize(
    "database_url", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)
def test_a_group_unit_of_prepared_writes_survives_a_lost_committer_connection(
    migrated_engine: Engine,
) -> None:
    group = GroupCommit(migrated_engine)
    try:
        backend = group.run(
            lambda conn: conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
        )
        with migrated_engine.connect() as admin:
            admin.exec_driver_sql(f"SELECT pg_terminate_backend({backend:d})")
        assert group.run(lambda conn: _INSERT.execute(conn, _row("prepared"))) == 1
    finally:
        group.close()
    with migrated_engine.connect() as conn:
        assert conn.execute(select(agreement_lifecycle.c.agreement_id)).scalars().all() == [
            "prepared"
        ]


def test_a_value_written_into_the_statement_is_kept_when_the_call_does_not_give_it(
    migrated_engine: Engine,
) -> None:
    first_two = Prepared(
        select(agreement_lifecycle.c.agreement_id)
        .where(agreement_lifecycle.c.status == bindparam("status"))
        .order_by(agreement_lifecycle.c.agreement_id)
        .limit(2)
    )
    with write_transaction(migrated_engine) as conn:
        _INSERT.execute_many(conn, [_row(f"a-{i}") for i in range(4)])
        assert first_two.rows(conn, {"status": "suspended"}) == [("a-0",), ("a-1",)]
