"""Crafted envelopes sent straight to BE's peer API are refused, and BE stores nothing.

The caller holds AT's real gateway TLS identity, so every refusal here comes from
the envelope itself (signature, clock, replay, agreement, policy, size), not from
the transport. CH is a third partner of BE with no agreement: its signing key is
the "other state's key". Only BE runs, in this process, with a spool registry.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest

from gateway.envelope import ENVELOPE_TYP, EnvelopeSigner, envelope_digest, signing_input
from gateway.envelope import verify_receipt as check_receipt
from gateway.envelope.payload import encode_payload
from gateway.pki.bundle import load_trust_bundle
from gateway.policy.transforms import MASK, keyed_hash
from gateway.server.app import Gateway
from pouch.v1 import envelope_pb2
from pouch_devtools.demo.deployment import Site
from tests.integration.conftest import assert_safe_message, error_reason
from tests.integration.exchange_fixtures import (
    PeerCaller,
    RunningGateways,
    agreement_digest,
    be_alone,
    civil_header,
    hash_key,
    inbox_entry,
    inbox_size,
    payload_tree,
    signed_envelope,
)

CIVIL = "at-be-civil"


@pytest.fixture(scope="module")
def be_only(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateways]:
    """BE's gateway alone, shared by the module's tests (made once: 0.5 s to set
    up, plus its stop, for each of 12 tests if it were per test).

    Sharing is safe: tests run one at a time; nothing but a test's own synchronous calls
    reaches BE (AT is not running, so no partner traffic arrives unasked), and each test
    signs envelopes with fresh message ids and asserts on their answers, their own
    stored rows, or the inbox size against what it read just before its own calls.
    """
    with be_alone(tmp_path_factory.mktemp("peer-attacks"), ["AT", "BE", "CH"]) as running:
        yield running


def signer_of(site: Site) -> EnvelopeSigner:
    return EnvelopeSigner.from_state_directory(site.pki)


def death_tree(be_only: RunningGateways, *, family_name: str = "Wouters") -> dict[str, Any]:
    """A death as AT's gateway would send it: minimised under the demo agreement."""
    key = hash_key(be_only.sites["BE"], CIVIL)
    today = datetime.now(UTC).date()
    return {
        "event_type": "CIVIL_EVENT_TYPE_DEATH",
        "event_date": {"year": today.year, "month": today.month, "day": today.day},
        "event_place": {"country_code": "AT", "locality": "Graz"},
        "act_reference": MASK,
        "parties": [
            {
                "role": "PARTY_ROLE_SUBJECT",
                "person": {
                    "name": {"given_names": ["Jan"], "family_names": [family_name]},
                    "date_of_birth": {"year": 1950, "month": 6, "day": 2},
                    "nationalities": ["BE"],
                    "registry_identifier": keyed_hash("REG-SUBJECT-4411", key),
                },
            }
        ],
    }


def from_at(
    be_only: RunningGateways,
    tree: dict[str, Any] | None = None,
    *,
    message_id: str | None = None,
    created_at: datetime | None = None,
    agreement_id: str = CIVIL,
    digest: str | None = None,
) -> envelope_pb2.Envelope:
    """An envelope AT's signing key really signed, under the agreement BE holds."""
    sites = be_only.sites
    header = civil_header(
        sender="AT",
        recipient="BE",
        agreement_id=agreement_id,
        agreement_digest=digest or agreement_digest(sites["BE"], CIVIL),
        message_id=message_id,
        created_at=created_at,
    )
    return signed_envelope(signer_of(sites["AT"]), header, tree or death_tree(be_only))


def stored_message(be: Gateway, message_id: str) -> tuple[object, ...] | None:
    entry = inbox_entry(be, message_id)
    if entry is None:
        return None
    return (entry.sender_state, entry.agreement_id, entry.received_at, entry.envelope)


def refused_delivery(
    caller: PeerCaller, envelope: envelope_pb2.Envelope, be: Gateway
) -> grpc.RpcError:
    """Deliver ``envelope``; it must be refused, and BE's inbox must not change.

    The registry handover may move a stored message along meanwhile (received, then
    handed over); what a refusal must never touch is what was stored.
    """
    before = inbox_size(be)
    stored_before = stored_message(be, envelope.message_id)
    with pytest.raises(grpc.RpcError) as refused:
        caller.deliver(envelope)
    assert inbox_size(be) == before
    assert stored_message(be, envelope.message_id) == stored_before
    assert_safe_message(refused.value)
    return refused.value


def test_tampered_payload_is_refused(
    be_only: RunningGateways, be: Gateway, as_at: PeerCaller
) -> None:
    envelope = from_at(be_only)
    envelope.payload = encode_payload(death_tree(be_only, family_name="Someone-Else"))
    error = refused_delivery(as_at, envelope, be)
    # A signature that does not verify says nothing about who sent the message.
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error_reason(error) == "ENVELOPE_SIGNATURE"


def resigned_by_ch(be_only: RunningGateways, envelope: envelope_pb2.Envelope) -> None:
    """CH's key over exactly AT's signing input: a valid signature by the wrong state."""
    header = civil_header(
        sender="AT",
        recipient="BE",
        agreement_id=CIVIL,
        agreement_digest=envelope.agreement.digest,
        message_id=envelope.message_id,
        created_at=envelope.created_at.ToDatetime(tzinfo=UTC),
    )
    envelope.signature = signer_of(be_only.sites["CH"]).sign_detached(
        ENVELOPE_TYP, signing_input(header, envelope.payload)
    )


def test_envelope_signed_by_another_states_key_is_refused(
    be_only: RunningGateways, be: Gateway, as_at: PeerCaller
) -> None:
    envelope = from_at(be_only)
    resigned_by_ch(be_only, envelope)
    error = refused_delivery(as_at, envelope, be)
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error_reason(error) == "ENVELOPE_SIGNATURE"


def test_envelope_from_peer_other_than_sender_is_refused(
    be_only: RunningGateways, be: Gateway, as_at: PeerCaller
) -> None:
    header = civil_header(
        sender="CH",
        recipient="BE",
        agreement_id=CIVIL,
        agreement_digest=agreement_digest(be_only.sites["BE"], CIVIL),
    )
    envelope = signed_envelope(signer_of(be_only.sites["CH"]), header, death_tree(be_only))
    error = refused_delivery(as_at, envelope, be)
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error_reason(error) == "SENDER_MISMATCH"


def test_replayed_message_id_with_other_content_is_refused(
    be_only: RunningGateways, be: Gateway, as_at: PeerCaller
) -> None:
    original = from_at(be_only)
    as_at.deliver(original)
    stored = inbox_entry(be, original.message_id)
    assert stored is not None and stored.envelope is not None

    replay = from_at(
        be_only, death_tree(be_only, family_name="Replaced"), message_id=original.message_id
    )
    error = refused_delivery(as_at, replay, be)
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    assert error_reason(error) == "REPLAY"
    kept = inbox_entry(be, original.message_id)
    assert kept is not None and kept.envelope is not None
    assert payload_tree(kept.envelope)["parties"][0]["person"]["name"]["family_names"] == [
        "Wouters"
    ]


def test_identical_resend_is_acknowledged_once_and_not_stored_twice(
    be_only: RunningGateways, be: Gateway, as_at: PeerCaller
) -> None:
    bundle = load_trust_bundle(be_only.sites["BE"].pki.bundle)
    envelope = from_at(be_only)
    before = inbox_size(be)
    first = as_at.deliver(envelope)
    # The same bytes again, then the same message re-signed later, as a retrying
    # dispatcher sends it.
    resent = [
        envelope,
        from_at(
            be_only,
            message_id=envelope.message_id,
            created_at=datetime.now(UTC) + timedelta(seconds=1),
        ),
    ]
    answers = [(sent, as_at.deliver(sent)) for sent in resent]
    assert inbox_size(be) == before + 1
    checked = check_receipt(
        first,
        receiver_bundle=bundle,
        expected_message_id=envelope.message_id,
        expected_request_digest=envelope_digest(envelope),
    )
    assert checked.reason_code == ""
    assert checked.outcome == envelope_pb2.RECEIPT_OUTCOME_ACCEPTED
    for sent, receipt in answers:
        again = check_receipt(
            receipt,
            receiver_bundle=bundle,
            expected_message_id=envelope.message_id,
            expected_request_digest=envelope_digest(sent),
        )
        assert again.reason_code == "DUPLICATE"
        assert again.outcome == envelope_pb2.RECEIPT_OUTCOME_ACCEPTED


@pytest.mark.parametrize("skew", [timedelta(hours=-1), timedelta(hours=1)], ids=["past", "future"])
def test_creation_time_outside_window_is_refused(
    be_only: RunningGateways, be: Gateway, as_at: PeerCaller, skew: timedelta
) -> None:
    envelope = from_at(be_only, created_at=datetime.now(UTC) + skew)
    error = refused_delivery(as_at, envelope, be)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(error) == "CLOCK_WINDOW"


def test_envelope_for_unknown_agreement_is_refused(
    be_only: RunningGateways, be: Gateway, as_at: PeerCaller
) -> None:
    envelope = from_at(be_only, agreement_id="at-be-never-signed")
    error = refused_delivery(as_at, envelope, be)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(error) == "UNKNOWN_AGREEMENT"


def test_agreement_digest_mismatch_is_refused(
    be_only: RunningGateways, be: Gateway, as_at: PeerCaller
) -> None:
    other_text = "sha256:" + uuid.uuid4().hex * 2
    envelope = from_at(be_only, digest=other_text)
    error = refused_delivery(as_at, envelope, be)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(error) == "AGREEMENT_DIGEST_MISMATCH"


def _with_raw_act_reference(tree: dict[str, Any]) -> dict[str, Any]:
    return {**tree, "act_reference": "ACT-2026-7731-SECRET"}


def _with_unlisted_field(tree: dict[str, Any]) -> dict[str, Any]:
    person = {**tree["parties"][0]["person"], "religion": "undisclosed"}
    return {**tree, "parties": [{**tree["parties"][0], "person": person}]}


@pytest.mark.parametrize(
    ("smuggle", "reason"),
    [
        (_with_raw_act_reference, "FIELD_NOT_MINIMISED"),
        (_with_unlisted_field, "FIELD_NOT_AGREED"),
    ],
    ids=["unmasked-act-reference", "unlisted-field"],
)
def test_field_not_agreed_in_payload_is_refused_by_receiver(
    be_only: RunningGateways,
    be: Gateway,
    as_at: PeerCaller,
    smuggle: Any,
    reason: str,
) -> None:
    envelope = from_at(be_only, smuggle(death_tree(be_only)))
    error = refused_delivery(as_at, envelope, be)
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error_reason(error) == reason
    details = error.details() or ""
    assert "ACT-2026-7731-SECRET" not in details
    assert "undisclosed" not in details


def test_oversized_envelope_is_refused(
    be_only: RunningGateways, be: Gateway, as_at: PeerCaller
) -> None:
    limit = be.settings.gateway.max_message_bytes
    tree = death_tree(be_only)
    tree["parties"][0]["person"]["name"]["given_names"] = ["x" * (limit + 1)]
    envelope = from_at(be_only, tree)
    error = refused_delivery(as_at, envelope, be)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_reason(error) == "MESSAGE_TOO_LARGE"
    assert str(limit) in (error.details() or "")


def test_envelope_past_twice_the_limit_is_refused_by_the_transport(
    be_only: RunningGateways, be: Gateway, as_at: PeerCaller
) -> None:
    limit = be.settings.gateway.max_message_bytes
    tree = death_tree(be_only)
    tree["parties"][0]["person"]["name"]["given_names"] = ["x" * (2 * limit + 1)]
    envelope = from_at(be_only, tree)
    error = refused_delivery(as_at, envelope, be)
    # gRPC's own receive limit stops it before any handler runs: no ErrorInfo, no entry.
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "Received message larger than max" in (error.details() or "")


def test_envelope_header_changed_after_signing_is_refused(
    be_only: RunningGateways, be: Gateway, as_at: PeerCaller
) -> None:
    envelope = from_at(be_only)
    envelope.purpose = "another_purpose"
    error = refused_delivery(as_at, envelope, be)
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error_reason(error) == "ENVELOPE_SIGNATURE"
