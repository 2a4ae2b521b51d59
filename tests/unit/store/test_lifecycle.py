"""Agreement lifecycle: suspension and termination only ever make an agreement less usable."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from threading import Barrier

import pytest
from sqlalchemy import Engine

from gateway.store.lifecycle import AgreementLifecycleStore, LifecycleStatus

from .conftest import START, FakeClock

AGREEMENT = "FR-DE/civil-records"


@pytest.fixture
def lifecycle(migrated_engine: Engine, clock: FakeClock) -> AgreementLifecycleStore:
    return AgreementLifecycleStore(migrated_engine, clock=clock)


def test_unrecorded_agreement_has_no_lifecycle_record(lifecycle: AgreementLifecycleStore) -> None:
    assert lifecycle.status_of(AGREEMENT, 3) is None
    assert lifecycle.all() == []


def test_suspension_is_recorded_with_its_evidence(lifecycle: AgreementLifecycleStore) -> None:
    assert lifecycle.record(
        AGREEMENT, 3, "suspended", by_state="DE", reason_code="DATA_BREACH", message_id="n-1"
    )

    record = lifecycle.status_of(AGREEMENT, 3)
    assert record is not None
    assert record.status is LifecycleStatus.SUSPENDED
    assert (record.changed_at, record.changed_by_state) == (START, "DE")
    assert (record.reason_code, record.message_id) == ("DATA_BREACH", "n-1")
    # Other versions of the agreement are not touched.
    assert lifecycle.status_of(AGREEMENT, 2) is None


def test_lifecycle_record_is_idempotent(
    lifecycle: AgreementLifecycleStore, clock: FakeClock
) -> None:
    assert lifecycle.record(
        AGREEMENT, 3, LifecycleStatus.SUSPENDED, by_state="DE", reason_code="AUDIT"
    )
    first = lifecycle.status_of(AGREEMENT, 3)
    clock.advance(60)

    # The same notice again, or another suspension, keeps the first record.
    assert not lifecycle.record(AGREEMENT, 3, "suspended", by_state="DE", reason_code="AUDIT")
    assert not lifecycle.record(AGREEMENT, 3, "suspended", by_state="FR", reason_code="OTHER")

    assert lifecycle.status_of(AGREEMENT, 3) == first
    assert lifecycle.all() == [first]


def test_termination_overrides_suspension(
    lifecycle: AgreementLifecycleStore, clock: FakeClock
) -> None:
    lifecycle.record(AGREEMENT, 3, "suspended", by_state="DE", reason_code="AUDIT")
    clock.advance(3600)

    assert lifecycle.record(
        AGREEMENT, 3, "terminated", by_state="FR", reason_code="DENOUNCED", message_id="n-2"
    )

    record = lifecycle.status_of(AGREEMENT, 3)
    assert record is not None
    assert record.status is LifecycleStatus.TERMINATED
    assert (record.changed_by_state, record.reason_code) == ("FR", "DENOUNCED")
    assert (record.changed_at, record.message_id) == (clock(), "n-2")


def test_terminated_agreement_cannot_be_resumed_by_suspension(
    lifecycle: AgreementLifecycleStore, clock: FakeClock
) -> None:
    lifecycle.record(
        AGREEMENT, 3, "terminated", by_state="FR", reason_code="DENOUNCED", message_id="n-2"
    )
    terminated = lifecycle.status_of(AGREEMENT, 3)
    clock.advance(60)

    # A late, replayed or out-of-order suspension notice must not soften a termination.
    assert not lifecycle.record(
        AGREEMENT, 3, "suspended", by_state="DE", reason_code="AUDIT", message_id="n-1"
    )
    assert not lifecycle.record(AGREEMENT, 3, "terminated", by_state="DE", reason_code="OTHER")

    assert lifecycle.status_of(AGREEMENT, 3) == terminated


def test_concurrent_notices_change_the_record_once(lifecycle: AgreementLifecycleStore) -> None:
    replicas = 4
    in_step = Barrier(replicas)

    def receive_termination() -> bool:
        in_step.wait(timeout=10)
        return lifecycle.record(
            AGREEMENT, 3, "terminated", by_state="FR", reason_code="DENOUNCED", message_id="n-2"
        )

    with ThreadPoolExecutor(max_workers=replicas) as pool:
        futures = [pool.submit(receive_termination) for _ in range(replicas)]
        changed = [f.result(timeout=30) for f in futures]

    assert changed.count(True) == 1


def test_all_lists_records_by_agreement_and_version(lifecycle: AgreementLifecycleStore) -> None:
    lifecycle.record("IT-FR/identity", 1, "terminated", by_state="IT", reason_code="EXPIRED")
    lifecycle.record(AGREEMENT, 4, "suspended", by_state="FR", reason_code="AUDIT")
    lifecycle.record(AGREEMENT, 3, "terminated", by_state="FR", reason_code="SUPERSEDED")

    listed = [(r.agreement_id, r.agreement_version, r.status) for r in lifecycle.all()]

    assert listed == [
        (AGREEMENT, 3, LifecycleStatus.TERMINATED),
        (AGREEMENT, 4, LifecycleStatus.SUSPENDED),
        ("IT-FR/identity", 1, LifecycleStatus.TERMINATED),
    ]


def test_malformed_lifecycle_records_are_refused(lifecycle: AgreementLifecycleStore) -> None:
    with pytest.raises(ValueError, match="active"):
        lifecycle.record(AGREEMENT, 3, "active", by_state="FR", reason_code="RESUMED")
    with pytest.raises(ValueError, match="by_state"):
        lifecycle.record(AGREEMENT, 3, "suspended", by_state="France", reason_code="AUDIT")
    with pytest.raises(ValueError, match="reason_code"):
        lifecycle.record(AGREEMENT, 3, "suspended", by_state="FR", reason_code="")
    with pytest.raises(ValueError, match="version"):
        lifecycle.record(AGREEMENT, -1, "suspended", by_state="FR", reason_code="AUDIT")
    assert lifecycle.all() == []
