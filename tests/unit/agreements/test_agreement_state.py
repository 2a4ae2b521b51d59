"""What AgreementService and pouch_agreement_state say of an agreement: a party's
declaration before the activation rule, a replaced version as SUPERSEDED, and one
series per agreement, for the version that governs it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from gateway.agreements import AgreementRegistry
from gateway.pki import StateDirectory
from gateway.policy.rules import PolicySection
from gateway.server.agreement_state import (
    AgreementStanding,
    AgreementStateCollector,
    standing_of,
)
from gateway.store.lifecycle import LifecycleRecord, LifecycleStatus
from tests.unit.agreements import (
    MovableClock,
    agreement_text,
    bundle_of,
    make_state,
    registry,
    sign_as,
    write_agreement,
)

SWITCH = date(2026, 7, 1)


@pytest.fixture(scope="module")
def parties(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[StateDirectory, ...]]:
    root = tmp_path_factory.mktemp("pki")
    yield make_state("AT", root / "at"), make_state("BE", root / "be")


def _held(parties: tuple[StateDirectory, ...], directory: Path) -> AgreementRegistry[PolicySection]:
    pins = {p.state: bundle_of(p).digest for p in parties}
    for version, valid_from in ((1, date(2026, 1, 1)), (2, SWITCH)):
        text = agreement_text(bundles=pins, valid_from=valid_from).replace(
            "\nversion: 2\n", f"\nversion: {version}\n"
        )
        path = write_agreement(directory, text, name=f"v{version}.yaml")
        for party in parties:
            sign_as(path, party)
    clock = MovableClock(datetime.combine(SWITCH, datetime.min.time(), UTC))
    return registry(directory, [bundle_of(p) for p in parties], clock=clock)


def _standings(agreements: AgreementRegistry[PolicySection]) -> list[AgreementStanding]:
    governing = agreements.get("at-be-test").version
    return [standing_of(a, None, governing) for a in agreements.list()]


def test_a_replaced_version_is_superseded_and_only_the_governing_one_is_a_series(
    parties: tuple[StateDirectory, ...], tmp_path: Path
) -> None:
    standings = _standings(_held(parties, tmp_path))
    assert [(s.loaded.version, s.state, s.reason, s.governs) for s in standings] == [
        (1, "inactive", "SUPERSEDED", False),
        (2, "active", "", True),
    ]
    (family,) = AgreementStateCollector(lambda: standings).collect()
    assert [(s.labels, s.value) for s in family.samples] == [
        ({"agreement": "at-be-test", "version": "2", "state": "active", "reason": ""}, 1)
    ]


def test_a_declared_suspension_is_shown_with_who_declared_it_and_why(
    parties: tuple[StateDirectory, ...], tmp_path: Path
) -> None:
    agreements = _held(parties, tmp_path)
    loaded = agreements.get("at-be-test")
    record = LifecycleRecord(
        agreement_id=loaded.id,
        agreement_version=loaded.version,
        status=LifecycleStatus.SUSPENDED,
        changed_at=datetime(2026, 7, 1, tzinfo=UTC) + timedelta(hours=1),
        changed_by_state="BE",
        reason_code="DATA_BREACH",
        message_id=None,
    )
    standing = standing_of(loaded, record, loaded.version)
    assert (standing.state, standing.reason, standing.detail) == (
        "suspended",
        "SUSPENDED",
        "suspended by BE: DATA_BREACH",
    )
