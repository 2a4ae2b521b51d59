"""A representation case kept in step on both gateways by signed messages, over real TLS.

AT (no mission in Thailand) asks BE's mission there to assist its national. Both
gateways run in this process on loopback; CH also partners with BE, under its own
agreement, so a third state's signed message can be tried against an AT–BE case.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from gateway.envelope import EnvelopeHeader, EnvelopeSigner, utc_millis
from gateway.exchanges.case_payload import CaseMessage, encode_case_payload
from gateway.exchanges.representation import PAYLOAD_TYPE
from gateway.store.tables import CaseStatus
from pouch.v1 import agreement_pb2, common_pb2, envelope_pb2, representation_pb2
from pouch_devtools.demo.agreements import REPRESENTATION_PURPOSE
from pouch_devtools.demo.deployment import agreement_id_for, prepare_sites
from tests.integration.case_fixtures import Consulate
from tests.integration.conftest import assert_safe_message, error_reason
from tests.integration.exchange_fixtures import (
    FAST_DELIVERY,
    LocalCaller,
    PeerCaller,
    RunningGateways,
    agreement_digest,
    running_gateways,
    write_agreement,
)

AT_BE = agreement_id_for("AT", "BE")
CH_BE = agreement_id_for("CH", "BE")
# Suspended by one test; no other test uses it.
SUSPENDED_LATER = "at-be-cases-suspension"
R = representation_pb2


@pytest.fixture(scope="module")
def exchange(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateways]:
    """AT, BE and CH running, shared by the module's tests (made once: 0.9 s to set up,
    plus three gateways' stop, for each of 11 tests if it were per test).

    Sharing is safe: every test opens its own cases (fresh client references, so fresh
    case ids) and asserts on those cases, their events and their audit entries by case
    or message id; the one that reads AT's whole audit log asserts that no secret of
    its own case is in any entry, which other tests' traffic cannot make true or false
    for its values. The agreement suspended by a test is its own (SUSPENDED_LATER).
    """
    root = tmp_path_factory.mktemp("representation")
    sites = prepare_sites(
        root,
        ["AT", "BE", "CH"],
        now=datetime.now(UTC),
        agreements=[("AT", "BE"), ("CH", "BE")],
        delivery=FAST_DELIVERY,
    )
    at, be = sites["AT"], sites["BE"]
    today = datetime.now(UTC).date()
    write_agreement(SUSPENDED_LATER, at, be, today=today, holders=[at, be], signers=[at, be])
    with running_gateways(sites, ["AT", "BE", "CH"], spool_root=root / "spool") as running:
        yield running


@pytest.fixture
def at(exchange: RunningGateways) -> Iterator[Consulate]:
    with Consulate(exchange.sites["AT"]) as consulate:
        yield consulate


@pytest.fixture
def be(exchange: RunningGateways) -> Iterator[Consulate]:
    with Consulate(exchange.sites["BE"]) as consulate:
        yield consulate


def _in_state(state: R.CaseState.ValueType):  # type: ignore[no-untyped-def]
    return lambda case: case.state == state


def _both(at: Consulate, be: Consulate, case_id: str, state: R.CaseState.ValueType) -> None:
    here = at.wait_for(case_id, _in_state(state))
    there = be.wait_for(case_id, _in_state(state))
    assert here.state == there.state == state


def test_case_runs_from_request_to_completion_in_step_on_both_gateways(
    at: Consulate, be: Consulate
) -> None:
    case = at.request("BE", AT_BE)
    assert case.state == R.CASE_STATE_SUBMITTED
    assert case.requesting_state == "AT" and case.representing_state == "BE"
    assert case.next_deadline.seconds > 0
    _both(at, be, case.case_id, R.CASE_STATE_SUBMITTED)
    for target in (R.CASE_STATE_ACKNOWLEDGED, R.CASE_STATE_ACCEPTED, R.CASE_STATE_IN_PROGRESS):
        assert be.move(case.case_id, target).state == target
        _both(at, be, case.case_id, target)
    note = be.stub.AddNote(
        R.AddNoteRequest(
            case_id=case.case_id,
            text="Visited at the police station; photographs taken.",
            attachments=[
                R.Attachment(
                    file_name="photo.jpg", media_type="image/jpeg", content=b"\xff\xd8jpeg"
                )
            ],
        ),
        metadata=be.metadata,
        timeout=10,
    ).note
    claim = be.stub.ClaimCosts(
        R.ClaimCostsRequest(
            case_id=case.case_id, currency="EUR", amount_minor=4500, description="PHOTOGRAPHS"
        ),
        metadata=be.metadata,
        timeout=10,
    ).claim
    seen = at.wait_for(case.case_id, lambda c: len(c.notes) == 1 and len(c.cost_claims) == 1)
    assert seen.notes[0].note_id == note.note_id
    assert seen.notes[0].attachments[0].content == b"\xff\xd8jpeg"
    assert seen.cost_claims[0].claim_id == claim.claim_id and not seen.cost_claims[0].acknowledged
    acknowledged = at.stub.AcknowledgeCosts(
        R.AcknowledgeCostsRequest(case_id=case.case_id, claim_id=claim.claim_id),
        metadata=at.metadata,
        timeout=10,
    ).claim
    assert acknowledged.acknowledged
    again = at.stub.AcknowledgeCosts(
        R.AcknowledgeCostsRequest(case_id=case.case_id, claim_id=claim.claim_id),
        metadata=at.metadata,
        timeout=10,
    ).claim
    assert again == acknowledged  # idempotent: no second message
    be.wait_for(case.case_id, lambda c: c.cost_claims[0].acknowledged)
    be.move(case.case_id, R.CASE_STATE_COMPLETED)
    _both(at, be, case.case_id, R.CASE_STATE_COMPLETED)
    assert at.get(case.case_id).person == be.get(case.case_id).person


@pytest.mark.parametrize(
    ("side", "target"),
    [
        ("at", R.CASE_STATE_ACKNOWLEDGED),
        ("at", R.CASE_STATE_ACCEPTED),
        ("at", R.CASE_STATE_COMPLETED),
        ("be", R.CASE_STATE_ACCEPTED),
        ("be", R.CASE_STATE_COMPLETED),
        ("be", R.CASE_STATE_CANCELLED),
    ],
)
def test_illegal_transition_is_refused_by_the_callers_gateway(
    at: Consulate, be: Consulate, side: str, target: R.CaseState.ValueType
) -> None:
    case = at.request("BE", AT_BE)
    be.wait_for(case.case_id, _in_state(R.CASE_STATE_SUBMITTED))
    with pytest.raises(grpc.RpcError) as refused:
        (at if side == "at" else be).move(case.case_id, target)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(refused.value) == "ILLEGAL_TRANSITION"
    assert "submitted" in (refused.value.details() or "")
    assert_safe_message(refused.value)
    assert at.get(case.case_id).state == be.get(case.case_id).state == R.CASE_STATE_SUBMITTED


def _signed(
    exchange: RunningGateways, sender: str, agreement_id: str, message: CaseMessage
) -> envelope_pb2.Envelope:
    site = exchange.sites[sender]
    header = EnvelopeHeader(
        message_id=str(uuid.uuid4()),
        agreement_id=agreement_id,
        agreement_version=1,
        agreement_digest=agreement_digest(site, agreement_id),
        exchange_type=common_pb2.EXCHANGE_TYPE_REPRESENTATION,
        purpose=REPRESENTATION_PURPOSE,
        sender_state=sender,
        recipient_state="BE",
        created_at=utc_millis(datetime.now(UTC)),
        payload_type=PAYLOAD_TYPE,
    )
    signer = EnvelopeSigner.from_state_directory(site.pki)
    return signer.sign(header, encode_case_payload(message, {}))


@pytest.mark.parametrize(
    ("sender", "agreement_id", "target", "reason"),
    [
        ("AT", AT_BE, CaseStatus.ACCEPTED, "ILLEGAL_TRANSITION"),  # requester accepting
        ("AT", AT_BE, CaseStatus.COMPLETED, "ILLEGAL_TRANSITION"),
        ("CH", CH_BE, CaseStatus.CANCELLED, "NOT_A_PARTY"),  # a third state
    ],
)
def test_partner_message_the_machine_does_not_allow_is_refused_and_changes_nothing(
    exchange: RunningGateways,
    at: Consulate,
    be: Consulate,
    sender: str,
    agreement_id: str,
    target: CaseStatus,
    reason: str,
) -> None:
    case = at.request("BE", AT_BE)
    be.wait_for(case.case_id, _in_state(R.CASE_STATE_SUBMITTED))
    message = CaseMessage(case.case_id, "transition", 2, target_state=target)
    envelope = _signed(exchange, sender, agreement_id, message)
    with (
        PeerCaller(exchange.sites[sender], exchange.sites["BE"]) as peer,
        pytest.raises(grpc.RpcError) as refused,
    ):
        peer.deliver(envelope)
    assert error_reason(refused.value) == reason
    assert refused.value.code() in (
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.PERMISSION_DENIED,
    )
    assert be.get(case.case_id).state == R.CASE_STATE_SUBMITTED


def test_missed_deadline_raises_its_event_once_and_watchers_see_it(
    exchange: RunningGateways, at: Consulate, be: Consulate
) -> None:
    case = at.request("BE", AT_BE)
    be.wait_for(case.case_id, _in_state(R.CASE_STATE_SUBMITTED))
    watch = be.stub.WatchCase(
        R.WatchCaseRequest(case_id=case.case_id), metadata=be.metadata, timeout=20
    )
    stream = iter(watch)
    first = next(stream)
    assert first.event_kind == "current"
    exchanges = exchange.gateway("BE").exchanges
    assert exchanges is not None
    later = datetime.now(UTC) + timedelta(days=3)
    assert exchanges.deadlines.run_once(now=later) >= 1
    assert exchanges.deadlines.run_once(now=later + timedelta(hours=1)) == 0
    event = next(stream)
    assert event.event_kind == "deadline_missed"
    assert event.case.case_id == case.case_id
    watch.cancel()  # type: ignore[no-untyped-call]


def test_watch_receives_the_partners_transition(at: Consulate, be: Consulate) -> None:
    case = at.request("BE", AT_BE)
    be.wait_for(case.case_id, _in_state(R.CASE_STATE_SUBMITTED))
    watch = at.stub.WatchCase(
        R.WatchCaseRequest(case_id=case.case_id), metadata=at.metadata, timeout=20
    )
    stream = iter(watch)
    assert next(stream).case.state == R.CASE_STATE_SUBMITTED
    be.move(case.case_id, R.CASE_STATE_ACKNOWLEDGED)
    event = next(stream)
    assert event.event_kind == "acknowledged"
    assert event.case.state == R.CASE_STATE_ACKNOWLEDGED
    watch.cancel()  # type: ignore[no-untyped-call]


def test_list_cases_filters_by_state_and_kind(at: Consulate, be: Consulate) -> None:
    first = at.request("BE", AT_BE)
    second = at.request("BE", AT_BE, kind=R.ASSISTANCE_KIND_EVACUATION)
    be.wait_for(second.case_id, _in_state(R.CASE_STATE_SUBMITTED))
    be.move(first.case_id, R.CASE_STATE_ACKNOWLEDGED)
    at.wait_for(first.case_id, _in_state(R.CASE_STATE_ACKNOWLEDGED))
    listed = at.stub.ListCases(
        R.ListCasesRequest(kind=R.ASSISTANCE_KIND_EVACUATION, page_size=500),
        metadata=at.metadata,
        timeout=10,
    ).cases
    assert second.case_id in {c.case_id for c in listed}
    assert all(c.kind == R.ASSISTANCE_KIND_EVACUATION for c in listed)
    acknowledged = at.stub.ListCases(
        R.ListCasesRequest(state=R.CASE_STATE_ACKNOWLEDGED), metadata=at.metadata, timeout=10
    ).cases
    assert first.case_id in {c.case_id for c in acknowledged}
    assert all(c.state == R.CASE_STATE_ACKNOWLEDGED for c in acknowledged)
    with pytest.raises(grpc.RpcError) as refused:
        at.stub.ListCases(R.ListCasesRequest(page_size=501), metadata=at.metadata, timeout=10)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_list_cases_filters_by_deadline_and_pages(at: Consulate, be: Consulate) -> None:
    case = at.request("BE", AT_BE)
    due = at.get(case.case_id).next_deadline.ToDatetime(tzinfo=UTC)

    def listed(before: datetime) -> set[str]:
        stamp = Timestamp()
        stamp.FromDatetime(before)
        found: set[str] = set()
        token = ""
        while True:
            page = at.stub.ListCases(
                R.ListCasesRequest(deadline_before=stamp, page_size=1, page_token=token),
                metadata=at.metadata,
                timeout=10,
            )
            assert len(page.cases) <= 1
            found |= {c.case_id for c in page.cases}
            assert all(c.next_deadline.ToDatetime(tzinfo=UTC) < before for c in page.cases)
            token = page.next_page_token
            if not token:
                return found

    assert case.case_id not in listed(due - timedelta(seconds=1))
    assert case.case_id in listed(due + timedelta(seconds=1))


def test_policy_masks_a_trafficking_victims_contact_and_audits_paths_not_values(
    exchange: RunningGateways, at: Consulate, be: Consulate
) -> None:
    case = at.request(
        "BE",
        AT_BE,
        kind=R.ASSISTANCE_KIND_VICTIM_OF_TRAFFICKING,
        legal_basis=common_pb2.LegalBasis(consent_recorded=True),
    )
    there = be.wait_for(case.case_id, _in_state(R.CASE_STATE_SUBMITTED))
    assert there.person.contact != "+66 81 555 0199"
    assert there.person.location.country_code == "TH"
    audit_log = exchange.gateway("AT").exchanges.audit_log  # type: ignore[union-attr]
    entries = audit_log.entries(limit=1000)
    text = b"".join(e.canonical for e in entries)
    for secret in (b"+66 81 555 0199", b"Haidari", b"Chiang-Mai"):
        assert secret not in text


def test_special_category_without_legal_basis_is_refused(at: Consulate) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        at.request("BE", AT_BE, kind=R.ASSISTANCE_KIND_MEDICAL_EMERGENCY)
    assert error_reason(refused.value) == "SPECIAL_CATEGORY_WITHOUT_BASIS"


def test_a_case_under_a_suspended_agreement_is_refused_on_both_sides(
    exchange: RunningGateways, at: Consulate, be: Consulate
) -> None:
    case = at.request("BE", SUSPENDED_LATER)
    be.wait_for(case.case_id, _in_state(R.CASE_STATE_SUBMITTED))
    with LocalCaller(exchange.sites["AT"], ["admin"]) as at_admin:
        at_admin.agreements.SuspendAgreement(
            agreement_pb2.SuspendAgreementRequest(
                agreement_id=SUSPENDED_LATER, reason="DATA_BREACH"
            ),
            metadata=at_admin.metadata,
            timeout=10,
        )
    with LocalCaller(exchange.sites["BE"], ["admin"]) as be_admin:
        seen = be_admin.wait_for_status(SUSPENDED_LATER, agreement_pb2.AGREEMENT_STATUS_SUSPENDED)
    assert seen.status == agreement_pb2.AGREEMENT_STATUS_SUSPENDED

    # The requester can neither open a case nor move one under it.
    with pytest.raises(grpc.RpcError) as refused:
        at.request("BE", SUSPENDED_LATER)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(refused.value) == "SUSPENDED"
    assert_safe_message(refused.value)
    with pytest.raises(grpc.RpcError) as refused:
        at.move(case.case_id, R.CASE_STATE_CANCELLED, "NO_LONGER_NEEDED")
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(refused.value) == "SUSPENDED"
    # Nor can the representing state's consulate act on it.
    with pytest.raises(grpc.RpcError) as refused:
        be.move(case.case_id, R.CASE_STATE_ACKNOWLEDGED)
    assert error_reason(refused.value) == "SUSPENDED"
    # And a correctly signed message under it is refused by the receiving gateway.
    message = CaseMessage(case.case_id, "transition", 2, target_state=CaseStatus.CANCELLED)
    envelope = _signed(exchange, "AT", SUSPENDED_LATER, message)
    with (
        PeerCaller(exchange.sites["AT"], exchange.sites["BE"]) as peer,
        pytest.raises(grpc.RpcError) as refused,
    ):
        peer.deliver(envelope)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(refused.value) == "SUSPENDED"
    assert at.get(case.case_id).state == be.get(case.case_id).state == R.CASE_STATE_SUBMITTED


def test_a_partners_case_step_is_evidenced_as_received_and_as_applied_together(
    exchange: RunningGateways, at: Consulate, be: Consulate
) -> None:
    case = at.request("BE", AT_BE)
    be.wait_for(case.case_id, _in_state(R.CASE_STATE_SUBMITTED))
    be.move(case.case_id, R.CASE_STATE_ACKNOWLEDGED)
    at.wait_for(case.case_id, _in_state(R.CASE_STATE_ACKNOWLEDGED))
    audit_log = exchange.gateway("AT").exchanges.audit_log  # type: ignore[union-attr]
    applied = [
        e
        for e in audit_log.entries(event_kind="case_transition", limit=1000)
        if e.peer_state == "BE" and e.principal == "state:BE"
    ]
    assert applied
    for step in applied:
        (received,) = audit_log.entries(message_id=step.message_id, event_kind="received")
        assert received.reason_code is None
        # One unit wrote both: the receipt of the message comes right before its effect.
        assert received.idx == step.idx - 1
