"""A partner's announced bundle: taken only from the pinned CA and only if newer; the
replaced bundle verifies for the overlap window and is refused after it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509

from gateway.pki import StateAuthority, load_trust_bundle, sign_bundle
from gateway.pki.bundle import BundleError, TrustBundle
from gateway.pki.bundle_chain import (
    BUNDLE_INVALID,
    BUNDLE_NOT_NEWER,
    BUNDLE_OTHER_CA,
    BUNDLE_OTHER_STATE,
    BUNDLE_UNKNOWN_PARTNER,
    PartnerBundles,
    SuccessionRefused,
    check_successor,
    verifying_bundles,
)
from gateway.pki.ca_renewal import cross_certificate

NOW = datetime(2025, 1, 15, 12, 0, tzinfo=UTC)
OVERLAP = timedelta(days=7)


def _bundle(
    authority: StateAuthority, issued_at: datetime, cross: x509.Certificate | None = None
) -> bytes:
    """A bundle version of ``authority``'s state with fresh signing and audit keys."""
    return sign_bundle(
        authority,
        signing_certificate=authority.issue_signing_certificate(now=NOW).certificate,
        audit_certificate=authority.issue_audit_certificate(now=NOW).certificate,
        witness_certificate=authority.issue_audit_certificate(now=NOW, witness=True).certificate,
        audit_pq_certificate=authority.issue_audit_certificate(
            now=NOW, post_quantum=True
        ).certificate,
        witness_pq_certificate=authority.issue_audit_certificate(
            now=NOW, witness=True, post_quantum=True
        ).certificate,
        signing_pq_certificate=None,
        peer_endpoint=f"gw.{authority.state.lower()}.example:8443",
        crl_location="out-of-band",
        issued_at=issued_at,
        ca_cross_certificate=cross,
    )


@pytest.fixture(scope="module")
def be() -> StateAuthority:
    return StateAuthority.create("BE", now=NOW)


@pytest.fixture(scope="module")
def pinned(be: StateAuthority) -> TrustBundle:
    return load_trust_bundle(_bundle(be, NOW))


def test_a_newer_bundle_from_the_pinned_ca_is_taken(
    be: StateAuthority, pinned: TrustBundle
) -> None:
    announced = _bundle(be, NOW + timedelta(days=1))
    taken = check_successor(pinned, announced, NOW)
    assert taken.ca_certificate == pinned.ca_certificate
    assert taken.signing_certificate != pinned.signing_certificate


def test_an_announced_bundle_from_another_ca_of_the_same_state_is_refused(
    pinned: TrustBundle,
) -> None:
    impostor = StateAuthority.create("BE", now=NOW)
    with pytest.raises(SuccessionRefused) as refused:
        check_successor(pinned, _bundle(impostor, NOW + timedelta(days=1)), NOW)
    assert refused.value.reason == BUNDLE_OTHER_CA


def test_an_announced_bundle_of_another_state_is_refused(pinned: TrustBundle) -> None:
    other = StateAuthority.create("FR", now=NOW)
    with pytest.raises(SuccessionRefused) as refused:
        check_successor(pinned, _bundle(other, NOW + timedelta(days=1)), NOW)
    assert refused.value.reason == BUNDLE_OTHER_STATE


@pytest.mark.parametrize("age", [timedelta(0), timedelta(days=1)])
def test_an_older_or_same_age_bundle_replayed_is_refused(
    be: StateAuthority, pinned: TrustBundle, age: timedelta
) -> None:
    with pytest.raises(SuccessionRefused) as refused:
        check_successor(pinned, _bundle(be, NOW - age), NOW)
    assert refused.value.reason == BUNDLE_NOT_NEWER


def test_an_announced_bundle_with_a_broken_signature_is_refused(
    be: StateAuthority, pinned: TrustBundle
) -> None:
    forged = _bundle(be, NOW + timedelta(days=1)).replace(b"gw.be.example", b"gw.xx.example")
    with pytest.raises(SuccessionRefused) as refused:
        check_successor(pinned, forged, NOW)
    assert refused.value.reason == BUNDLE_INVALID


def test_the_replaced_bundle_verifies_in_the_overlap_and_is_refused_after_it(
    be: StateAuthority, pinned: TrustBundle
) -> None:
    bundles = PartnerBundles({"BE": pinned}, overlap=OVERLAP)
    assert verifying_bundles(bundles, "BE", NOW) == (pinned,)
    switched = NOW + timedelta(days=1)
    taken = bundles.take("BE", _bundle(be, switched), switched)
    assert bundles["BE"] == taken
    assert bundles.pinned("BE") == pinned
    assert verifying_bundles(bundles, "BE", switched + OVERLAP - timedelta(seconds=1)) == (
        taken,
        pinned,
    )
    assert verifying_bundles(bundles, "BE", switched + OVERLAP) == (taken,)
    assert bundles.held("BE") == (taken, pinned)


def test_a_refused_announcement_leaves_the_bundle_in_force(
    be: StateAuthority, pinned: TrustBundle
) -> None:
    bundles = PartnerBundles({"BE": pinned}, overlap=OVERLAP)
    newer = bundles.take("BE", _bundle(be, NOW + timedelta(days=2)), NOW)
    with pytest.raises(SuccessionRefused):
        bundles.take("BE", _bundle(be, NOW + timedelta(days=1)), NOW)
    assert bundles["BE"] == newer
    assert bundles.held("BE") == (newer, pinned)


def test_a_bundle_announced_for_a_state_not_pinned_is_refused(be: StateAuthority) -> None:
    bundles = PartnerBundles({}, overlap=OVERLAP)
    with pytest.raises(SuccessionRefused) as refused:
        bundles.take("BE", _bundle(be, NOW), NOW)
    assert refused.value.reason == BUNDLE_UNKNOWN_PARTNER
    assert "BE" not in bundles


def test_a_plain_mapping_verifies_with_its_one_bundle(pinned: TrustBundle) -> None:
    assert verifying_bundles({"BE": pinned}, "BE", NOW) == (pinned,)


def test_a_taken_bundle_is_kept_across_a_restart(
    be: StateAuthority, pinned: TrustBundle, tmp_path: Path
) -> None:
    bundles = PartnerBundles({"BE": pinned}, overlap=OVERLAP, store=tmp_path)
    switched = NOW + timedelta(days=1)
    taken = bundles.take("BE", _bundle(be, switched), switched)

    restarted = PartnerBundles({"BE": pinned}, overlap=OVERLAP, store=tmp_path)

    assert restarted["BE"] == taken
    assert restarted.verifying("BE", switched) == (taken, pinned)
    assert restarted.verifying("BE", switched + OVERLAP) == (taken,)


def test_a_bundle_of_another_ca_put_in_the_store_stops_the_start(
    pinned: TrustBundle, tmp_path: Path
) -> None:
    assert PartnerBundles({"BE": pinned}, overlap=OVERLAP, store=tmp_path)["BE"] == pinned
    impostor = StateAuthority.create("BE", now=NOW)
    (tmp_path / "BE").mkdir()
    (tmp_path / "BE" / "20250116T120000Z-planted.json").write_bytes(
        _bundle(impostor, NOW + timedelta(days=1))
    )
    with pytest.raises(SuccessionRefused) as refused:
        PartnerBundles({"BE": pinned}, overlap=OVERLAP, store=tmp_path)
    assert refused.value.reason == BUNDLE_OTHER_CA


def test_a_kept_bundle_the_configuration_now_pins_does_not_stop_the_start(
    be: StateAuthority, pinned: TrustBundle, tmp_path: Path
) -> None:
    bundles = PartnerBundles({"BE": pinned}, overlap=OVERLAP, store=tmp_path)
    switched = NOW + timedelta(days=1)
    taken = bundles.take("BE", _bundle(be, switched), switched)

    repinned = PartnerBundles({"BE": taken}, overlap=OVERLAP, store=tmp_path)

    assert repinned["BE"] == taken
    assert repinned.held("BE") == (taken,)


def test_a_bundle_of_a_renewed_ca_cross_signed_by_the_pinned_one_is_taken_and_chains_on(
    be: StateAuthority, pinned: TrustBundle
) -> None:
    renewed = StateAuthority.create("BE", now=NOW)
    bundles = PartnerBundles({"BE": pinned}, overlap=OVERLAP)
    # The same CA swap without the cross certificate first: refused.
    with pytest.raises(SuccessionRefused) as refused:
        bundles.take("BE", _bundle(renewed, NOW + timedelta(days=1)), NOW)
    assert refused.value.reason == BUNDLE_OTHER_CA

    cross = cross_certificate(be, renewed, NOW)
    taken = bundles.take("BE", _bundle(renewed, NOW + timedelta(days=1), cross), NOW)

    assert taken.ca_certificate == renewed.ca_cert
    assert bundles["BE"] == taken
    assert bundles.pinned("BE") == pinned
    # From then on the chain goes on from the new CA, without a cross certificate.
    later = bundles.take("BE", _bundle(renewed, NOW + timedelta(days=2)), NOW)
    assert bundles["BE"] == later
    # And the old CA signs no more bundles for BE.
    with pytest.raises(SuccessionRefused) as refused:
        bundles.take("BE", _bundle(be, NOW + timedelta(days=3)), NOW)
    assert refused.value.reason == BUNDLE_OTHER_CA


def test_a_ca_swapped_without_a_cross_certificate_is_refused(pinned: TrustBundle) -> None:
    renewed = StateAuthority.create("BE", now=NOW)
    with pytest.raises(SuccessionRefused) as refused:
        check_successor(pinned, _bundle(renewed, NOW + timedelta(days=1)), NOW)
    assert refused.value.reason == BUNDLE_OTHER_CA


def test_a_cross_certificate_not_issued_by_the_pinned_ca_is_refused(
    be: StateAuthority, pinned: TrustBundle
) -> None:
    renewed = StateAuthority.create("BE", now=NOW)
    announced = _bundle(renewed, NOW + timedelta(days=1), cross_certificate(be, renewed, NOW))
    assert check_successor(pinned, announced, NOW).ca_certificate == renewed.ca_cert

    impostor = StateAuthority.create("BE", now=NOW)
    forged = _bundle(renewed, NOW + timedelta(days=1), cross_certificate(impostor, renewed, NOW))
    with pytest.raises(SuccessionRefused) as refused:
        check_successor(pinned, forged, NOW)
    assert refused.value.reason == BUNDLE_OTHER_CA


def test_a_cross_certificate_outside_its_validity_is_refused(
    be: StateAuthority, pinned: TrustBundle
) -> None:
    renewed = StateAuthority.create("BE", now=NOW)
    announced = _bundle(renewed, NOW + timedelta(days=1), cross_certificate(be, renewed, NOW))
    assert check_successor(pinned, announced, NOW + timedelta(days=1))
    with pytest.raises(SuccessionRefused) as refused:
        check_successor(pinned, announced, NOW - timedelta(days=1))
    assert refused.value.reason == BUNDLE_OTHER_CA


def test_a_cross_certificate_for_another_key_than_the_new_ca_is_refused_by_the_bundle(
    be: StateAuthority,
) -> None:
    renewed = StateAuthority.create("BE", now=NOW)
    other = StateAuthority.create("BE", now=NOW)
    with pytest.raises(BundleError, match="ca_cross_certificate"):
        _bundle(renewed, NOW + timedelta(days=1), cross_certificate(be, other, NOW))


def test_a_cross_signed_bundle_kept_in_the_store_is_taken_again_at_start(
    be: StateAuthority, pinned: TrustBundle, tmp_path: Path
) -> None:
    renewed = StateAuthority.create("BE", now=NOW)
    announced = _bundle(renewed, NOW + timedelta(days=1), cross_certificate(be, renewed, NOW))
    PartnerBundles({"BE": pinned}, overlap=OVERLAP, store=tmp_path).take("BE", announced, NOW)

    restarted = PartnerBundles({"BE": pinned}, overlap=OVERLAP, store=tmp_path)

    assert restarted["BE"].ca_certificate == renewed.ca_cert


def test_a_renewed_ca_is_trusted_at_once_and_the_replaced_one_only_through_the_overlap(
    be: StateAuthority, pinned: TrustBundle
) -> None:
    renewed = StateAuthority.create("BE", now=NOW)
    bundles = PartnerBundles({"BE": pinned}, overlap=OVERLAP)
    assert bundles.trusted_cas("BE", NOW) == (be.ca_cert,)

    bundles.take(
        "BE", _bundle(renewed, NOW + timedelta(days=1), cross_certificate(be, renewed, NOW)), NOW
    )

    assert bundles.trusted_cas("BE", NOW) == (renewed.ca_cert, be.ca_cert)
    assert bundles.trusted_cas("BE", NOW + OVERLAP) == (renewed.ca_cert,)
