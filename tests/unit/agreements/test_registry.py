"""The activation rule: an agreement is in force only when everything holds (fail closed)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from gateway.agreements import (
    ActivationStatus,
    AgreementFileError,
    InactiveReason,
    LoadedAgreement,
    sign_agreement,
)
from gateway.agreements.model import EXCHANGES_VALIDATOR
from gateway.errors import AgreementRejected, NotFound
from gateway.pki import StateDirectory, TrustBundle
from gateway.policy.rules import PolicySection
from tests.unit.agreements import (
    NOW,
    MovableClock,
    add_foreign_signature,
    agreement_text,
    bundle_of,
    make_state,
    registry,
    sign_as,
    write_agreement,
)


@dataclass(frozen=True)
class States:
    at: StateDirectory
    be: StateDirectory
    fr: StateDirectory
    be_other: StateDirectory  # a second, unrelated PKI calling itself BE

    def bundles(self) -> list[TrustBundle]:
        return [bundle_of(self.at), bundle_of(self.be), bundle_of(self.fr)]

    def pins(self) -> dict[str, str]:
        return {"AT": bundle_of(self.at).digest, "BE": bundle_of(self.be).digest}


@pytest.fixture(scope="module")
def states(tmp_path_factory: pytest.TempPathFactory) -> Iterator[States]:
    """Four state PKIs, made once and only read (0.12 s; for each of 24 tests if it
    were per test). Tests write agreements under their own ``tmp_path``, never here."""
    root = tmp_path_factory.mktemp("pki")
    yield States(
        at=make_state("AT", root / "at"),
        be=make_state("BE", root / "be"),
        fr=make_state("FR", root / "fr"),
        be_other=make_state("BE", root / "be-other"),
    )


def _signed(states: States, directory: Path, *, status: str = "active") -> Path:
    path = write_agreement(directory, agreement_text(bundles=states.pins(), status=status))
    sign_as(path, states.at)
    sign_as(path, states.be)
    return path


def _get(
    states: States, directory: Path, clock: MovableClock | None = None
) -> LoadedAgreement[PolicySection]:
    return registry(directory, states.bundles(), clock=clock).get("at-be-test")


def _assert_inactive(loaded: LoadedAgreement[Any], reason: InactiveReason) -> None:
    assert loaded.status is ActivationStatus.INACTIVE
    assert loaded.inactive_reason is reason, loaded.inactive_reasons


def test_fully_signed_agreement_in_window_is_active(states: States, tmp_path: Path) -> None:
    _signed(states, tmp_path)
    loaded = _get(states, tmp_path)
    assert loaded.status is ActivationStatus.ACTIVE
    assert loaded.inactive_reason is None
    assert [(v.state, v.problem) for v in loaded.signatures] == [("AT", None), ("BE", None)]
    assert loaded.exchanges.identity_confirmation is not None


def test_unsigned_agreement_is_inactive(states: States, tmp_path: Path) -> None:
    write_agreement(tmp_path, agreement_text(bundles=states.pins()))
    _assert_inactive(_get(states, tmp_path), InactiveReason.MISSING_SIGNATURE)


def test_agreement_signed_by_one_party_is_inactive(states: States, tmp_path: Path) -> None:
    path = write_agreement(tmp_path, agreement_text(bundles=states.pins()))
    sign_as(path, states.be)
    loaded = _get(states, tmp_path)
    _assert_inactive(loaded, InactiveReason.MISSING_SIGNATURE)
    assert [(v.state, v.problem) for v in loaded.signatures] == [
        ("AT", InactiveReason.MISSING_SIGNATURE),
        ("BE", None),
    ]


def test_agreement_with_wrong_signature_is_inactive(states: States, tmp_path: Path) -> None:
    path = _signed(states, tmp_path)
    at_signature = sign_as(path, states.at).signature
    text = path.read_text(encoding="utf-8")
    # BE's entry now carries AT's (valid, but not BE's) signature.
    be_entry = text[text.index('- state: "BE"') :]
    be_signature = be_entry.split('signature: "')[1].split('"')[0]
    path.write_text(text.replace(be_signature, at_signature), encoding="utf-8")
    _assert_inactive(_get(states, tmp_path), InactiveReason.BAD_SIGNATURE)


def test_agreement_changed_after_signing_is_inactive(states: States, tmp_path: Path) -> None:
    path = _signed(states, tmp_path)
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("retention_days: 30", "retention_days: 3650"), encoding="utf-8")
    loaded = _get(states, tmp_path)
    _assert_inactive(loaded, InactiveReason.BAD_SIGNATURE)
    assert {v.problem for v in loaded.signatures} == {InactiveReason.BAD_SIGNATURE}


def test_agreement_signed_by_third_state_is_inactive(states: States, tmp_path: Path) -> None:
    path = _signed(states, tmp_path)
    add_foreign_signature(path, states.fr)
    loaded = _get(states, tmp_path)
    _assert_inactive(loaded, InactiveReason.SIGNED_BY_NON_PARTY)
    assert loaded.signatures[-1].state == "FR"


def test_third_state_signature_cannot_stand_in_for_a_party(states: States, tmp_path: Path) -> None:
    path = write_agreement(tmp_path, agreement_text(bundles=states.pins()))
    sign_as(path, states.at)
    add_foreign_signature(path, states.fr)
    loaded = _get(states, tmp_path)
    assert loaded.inactive_reasons == (
        InactiveReason.SIGNED_BY_NON_PARTY,
        InactiveReason.MISSING_SIGNATURE,
    )


def test_sign_refuses_a_state_that_is_not_a_party(states: States, tmp_path: Path) -> None:
    path = write_agreement(tmp_path, agreement_text(bundles=states.pins()))
    before = path.read_bytes()
    with pytest.raises(ValueError, match="FR is not a party"):
        sign_as(path, states.fr)
    assert path.read_bytes() == before


def test_sign_refuses_a_key_that_is_not_the_signing_key(states: States, tmp_path: Path) -> None:
    path = write_agreement(tmp_path, agreement_text(bundles=states.pins()))
    with pytest.raises(ValueError, match="not a message-signing certificate"):
        sign_agreement(
            path,
            key_path=states.at.gateway_key,
            cert_path=states.at.gateway_cert,
            exchanges_validator=EXCHANGES_VALIDATOR,
        )
    with pytest.raises(ValueError, match="does not belong to certificate"):
        sign_agreement(
            path,
            key_path=states.at.gateway_key,
            cert_path=states.at.signing_cert,
            exchanges_validator=EXCHANGES_VALIDATOR,
        )


@pytest.mark.parametrize(
    ("now", "reason"),
    [
        (datetime(2025, 12, 31, 23, 59, tzinfo=NOW.tzinfo), InactiveReason.NOT_YET_VALID),
        (datetime(2028, 1, 1, 0, 0, tzinfo=NOW.tzinfo), InactiveReason.EXPIRED),
    ],
)
def test_agreement_outside_validity_window_is_inactive(
    states: States, tmp_path: Path, now: datetime, reason: InactiveReason
) -> None:
    _signed(states, tmp_path)
    _assert_inactive(_get(states, tmp_path, MovableClock(now)), reason)


def test_validity_window_includes_both_end_days(states: States, tmp_path: Path) -> None:
    _signed(states, tmp_path)
    clock = MovableClock()
    agreements = registry(tmp_path, states.bundles(), clock=clock)
    for day in (date(2026, 1, 1), date(2027, 12, 31)):
        clock.now = datetime(day.year, day.month, day.day, 23, 59, tzinfo=NOW.tzinfo)
        assert agreements.get("at-be-test").status is ActivationStatus.ACTIVE


def test_agreement_expires_at_midnight_without_reload(states: States, tmp_path: Path) -> None:
    _signed(states, tmp_path)
    clock = MovableClock(datetime(2027, 12, 31, 23, 59, tzinfo=NOW.tzinfo))
    agreements = registry(tmp_path, states.bundles(), clock=clock)
    assert agreements.active_for("at-be-test", "BE").id == "at-be-test"
    clock.now += timedelta(minutes=1)
    with pytest.raises(AgreementRejected) as caught:
        agreements.active_for("at-be-test", "BE")
    assert caught.value.reason == "EXPIRED"


@pytest.mark.parametrize(
    ("status", "reason"),
    [("suspended", InactiveReason.SUSPENDED), ("terminated", InactiveReason.TERMINATED)],
)
def test_suspended_agreement_is_inactive(
    states: States, tmp_path: Path, status: str, reason: InactiveReason
) -> None:
    _signed(states, tmp_path, status=status)
    _assert_inactive(_get(states, tmp_path), reason)


def test_bundle_digest_mismatch_is_inactive(states: States, tmp_path: Path) -> None:
    # The agreement pins a BE bundle the gateway does not hold (another BE PKI).
    pins = {"AT": bundle_of(states.at).digest, "BE": bundle_of(states.be_other).digest}
    path = write_agreement(tmp_path, agreement_text(bundles=pins))
    sign_as(path, states.at)
    sign_as(path, states.be_other)
    _assert_inactive(_get(states, tmp_path), InactiveReason.BUNDLE_DIGEST_MISMATCH)


def test_pinned_bundle_of_another_state_is_a_digest_mismatch(
    states: States, tmp_path: Path
) -> None:
    pins = {"AT": bundle_of(states.at).digest, "BE": bundle_of(states.fr).digest}
    path = write_agreement(tmp_path, agreement_text(bundles=pins))
    sign_as(path, states.at)
    sign_as(path, states.be)
    loaded = _get(states, tmp_path)
    _assert_inactive(loaded, InactiveReason.BUNDLE_DIGEST_MISMATCH)
    assert [(v.state, v.problem) for v in loaded.signatures] == [
        ("AT", None),
        ("BE", InactiveReason.BUNDLE_DIGEST_MISMATCH),
    ]


def test_inactive_agreement_refuses_traffic(states: States, tmp_path: Path) -> None:
    path = write_agreement(tmp_path, agreement_text(bundles=states.pins()))
    sign_as(path, states.at)
    agreements = registry(tmp_path, states.bundles())
    with pytest.raises(AgreementRejected) as caught:
        agreements.active_for("at-be-test", "BE")
    assert caught.value.reason == "MISSING_SIGNATURE"
    assert "at-be-test" in caught.value.message
    assert agreements.get("at-be-test").status is ActivationStatus.INACTIVE


def test_unknown_agreement_refuses_traffic(states: States, tmp_path: Path) -> None:
    _signed(states, tmp_path)
    agreements = registry(tmp_path, states.bundles())
    with pytest.raises(AgreementRejected) as caught:
        agreements.active_for("at-be-other", "BE")
    assert caught.value.reason == "UNKNOWN_AGREEMENT"
    with pytest.raises(NotFound):
        agreements.get("at-be-other")


@pytest.mark.parametrize(("own", "partner"), [("AT", "FR"), ("AT", "AT"), ("FR", "BE")])
def test_agreement_only_serves_its_own_parties(
    states: States, tmp_path: Path, own: str, partner: str
) -> None:
    _signed(states, tmp_path)
    agreements = registry(tmp_path, states.bundles(), own_state=own)
    with pytest.raises(AgreementRejected) as caught:
        agreements.active_for("at-be-test", partner)
    assert caught.value.reason == "NOT_A_PARTY"


def test_active_agreement_serves_either_side(states: States, tmp_path: Path) -> None:
    _signed(states, tmp_path)
    assert registry(tmp_path, states.bundles(), own_state="AT").active_for("at-be-test", "BE")
    assert registry(tmp_path, states.bundles(), own_state="BE").active_for("at-be-test", "AT")


def test_reload_applies_a_suspension(states: States, tmp_path: Path) -> None:
    path = _signed(states, tmp_path)
    agreements = registry(tmp_path, states.bundles())
    assert agreements.active_for("at-be-test", "BE")
    text = agreement_text(bundles=states.pins(), status="suspended")
    path.write_text(text, encoding="utf-8")
    sign_as(path, states.at)
    sign_as(path, states.be)
    agreements.reload()
    with pytest.raises(AgreementRejected) as caught:
        agreements.active_for("at-be-test", "BE")
    assert caught.value.reason == "SUSPENDED"


def test_broken_file_on_reload_is_dropped_not_kept(states: States, tmp_path: Path) -> None:
    path = _signed(states, tmp_path)
    agreements = registry(tmp_path, states.bundles())
    path.write_text(path.read_text(encoding="utf-8") + "surprise: 1\n", encoding="utf-8")
    with pytest.raises(AgreementFileError, match="surprise: unknown key"):
        agreements.reload()
    assert agreements.list() == ()
    with pytest.raises(AgreementRejected) as caught:
        agreements.active_for("at-be-test", "BE")
    assert caught.value.reason == "UNKNOWN_AGREEMENT"


def test_two_files_with_one_id_and_version_are_both_refused(states: States, tmp_path: Path) -> None:
    _signed(states, tmp_path)
    write_agreement(tmp_path, agreement_text(bundles=states.pins()), name="copy.yml")
    write_agreement(
        tmp_path, agreement_text(bundles=states.pins(), agreement_id="other"), name="other.yaml"
    )
    with pytest.raises(AgreementFileError) as caught:
        registry(tmp_path, states.bundles())
    assert len(caught.value.issues) == 2
    assert all(issue.path == "version" for issue in caught.value.issues)


def test_list_reports_every_agreement_with_its_standing(states: States, tmp_path: Path) -> None:
    _signed(states, tmp_path)
    write_agreement(
        tmp_path, agreement_text(bundles=states.pins(), agreement_id="at-be-draft"), name="d.yaml"
    )
    (tmp_path / "README.md").write_text("not an agreement\n", encoding="utf-8")
    listed = registry(tmp_path, states.bundles()).list()
    assert [(a.id, a.status) for a in listed] == [
        ("at-be-draft", ActivationStatus.INACTIVE),
        ("at-be-test", ActivationStatus.ACTIVE),
    ]


def test_loaded_agreement_is_frozen(states: States, tmp_path: Path) -> None:
    _signed(states, tmp_path)
    loaded = _get(states, tmp_path)
    with pytest.raises(AttributeError):
        loaded.digest = "sha256:" + "0" * 64  # type: ignore[misc]
