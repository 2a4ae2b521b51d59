"""Payloads a partner really signed, but hostile in form or beyond the limits, are refused.

AT's signing key signs each payload here, and AT's gateway TLS identity sends it to
BE's peer API, so only the payload is at fault. Every refusal must be
INVALID_ARGUMENT (never INTERNAL), audited at BE with its reason, and leave BE's inbox
and quota as they were. Each attack is preceded by the same call with a well-formed
payload succeeding, so a stopped listener cannot pass it.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import grpc
import pytest
from sqlalchemy import func, select

from gateway.envelope import EnvelopeHeader, utc_millis
from gateway.envelope.payload import encode_payload
from gateway.exchanges.case_payload import CaseMessage, encode_case_payload
from gateway.exchanges.identity_wire import CLAIM_PAYLOAD_TYPE
from gateway.exchanges.representation import PAYLOAD_TYPE as CASE_PAYLOAD_TYPE
from gateway.exchanges.representation_validation import MAX_ATTACHMENT_BYTES, MAX_ATTACHMENTS
from gateway.server.app import Gateway
from gateway.store.tables import audit_entries, quota_usage
from pouch.v1 import common_pb2, envelope_pb2
from pouch_devtools.demo.agreements import IDENTITY_PURPOSES, REPRESENTATION_PURPOSE
from tests.integration.conftest import assert_safe_message, error_reason
from tests.integration.exchange_fixtures import (
    PeerCaller,
    RunningGateways,
    agreement_digest,
    be_alone,
    civil_header,
    field_violations,
    inbox_size,
)
from tests.integration.test_peer_envelope_attacks import death_tree, signer_of

CIVIL = "at-be-civil"


@pytest.fixture(scope="module")
def be_only(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateways]:
    """BE's gateway alone, shared by the module's tests (made once: 0.8 s to set
    up, plus its stop, for each of 4 tests if it were per test).

    Sharing is safe: tests run one at a time; nothing but a test's own synchronous calls
    reaches BE (AT is not running, so no partner traffic arrives unasked), and each test
    sends envelopes with fresh message ids and compares the inbox size and the quota used
    with what it read before its own refused call.
    """
    with be_alone(tmp_path_factory.mktemp("payload-attacks"), ["AT", "BE"]) as running:
        yield running


def _header(be_only: RunningGateways, exchange: int, purpose: str, payload_type: str) -> Any:
    return EnvelopeHeader(
        message_id=str(uuid.uuid4()),
        agreement_id=CIVIL,
        agreement_version=1,
        agreement_digest=agreement_digest(be_only.sites["BE"], CIVIL),
        exchange_type=exchange,  # type: ignore[arg-type]
        purpose=purpose,
        sender_state="AT",
        recipient_state="BE",
        created_at=utc_millis(datetime.now(UTC)),
        payload_type=payload_type,
    )


def _civil(be_only: RunningGateways, payload: bytes) -> envelope_pb2.Envelope:
    header = civil_header(
        sender="AT",
        recipient="BE",
        agreement_id=CIVIL,
        agreement_digest=agreement_digest(be_only.sites["BE"], CIVIL),
    )
    return signer_of(be_only.sites["AT"]).sign(header, payload)


def _quota_used(be: Gateway) -> int:
    with be.engine.connect() as conn:
        return int(
            conn.execute(select(func.coalesce(func.sum(quota_usage.c.used), 0))).scalar_one()
        )


def _refusals(be: Gateway, message_id: str) -> list[str]:
    query = select(audit_entries.c.reason_code).where(
        audit_entries.c.message_id == message_id, audit_entries.c.event_kind == "refused"
    )
    with be.engine.connect() as conn:
        return [str(r) for r in conn.execute(query).scalars()]


def _refused(be: Gateway, call: Any, envelope: envelope_pb2.Envelope) -> grpc.RpcError:
    """``call(envelope)`` is refused as invalid, audited, and stores and counts nothing."""
    before = (inbox_size(be), _quota_used(be))
    with pytest.raises(grpc.RpcError) as refused:
        call(envelope)
    error = refused.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert_safe_message(error)
    assert (inbox_size(be), _quota_used(be)) == before
    assert _refusals(be, envelope.message_id) == [error_reason(error)]
    return error


# -- civil-record updates --------------------------------------------------------


def _civil_bytes(be_only: RunningGateways, old: bytes, new: bytes) -> bytes:
    good = encode_payload(death_tree(be_only))
    assert old in good
    return good.replace(old, new, 1)


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        (b'"year":1950', b'"year":' + b"9" * 5000, "payload.parties[0].person.date_of_birth.year"),
        (b'"year":1950', b'"year":NaN', "payload.parties[0].person.date_of_birth.year"),
        (b'"act_reference"', b'"event_type":"X","act_reference"', "payload.event_type"),
        (
            b'"act_reference"',
            b'"deep":' + b"[" * 1000 + b"]" * 1000 + b',"act_reference"',
            "payload",
        ),
    ],
    ids=["huge-integer", "nan", "duplicate-key", "deep-nesting"],
)
def test_malformed_civil_payload_signed_by_the_partner_is_refused_not_internal(
    be_only: RunningGateways,
    be: Gateway,
    as_at: PeerCaller,
    old: bytes,
    new: bytes,
    field: str,
) -> None:
    as_at.deliver(_civil(be_only, encode_payload(death_tree(be_only))))
    envelope = _civil(be_only, _civil_bytes(be_only, old, new))
    error = _refused(be, as_at.deliver, envelope)
    assert error_reason(error) == "MALFORMED_PAYLOAD"
    assert field_violations(error) == [field]


@pytest.mark.parametrize("year", [10**30, 99_999], ids=["10^30", "99999"])
def test_civil_update_with_an_implausible_year_is_refused_before_the_quota(
    be_only: RunningGateways, be: Gateway, as_at: PeerCaller, year: int
) -> None:
    as_at.deliver(_civil(be_only, encode_payload(death_tree(be_only))))
    today = datetime.now(UTC).date()
    envelope = _civil(
        be_only, _civil_bytes(be_only, b'"year":%d' % today.year, b'"year":%d' % year)
    )
    error = _refused(be, as_at.deliver, envelope)
    assert field_violations(error)[0].endswith("event_date.year")


# -- identity queries ------------------------------------------------------------


def _claim_bytes(given: str) -> bytes:
    born = {"year": 1980, "month": 1, "day": 31}
    name = {"given_names": [given], "family_names": ["Huber"]}
    claim = {"document_type": "DOCUMENT_TYPE_PASSPORT", "date_of_birth": born, "name": name}
    return encode_payload({"claim": claim})


def test_identity_query_with_a_lone_surrogate_in_a_name_is_refused_not_internal(
    be_only: RunningGateways, be: Gateway, as_at: PeerCaller
) -> None:
    def query(envelope: envelope_pb2.Envelope) -> Any:
        return as_at.query(envelope)

    def signed(payload: bytes) -> envelope_pb2.Envelope:
        header = _header(
            be_only,
            common_pb2.EXCHANGE_TYPE_IDENTITY_CONFIRMATION,
            IDENTITY_PURPOSES[1],
            CLAIM_PAYLOAD_TYPE,
        )
        return signer_of(be_only.sites["AT"]).sign(header, payload)

    # The well-formed query gets past every check of the payload (BE's spool registry
    # then cannot confirm identities, which is no payload's fault).
    with pytest.raises(grpc.RpcError) as answered:
        query(signed(_claim_bytes("Anna")))
    assert error_reason(answered.value) == "REGISTRY_CANNOT_CONFIRM"
    hostile = _claim_bytes("Anna").replace(b'"Anna"', b'"An\\ud800na"')
    error = _refused(be, query, signed(hostile))
    assert error_reason(error) == "MALFORMED_PAYLOAD"
    assert field_violations(error) == ["payload.claim.name.given_names[0]"]


# -- representation case notes ---------------------------------------------------


def _case_envelope(be_only: RunningGateways, message: CaseMessage, content: Any) -> Any:
    header = _header(
        be_only, common_pb2.EXCHANGE_TYPE_REPRESENTATION, REPRESENTATION_PURPOSE, CASE_PAYLOAD_TYPE
    )
    return signer_of(be_only.sites["AT"]).sign(header, encode_case_payload(message, content))


def _opened_case(be_only: RunningGateways, as_at: PeerCaller) -> str:
    case_id = str(uuid.uuid4())
    person = {
        "name": {"given_names": ["Mariam"], "family_names": ["Haidari"]},
        "date_of_birth": {"year": 1984, "month": 3, "day": 9},
        "nationality": "AT",
        "location": {"country_code": "TH", "locality": "Chiang-Mai"},
    }
    content = {
        "kind": "ASSISTANCE_KIND_LOST_DOCUMENTS",
        "mission_country": "TH",
        "person": person,
        "summary": "Passport stolen.",
    }
    as_at.deliver(_case_envelope(be_only, CaseMessage(case_id, "open", 1), content))
    return case_id


def _note(case_id: str, sequence: int, attachments: list[bytes]) -> tuple[CaseMessage, Any]:
    message = CaseMessage(case_id, "note", sequence, note_id=str(uuid.uuid4()))
    files = [
        {
            "file_name": f"scan-{index}.pdf",
            "media_type": "application/pdf",
            "content": base64.b64encode(data).decode(),
        }
        for index, data in enumerate(attachments)
    ]
    return message, {"notes": [{"text": "Scans of the police report.", "attachments": files}]}


@pytest.mark.parametrize(
    ("attachments", "field", "rule"),
    [
        ([b"%" * (MAX_ATTACHMENT_BYTES * 3 // 2)], "attachments[0].content", "1048576 bytes"),
        ([b"scan"] * (MAX_ATTACHMENTS + 2), "attachments", f"at most {MAX_ATTACHMENTS}"),
    ],
    ids=["1.5-MiB-attachment", "7-attachments"],
)
def test_case_note_beyond_the_attachment_limits_is_refused_by_the_receiver(
    be_only: RunningGateways,
    be: Gateway,
    as_at: PeerCaller,
    attachments: list[bytes],
    field: str,
    rule: str,
) -> None:
    case_id = _opened_case(be_only, as_at)
    as_at.deliver(_case_envelope(be_only, *_note(case_id, 2, [b"scan"])))
    error = _refused(be, as_at.deliver, _case_envelope(be_only, *_note(case_id, 3, attachments)))
    assert error_reason(error) == "VALIDATION"
    assert field_violations(error) == [f"payload.content.notes[0].{field}"]
    assert rule in (error.details() or "")
