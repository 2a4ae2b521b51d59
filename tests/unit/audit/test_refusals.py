"""The one refusal-audit idiom: what leaves the block is recorded once, by its kind."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest
from sqlalchemy import Connection

from gateway.audit.entry import AuditEvent, Decision, EventKind
from gateway.audit.recorder import AuditRecorder
from gateway.audit.refusals import RefusalContext, audit_refusals
from gateway.errors import PolicyRejected, StorageUnavailable

CONTEXT = RefusalContext("civil_record", "civil-registry", "BE", "at-be-civil")


class Entries:
    """An audit sink that keeps what it is given, in order."""

    def __init__(self) -> None:
        self.events: list[AuditEvent] = []

    def append(self, events: Sequence[AuditEvent]) -> object:
        self.events.extend(events)
        return None

    def append_within(self, conn: Connection, events: Sequence[AuditEvent]) -> None:
        raise AssertionError("a refusal is not written inside another transaction")


def recorder() -> tuple[AuditRecorder, Entries]:
    entries = Entries()
    return AuditRecorder(entries, clock=lambda: datetime(2026, 12, 6, tzinfo=UTC)), entries


def test_a_rejection_leaving_the_block_is_one_refusal_entry_and_reaches_the_caller() -> None:
    audit, entries = recorder()
    with pytest.raises(PolicyRejected), audit_refusals(audit, CONTEXT):
        raise PolicyRejected("purpose not agreed", reason="PURPOSE_NOT_AGREED")
    (entry,) = entries.events
    assert (entry.event_kind, entry.decision) == (EventKind.REFUSED, Decision.REFUSED)
    assert (entry.reason_code, entry.peer_state, entry.agreement_id, entry.principal) == (
        "PURPOSE_NOT_AGREED",
        "BE",
        "at-be-civil",
        "civil-registry",
    )


def test_an_unavailable_system_is_a_failure_entry_not_a_refusal() -> None:
    audit, entries = recorder()

    async def run() -> None:
        async with audit_refusals(audit, CONTEXT):
            raise StorageUnavailable("the database did not answer")

    with pytest.raises(StorageUnavailable):
        asyncio.run(run())
    (entry,) = entries.events
    assert (entry.event_kind, entry.decision, entry.reason_code) == (
        EventKind.FAILED,
        Decision.FAILED,
        "STORAGE_UNAVAILABLE",
    )


def test_a_refusal_already_audited_by_a_stage_is_not_recorded_twice() -> None:
    audit, entries = recorder()
    error = PolicyRejected("refused", reason="POLICY")
    audit.refused(error, exchange_type="civil_record")
    with pytest.raises(PolicyRejected), audit_refusals(audit, CONTEXT):
        raise error
    assert len(entries.events) == 1


def test_a_bug_and_a_success_leave_no_entry() -> None:
    audit, entries = recorder()
    with audit_refusals(audit, CONTEXT):
        pass
    with pytest.raises(KeyError), audit_refusals(audit, CONTEXT):
        raise KeyError("bug")
    assert entries.events == []
