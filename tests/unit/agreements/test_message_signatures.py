"""``message_signatures``: an agreement asks for classical (ES256) or hybrid (ES256 and
ML-DSA-44) envelope and receipt signatures, as part of the text both parties sign, and
is in force only where both ends can sign and check both."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.agreements import ActivationStatus, AgreementFileError, InactiveReason
from gateway.agreements.loader import parse_agreement_text
from gateway.agreements.model import EXCHANGES_VALIDATOR, MessageSignatures
from gateway.errors import AgreementRejected
from gateway.pki import StateDirectory, TrustBundle, load_trust_bundle
from gateway.pki.authority import StateAuthority
from gateway.pki.bundle import CLASSICAL_SIGNING, HYBRID_SIGNING, sign_bundle
from tests.unit.agreements import (
    NOW,
    agreement_text,
    bundle_of,
    make_state,
    registry,
    sign_as,
    write_agreement,
)

AGREEMENT = "at-be-test"


@dataclass(frozen=True)
class States:
    at: StateDirectory
    be: StateDirectory
    #: BE's bundle as a state that signs ES256 alone issues it: no ML-DSA-44 signing key.
    be_classical: TrustBundle


def _classical_bundle(directory: StateDirectory) -> TrustBundle:
    """``directory``'s trust bundle signed again without its ML-DSA-44 signing key."""
    bundle = bundle_of(directory)
    signed = sign_bundle(
        StateAuthority.load(directory.root),
        signing_certificate=bundle.signing_certificate,
        audit_certificate=bundle.audit_certificate,
        witness_certificate=bundle.witness_certificate,
        audit_pq_certificate=bundle.audit_pq_certificate,
        witness_pq_certificate=bundle.witness_pq_certificate,
        signing_pq_certificate=None,
        peer_endpoint=bundle.peer_endpoint,
        crl_location=bundle.crl_location,
        issued_at=NOW,
    )
    return load_trust_bundle(signed)


@pytest.fixture(scope="module")
def states(tmp_path_factory: pytest.TempPathFactory) -> Iterator[States]:
    root = tmp_path_factory.mktemp("pki")
    be = make_state("BE", root / "be")
    yield States(at=make_state("AT", root / "at"), be=be, be_classical=_classical_bundle(be))


def _text(pins: dict[str, str], choice: str | None) -> str:
    text = agreement_text(bundles=pins, agreement_id=AGREEMENT)
    if choice is None:
        return text
    line = "onward_transfer: forbidden\n"
    return text.replace(line, f"{line}message_signatures: {choice}\n")


def _pins(states: States, *, be: TrustBundle | None = None) -> dict[str, str]:
    return {"AT": bundle_of(states.at).digest, "BE": (be or bundle_of(states.be)).digest}


def _signed(states: States, directory: Path, choice: str | None, **pins: TrustBundle) -> Path:
    path = write_agreement(directory, _text(_pins(states, **pins), choice))
    sign_as(path, states.at)
    sign_as(path, states.be)
    return path


def _parse(text: str) -> MessageSignatures:
    parsed = parse_agreement_text(text, file="x.yaml", exchanges_validator=EXCHANGES_VALIDATOR)
    return parsed.agreement.message_signatures


# -- the file ----------------------------------------------------------------------


def test_an_agreement_that_says_nothing_is_classical_and_keeps_its_digest(
    states: States,
) -> None:
    pins = _pins(states)
    assert _parse(_text(pins, None)) is MessageSignatures.CLASSICAL
    assert _parse(_text(pins, "classical")) is MessageSignatures.CLASSICAL
    assert _parse(_text(pins, "hybrid")) is MessageSignatures.HYBRID
    unsaid = parse_agreement_text(
        _text(pins, None), file="x.yaml", exchanges_validator=EXCHANGES_VALIDATOR
    )
    assert b"message_signatures" not in unsaid.canonical  # earlier texts keep their digest


@pytest.mark.parametrize("value", ["quantum", "Hybrid", "true", "[hybrid]", "1", '""'])
def test_message_signatures_other_than_classical_or_hybrid_is_refused_by_name(
    states: States, value: str
) -> None:
    with pytest.raises(AgreementFileError) as error:
        _parse(_text(_pins(states), value))
    assert [(i.path, i.rule) for i in error.value.issues] == [
        ("message_signatures", "must be 'classical' or 'hybrid'")
    ]


def test_signatures_given_the_algorithm_choice_points_to_message_signatures(
    states: States,
) -> None:
    # ``signatures`` is the parties' signatures, outside the signed text: the choice
    # written there would be unsigned, so it is refused with the key to use.
    text = _text(_pins(states), None) + "signatures: hybrid\n"
    with pytest.raises(AgreementFileError) as error:
        _parse(text)
    (issue,) = error.value.issues
    assert issue.path == "signatures"
    assert "message_signatures: classical or hybrid" in issue.rule


def test_hybrid_signatures_changed_to_classical_after_signing_breaks_the_signatures(
    states: States, tmp_path: Path
) -> None:
    # A downgrade by whoever can edit the file: the choice is in the signed text.
    path = _signed(states, tmp_path, "hybrid")
    held = registry(tmp_path, [bundle_of(states.at), bundle_of(states.be)])
    before = held.get(AGREEMENT)
    assert InactiveReason.BAD_SIGNATURE not in before.inactive_reasons
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("message_signatures: hybrid\n", ""), encoding="utf-8")
    held.reload()
    after = held.get(AGREEMENT)
    assert after.inactive_reason is InactiveReason.BAD_SIGNATURE
    assert after.digest != before.digest


# -- in force only where both ends can sign hybrid ---------------------------------


def test_hybrid_agreement_between_hybrid_states_is_in_force(states: States, tmp_path: Path) -> None:
    _signed(states, tmp_path, "hybrid")
    held = registry(
        tmp_path,
        [bundle_of(states.at), bundle_of(states.be)],
        own_signature_algorithms=HYBRID_SIGNING,
    )
    assert held.get(AGREEMENT).status is ActivationStatus.ACTIVE
    assert held.active_for(AGREEMENT, "BE").agreement.hybrid_signatures
    assert held.hybrid_signatures(AGREEMENT) is True
    assert held.hybrid_signatures("no-such-agreement") is False


def test_hybrid_agreement_is_refused_where_this_gateway_has_no_ml_dsa_key(
    states: States, tmp_path: Path
) -> None:
    _signed(states, tmp_path, "hybrid")
    bundles = [bundle_of(states.at), bundle_of(states.be)]
    assert (
        registry(tmp_path, bundles, own_signature_algorithms=HYBRID_SIGNING).get(AGREEMENT).status
        is ActivationStatus.ACTIVE
    )
    held = registry(tmp_path, bundles, own_signature_algorithms=CLASSICAL_SIGNING)
    loaded = held.get(AGREEMENT)
    assert loaded.inactive_reasons == (InactiveReason.NO_ML_DSA_SIGNING_KEY,)
    with pytest.raises(AgreementRejected) as refusal:
        held.active_for(AGREEMENT, "BE")
    assert refusal.value.reason == "NO_ML_DSA_SIGNING_KEY"
    # A registry told nothing assumes ES256 alone: fail closed.
    assert registry(tmp_path, bundles).get(AGREEMENT).inactive_reasons == (
        InactiveReason.NO_ML_DSA_SIGNING_KEY,
    )


def test_hybrid_agreement_is_refused_when_a_pinned_bundle_names_no_ml_dsa(
    states: States, tmp_path: Path
) -> None:
    # BE pinned the bundle of a state that signs ES256 alone: it could never sign hybrid.
    _signed(states, tmp_path, "hybrid", be=states.be_classical)
    held = registry(
        tmp_path,
        [bundle_of(states.at), states.be_classical],
        own_signature_algorithms=HYBRID_SIGNING,
    )
    loaded = held.get(AGREEMENT)
    assert loaded.inactive_reasons == (InactiveReason.BUNDLE_WITHOUT_ML_DSA,)
    with pytest.raises(AgreementRejected) as refusal:
        held.active_for(AGREEMENT, "BE")
    assert refusal.value.reason == "BUNDLE_WITHOUT_ML_DSA"


def test_classical_agreement_needs_no_ml_dsa_anywhere(states: States, tmp_path: Path) -> None:
    _signed(states, tmp_path, None, be=states.be_classical)
    held = registry(tmp_path, [bundle_of(states.at), states.be_classical])
    assert held.get(AGREEMENT).status is ActivationStatus.ACTIVE
    assert held.hybrid_signatures(AGREEMENT) is False
