"""Several versions of one agreement: the newest in force governs, a new version takes
over on its first day without a reload, and a message made under the version it
superseded is still received while in flight. Another version is refused."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime, time, timedelta
from pathlib import Path

import pytest

from gateway.agreements import AgreementFileError, AgreementRegistry, InactiveReason
from gateway.errors import AgreementRejected
from gateway.pki import StateDirectory, TrustBundle
from gateway.policy.rules import PolicySection
from tests.unit.agreements import (
    NOW,
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


def _version(
    parties: tuple[StateDirectory, ...],
    directory: Path,
    version: int,
    *,
    valid_from: date,
    valid_until: date = date(2027, 12, 31),
    status: str = "active",
) -> Path:
    pins = {p.state: bundle_of(p).digest for p in parties}
    text = agreement_text(
        bundles=pins, valid_from=valid_from, valid_until=valid_until, status=status
    ).replace("\nversion: 2\n", f"\nversion: {version}\n")
    path = write_agreement(directory, text, name=f"v{version}.yaml")
    for party in parties:
        sign_as(path, party)
    return path


def _bundles(parties: tuple[StateDirectory, ...]) -> list[TrustBundle]:
    return [bundle_of(p) for p in parties]


def _at(day: date) -> datetime:
    return datetime.combine(day, time(), NOW.tzinfo)


def _two_versions(
    parties: tuple[StateDirectory, ...],
    tmp_path: Path,
    *,
    v1_until: date,
    v2_status: str = "active",
) -> tuple[AgreementRegistry[PolicySection], MovableClock]:
    _version(parties, tmp_path, 1, valid_from=date(2026, 1, 1), valid_until=v1_until)
    _version(parties, tmp_path, 2, valid_from=SWITCH, status=v2_status)
    clock = MovableClock(_at(SWITCH) - timedelta(seconds=1))
    return registry(tmp_path, _bundles(parties), clock=clock), clock


def test_a_new_version_takes_over_on_its_first_day_without_a_reload(
    parties: tuple[StateDirectory, ...], tmp_path: Path
) -> None:
    agreements, clock = _two_versions(parties, tmp_path, v1_until=date(2027, 12, 31))
    assert agreements.active_for("at-be-test", "BE").version == 1
    assert [(a.version, a.inactive_reason) for a in agreements.list()] == [
        (1, None),
        (2, InactiveReason.NOT_YET_VALID),
    ]
    clock.now = _at(SWITCH)
    assert agreements.active_for("at-be-test", "BE").version == 2
    assert agreements.get("at-be-test").version == 2


def test_a_message_under_the_superseded_version_is_received_while_in_flight(
    parties: tuple[StateDirectory, ...], tmp_path: Path
) -> None:
    # Version 1 ends the day before version 2 starts: no gap, no overlap.
    agreements, clock = _two_versions(parties, tmp_path, v1_until=SWITCH - timedelta(days=1))
    assert agreements.named_for("at-be-test", 1, "BE").version == 1
    clock.now = _at(SWITCH)
    assert agreements.named_for("at-be-test", 1, "BE").version == 1
    assert agreements.named_for("at-be-test", 2, "BE").version == 2


def test_a_version_this_gateway_does_not_hold_is_refused(
    parties: tuple[StateDirectory, ...], tmp_path: Path
) -> None:
    agreements, _ = _two_versions(parties, tmp_path, v1_until=date(2027, 12, 31))
    assert agreements.named_for("at-be-test", 1, "BE").version == 1
    with pytest.raises(AgreementRejected) as caught:
        agreements.named_for("at-be-test", 3, "BE")
    assert caught.value.reason == "AGREEMENT_DIGEST_MISMATCH"


def test_a_version_not_yet_begun_is_refused_to_a_partner_naming_it(
    parties: tuple[StateDirectory, ...], tmp_path: Path
) -> None:
    agreements, _ = _two_versions(parties, tmp_path, v1_until=date(2027, 12, 31))
    assert agreements.named_for("at-be-test", 1, "BE").version == 1
    with pytest.raises(AgreementRejected) as caught:
        agreements.named_for("at-be-test", 2, "BE")
    assert caught.value.reason == "AGREEMENT_DIGEST_MISMATCH"


def test_an_ended_version_is_not_received_when_no_later_version_is_in_force(
    parties: tuple[StateDirectory, ...], tmp_path: Path
) -> None:
    agreements, clock = _two_versions(
        parties, tmp_path, v1_until=SWITCH - timedelta(days=1), v2_status="suspended"
    )
    assert agreements.named_for("at-be-test", 1, "BE").version == 1
    clock.now = _at(SWITCH)
    with pytest.raises(AgreementRejected) as caught:
        agreements.named_for("at-be-test", 1, "BE")
    assert caught.value.reason == "SUSPENDED"


def test_a_broken_new_version_on_an_all_or_nothing_reload_keeps_the_old_set(
    parties: tuple[StateDirectory, ...], tmp_path: Path
) -> None:
    _version(parties, tmp_path, 1, valid_from=date(2026, 1, 1))
    agreements = registry(tmp_path, _bundles(parties), clock=MovableClock())
    broken = _version(parties, tmp_path, 2, valid_from=SWITCH)
    broken.write_text(broken.read_text(encoding="utf-8") + "surprise: 1\n", encoding="utf-8")
    with pytest.raises(AgreementFileError, match="surprise: unknown key"):
        agreements.reload(all_or_nothing=True)
    assert [a.version for a in agreements.list()] == [1]
    assert agreements.active_for("at-be-test", "BE").version == 1


def test_a_version_a_partner_switched_to_within_the_clock_tolerance_is_received(
    parties: tuple[StateDirectory, ...], tmp_path: Path
) -> None:
    # One second before midnight here; the partner's clock runs five seconds ahead.
    agreements, _ = _two_versions(parties, tmp_path, v1_until=date(2027, 12, 31))
    tolerance = timedelta(seconds=5)
    named = agreements.named_for("at-be-test", 2, "BE", clock_tolerance=tolerance)
    assert named.version == 2 and named.inactive_reason is None
    assert agreements.active_for("at-be-test", "BE").version == 1
    with pytest.raises(AgreementRejected) as caught:
        agreements.named_for("at-be-test", 2, "BE", clock_tolerance=timedelta(0))
    assert caught.value.reason == "AGREEMENT_DIGEST_MISMATCH"
