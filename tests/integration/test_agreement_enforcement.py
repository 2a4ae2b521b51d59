"""Both gateways enforce the signed agreement: purposes, kinds, fields, quota, lifecycle.

AT and BE run in this process over real TLS, with a spool registry at each end so a
test can read what reached the registry. Besides the demo agreement, each test that
changes an agreement's standing has an agreement of its own, so tests can run in any
order. The shared quota runs two real ``pouch serve`` processes on one database.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import grpc
import pytest
from sqlalchemy import Connection

from gateway.config import load_settings
from gateway.errors import AgreementRejected
from gateway.policy.transforms import HASH_PREFIX, MASK, keyed_hash
from gateway.server.app import Gateway
from gateway.store.migrate import upgrade_to_head
from pouch.v1 import agreement_pb2, civil_pb2, common_pb2
from pouch_devtools.demo.agreements import CIVIL_PURPOSE
from pouch_devtools.demo.deployment import (
    GatewayProcess,
    Site,
    agreement_id_for,
    free_port,
    prepare_sites,
)
from tests.integration.conftest import assert_safe_message, error_reason
from tests.integration.exchange_fixtures import (
    FAST_DELIVERY,
    LocalCaller,
    RunningGateways,
    Traceable,
    adoption_update,
    birth_update,
    death_update,
    field_violations,
    hash_key,
    inbox_entry,
    outbox_message,
    payload_tree,
    running_gateways,
    submission,
    unique_reference,
    write_agreement,
)

CIVIL = "at-be-civil"
SUSPENDED_LATER = "at-be-suspension"
TERMINATED_LATER = "at-be-termination"
DIVERGING = "at-be-diverging"
SINGLE_SIGNED = "at-be-draft"


@pytest.fixture(scope="module")
def exchange(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateways]:
    """AT and BE running, shared by the module's tests (made once: 1.1 s to set up, plus
    two gateways' stop, for each of 11 tests if it were per test).

    Sharing is safe: each test submits updates with its own client references and
    traceable values and asserts on those messages (by message id) only; the agreements
    a test suspends, terminates or gives diverging texts are its own ids
    (SUSPENDED_LATER, TERMINATED_LATER, DIVERGING), never the one the others use, and
    the quota test runs on its own database in ``tmp_path``.
    """
    root = tmp_path_factory.mktemp("enforcement")
    now = datetime.now(UTC)
    today = now.date()
    sites = prepare_sites(
        root, ["AT", "BE"], now=now, agreements=[("AT", "BE")], delivery=FAST_DELIVERY
    )
    at, be = sites["AT"], sites["BE"]
    both = [at, be]
    for agreement_id in (SUSPENDED_LATER, TERMINATED_LATER):
        write_agreement(agreement_id, at, be, today=today, holders=both, signers=both)
    # One id, two valid texts: each end holds its own, signed by both parties.
    write_agreement(DIVERGING, at, be, today=today, holders=[at], signers=both)
    write_agreement(DIVERGING, at, be, today=today, holders=[be], signers=both, retention_days=30)
    write_agreement(SINGLE_SIGNED, at, be, today=today, holders=both, signers=[at])
    with running_gateways(sites, ["AT", "BE"], spool_root=root / "spool") as running:
        yield running


@pytest.fixture
def at_clerk(exchange: RunningGateways) -> Iterator[LocalCaller]:
    with LocalCaller(exchange.sites["AT"], ["civil:submit"]) as caller:
        yield caller


@pytest.fixture
def be_clerk(exchange: RunningGateways) -> Iterator[LocalCaller]:
    with LocalCaller(exchange.sites["BE"], ["civil:submit"]) as caller:
        yield caller


def admin(exchange: RunningGateways, state: str) -> LocalCaller:
    return LocalCaller(exchange.sites[state], ["admin"])


def today() -> date:
    return datetime.now(UTC).date()


def test_purpose_not_in_agreement_is_refused_before_anything_is_stored(
    exchange: RunningGateways, at_clerk: LocalCaller
) -> None:
    reference = unique_reference("purpose")
    request = submission(
        death_update(today()),
        agreement_id=CIVIL,
        recipient_state="BE",
        reference=reference,
        purpose="marketing",
    )
    with pytest.raises(grpc.RpcError) as refused:
        at_clerk.submit(request)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error_reason(refused.value) == "PURPOSE_NOT_AGREED"
    assert_safe_message(refused.value)
    assert "marketing" not in (refused.value.details() or "")
    x = exchange.gateway("AT").exchanges
    assert x is not None
    assert x.outbox.find_by_client_reference("operator@at", reference) is None
    # Nothing was kept under the reference: the corrected request is a new message.
    request.purpose = CIVIL_PURPOSE
    message_id = at_clerk.submit(request)
    earlier = x.outbox.find_by_client_reference("operator@at", reference)
    assert earlier is not None and earlier.message_id == message_id


def test_request_without_purpose_is_refused(
    exchange: RunningGateways, at_clerk: LocalCaller
) -> None:
    reference = unique_reference("no-purpose")
    request = submission(
        death_update(today()), agreement_id=CIVIL, recipient_state="BE", reference=reference
    )
    request.ClearField("purpose")
    with pytest.raises(grpc.RpcError) as refused:
        at_clerk.submit(request)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_reason(refused.value) == "VALIDATION"
    assert field_violations(refused.value) == ["purpose"]
    assert_safe_message(refused.value)
    x = exchange.gateway("AT").exchanges
    assert x is not None
    assert x.outbox.find_by_client_reference("operator@at", reference) is None


def test_event_kind_not_agreed_is_refused(exchange: RunningGateways, at_clerk: LocalCaller) -> None:
    reference = unique_reference("adoption")
    request = submission(
        adoption_update(today()), agreement_id=CIVIL, recipient_state="BE", reference=reference
    )
    with pytest.raises(grpc.RpcError) as refused:
        at_clerk.submit(request)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error_reason(refused.value) == "KIND_NOT_AGREED"
    assert_safe_message(refused.value)
    x = exchange.gateway("AT").exchanges
    assert x is not None
    assert x.outbox.find_by_client_reference("operator@at", reference) is None


def _arrived(exchange: RunningGateways, message_id: str) -> tuple[str, str]:
    """What BE's inbox holds and what BE's registry received, as text."""
    entry = inbox_entry(exchange.gateway("BE"), message_id)
    assert entry is not None and entry.envelope is not None
    spooled = exchange.spool_text("BE", message_id)
    assert spooled is not None, "the update never reached BE's registry"
    return str(payload_tree(entry.envelope)), spooled


def _received_tree(exchange: RunningGateways, message_id: str) -> dict[str, Any]:
    entry = inbox_entry(exchange.gateway("BE"), message_id)
    assert entry is not None and entry.envelope is not None
    return payload_tree(entry.envelope)


def test_fields_the_agreement_does_not_allow_never_reach_the_partner_registry(
    exchange: RunningGateways, at_clerk: LocalCaller
) -> None:
    key = hash_key(exchange.sites["AT"], CIVIL)
    marks = Traceable()
    birth = at_clerk.submit(
        submission(birth_update(today(), marks=marks), agreement_id=CIVIL, recipient_state="BE")
    )
    death = at_clerk.submit(
        submission(death_update(today(), marks=marks), agreement_id=CIVIL, recipient_state="BE")
    )
    for message_id in (birth, death):
        status = at_clerk.wait_until_final(message_id)
        assert status.state == common_pb2.DELIVERY_STATE_APPLIED, status
    secrets = (marks.act_reference, marks.subject_identifier, marks.parent_identifier)
    for message_id in (birth, death):
        sent = outbox_message(exchange.gateway("AT"), message_id)
        assert sent is not None and sent.envelope is not None
        for text in (str(payload_tree(sent.envelope)), *_arrived(exchange, message_id)):
            for secret in secrets:
                assert secret not in text
            assert keyed_hash(marks.subject_identifier, key) in text

    # A child's record: the minors' rules drop the act reference and the event's
    # locality, and keep only the country of the place of birth.
    inbox_text, registry_text = _arrived(exchange, birth)
    for text in (inbox_text, registry_text):
        assert marks.event_locality not in text
        assert marks.birth_locality not in text
        assert keyed_hash(marks.parent_identifier, key) in text
    tree = _received_tree(exchange, birth)
    assert "act_reference" not in tree
    assert tree["event_place"] == {"country_code": "AT"}
    child = tree["parties"][0]["person"]
    assert child["place_of_birth"] == {"country_code": "AT"}
    assert child["registry_identifier"].startswith(HASH_PREFIX)
    assert len(child["registry_identifier"]) == len(HASH_PREFIX) + 64

    # An adult's record: the act reference crosses masked, the identifier keyed-hashed.
    tree = _received_tree(exchange, death)
    assert tree["act_reference"] == MASK
    subject = tree["parties"][0]["person"]
    assert subject["registry_identifier"] == keyed_hash(marks.subject_identifier, key)
    assert subject["place_of_birth"] == {"country_code": "BE", "locality": marks.birth_locality}


def _replica_of(site: Site, root: Path) -> Site:
    """A second gateway of ``site``'s state on the same database, with its own ports."""
    root.mkdir()
    for entry in site.root.iterdir():
        if entry.name not in {"gateway.toml", "gateway.log"}:
            (root / entry.name).symlink_to(entry)
    replica = Site(
        state=site.state,
        root=root,
        pki=site.pki,
        idp=site.idp,
        local_port=free_port(),
        peer_port=free_port(),
        metrics_port=free_port(),
        registry_port=site.registry_port,
    )
    text = site.config_path.read_text(encoding="utf-8")
    for old, new in (
        (site.local_target, replica.local_target),
        (site.peer_target, replica.peer_target),
        (f"127.0.0.1:{site.metrics_port}", f"127.0.0.1:{replica.metrics_port}"),
    ):
        assert f'listen = "{old}"' in text
        text = text.replace(f'listen = "{old}"', f'listen = "{new}"')
    replica.config_path.write_text(text, encoding="utf-8")
    return replica


def test_daily_quota_is_shared_by_two_gateway_processes_on_one_database(tmp_path: Path) -> None:
    sites = prepare_sites(
        tmp_path, ["AT", "BE"], now=datetime.now(UTC), agreements=[("AT", "BE")], daily_quota=3
    )
    at = sites["AT"]
    first = GatewayProcess(at)
    second: GatewayProcess | None = None
    try:
        first.start()  # creates the database the replica then shares
        replica = _replica_of(at, tmp_path / "AT-replica")
        assert (replica.root / "data" / "pouch.db").resolve() == (at.root / "data" / "pouch.db")
        second = GatewayProcess(replica)
        second.start()
        with (
            LocalCaller(at, ["civil:submit"]) as one,
            LocalCaller(replica, ["civil:submit"]) as two,
        ):
            accepted = []
            for caller in (one, one, two):
                request = submission(
                    death_update(today()), agreement_id=CIVIL, recipient_state="BE"
                )
                accepted.append(caller.submit(request))
            assert len(set(accepted)) == 3
            for caller in (two, one):
                with pytest.raises(grpc.RpcError) as refused:
                    caller.submit(
                        submission(death_update(today()), agreement_id=CIVIL, recipient_state="BE")
                    )
                assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert error_reason(refused.value) == "QUOTA_EXHAUSTED"
                assert_safe_message(refused.value)
    finally:
        for process in (first, second):
            if process is not None:
                process.terminate()


def test_suspension_stops_traffic_on_both_gateways(
    exchange: RunningGateways, at_clerk: LocalCaller, be_clerk: LocalCaller
) -> None:
    with admin(exchange, "AT") as at_admin:
        answer = at_admin.agreements.SuspendAgreement(
            agreement_pb2.SuspendAgreementRequest(
                agreement_id=SUSPENDED_LATER, reason="DATA_BREACH"
            ),
            metadata=at_admin.metadata,
            timeout=10,
        )
        assert answer.summary.status == agreement_pb2.AGREEMENT_STATUS_SUSPENDED
        assert "DATA_BREACH" in answer.summary.inactive_reason
        # The demo agreement between the same states is untouched.
        assert at_admin.summary(CIVIL).status == agreement_pb2.AGREEMENT_STATUS_ACTIVE

    with pytest.raises(grpc.RpcError) as refused:
        at_clerk.submit(
            submission(death_update(today()), agreement_id=SUSPENDED_LATER, recipient_state="BE")
        )
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(refused.value) == "SUSPENDED"
    assert_safe_message(refused.value)

    with admin(exchange, "BE") as be_admin:
        seen = be_admin.wait_for_status(SUSPENDED_LATER, agreement_pb2.AGREEMENT_STATUS_SUSPENDED)
    assert seen.status == agreement_pb2.AGREEMENT_STATUS_SUSPENDED
    assert seen.inactive_reason == "suspended by AT: DATA_BREACH"
    with pytest.raises(grpc.RpcError) as refused:
        be_clerk.submit(
            submission(death_update(today()), agreement_id=SUSPENDED_LATER, recipient_state="AT")
        )
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(refused.value) == "SUSPENDED"
    assert_safe_message(refused.value)


def test_termination_purges_stored_payloads_and_keeps_evidence(
    exchange: RunningGateways, at_clerk: LocalCaller
) -> None:
    sent = [
        at_clerk.submit(
            submission(death_update(today()), agreement_id=TERMINATED_LATER, recipient_state="BE")
        )
        for _ in range(2)
    ]
    for message_id in sent:
        assert at_clerk.wait_until_final(message_id).state == common_pb2.DELIVERY_STATE_APPLIED
        entry = inbox_entry(exchange.gateway("BE"), message_id)
        assert entry is not None and entry.envelope is not None

    with admin(exchange, "AT") as at_admin:
        answer = at_admin.agreements.TerminateAgreement(
            agreement_pb2.TerminateAgreementRequest(
                agreement_id=TERMINATED_LATER, reason="PARTNER_WITHDREW"
            ),
            metadata=at_admin.metadata,
            timeout=10,
        )
    assert answer.summary.status == agreement_pb2.AGREEMENT_STATUS_TERMINATED
    assert answer.purged_payloads >= len(sent)
    with admin(exchange, "BE") as be_admin:
        seen = be_admin.wait_for_status(TERMINATED_LATER, agreement_pb2.AGREEMENT_STATUS_TERMINATED)
    assert seen.status == agreement_pb2.AGREEMENT_STATUS_TERMINATED

    for message_id in sent:
        kept = outbox_message(exchange.gateway("AT"), message_id)
        assert kept is not None
        assert kept.envelope is None and kept.payload_purged_at is not None
        assert kept.receipt is not None and kept.outcome == "applied"
        received = inbox_entry(exchange.gateway("BE"), message_id)
        assert received is not None
        assert received.envelope is None and received.payload_purged_at is not None
        assert received.registry_outcome == "applied"
        # The caller still sees the outcome: the evidence outlives the payload.
        assert at_clerk.status(message_id).state == common_pb2.DELIVERY_STATE_APPLIED


def test_agreement_digest_mismatch_between_the_two_ends_is_refused(
    exchange: RunningGateways, at_clerk: LocalCaller
) -> None:
    with admin(exchange, "AT") as at_admin, admin(exchange, "BE") as be_admin:
        ours, theirs = at_admin.summary(DIVERGING), be_admin.summary(DIVERGING)
    # Each end holds a text in force, signed by both; the texts differ.
    assert ours.status == theirs.status == agreement_pb2.AGREEMENT_STATUS_ACTIVE
    assert ours.ref.version == theirs.ref.version
    assert ours.ref.digest != theirs.ref.digest

    message_id = at_clerk.submit(
        submission(death_update(today()), agreement_id=DIVERGING, recipient_state="BE")
    )
    status = at_clerk.wait_until_final(message_id)
    assert status.state == common_pb2.DELIVERY_STATE_DEAD_LETTERED
    assert status.reason_code == "PARTNER_AGREEMENT_DIGEST_MISMATCH"
    assert inbox_entry(exchange.gateway("BE"), message_id) is None
    assert exchange.spool_text("BE", message_id) is None


def test_agreement_signed_by_one_party_is_inactive_at_runtime(
    exchange: RunningGateways, at_clerk: LocalCaller
) -> None:
    with admin(exchange, "AT") as at_admin:
        summary = at_admin.summary(SINGLE_SIGNED)
    assert summary.status == agreement_pb2.AGREEMENT_STATUS_INACTIVE
    assert summary.inactive_reason == "MISSING_SIGNATURE"

    reference = unique_reference("draft")
    with pytest.raises(grpc.RpcError) as refused:
        at_clerk.submit(
            submission(
                death_update(today()),
                agreement_id=SINGLE_SIGNED,
                recipient_state="BE",
                reference=reference,
            )
        )
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(refused.value) == "MISSING_SIGNATURE"
    assert_safe_message(refused.value)
    x = exchange.gateway("AT").exchanges
    assert x is not None
    assert x.outbox.find_by_client_reference("operator@at", reference) is None


def test_a_suspension_committed_after_the_agreement_was_read_refuses_the_exchange(
    tmp_path: Path,
) -> None:
    # The lifecycle is read in the write unit that records the exchange, not before.
    sites = prepare_sites(tmp_path, ["AT", "BE"], now=datetime.now(UTC), agreements=[("AT", "BE")])
    gateway = Gateway(load_settings(sites["AT"].config_path))
    upgrade_to_head(gateway.engine)
    x = gateway.exchanges
    assert x is not None
    agreement_id = agreement_id_for("AT", "BE")
    try:
        prepared = x.gate.prepare(agreement_id, "BE")
        x.gate.in_force(agreement_id, "BE")
        x.lifecycle.record(
            agreement_id, prepared.version, "suspended", by_state="BE", reason_code="DATA_BREACH"
        )
        recorded: list[str] = []

        def record_exchange(conn: Connection) -> None:
            x.gate.confirm_within(conn, prepared)
            recorded.append("stored")

        with pytest.raises(AgreementRejected) as refused:
            x.group_commit.run(record_exchange)
        assert refused.value.reason == "SUSPENDED"
        assert recorded == []
    finally:
        x.group_commit.close()
        gateway.engine.dispose()


def test_a_submission_stream_is_answered_and_queued_in_the_order_it_was_sent(
    exchange: RunningGateways, at_clerk: LocalCaller
) -> None:
    # More updates than the stream takes unanswered at once, a refused one among them, and
    # a reference repeated within the stream: each answer still comes back in its place.
    references = [unique_reference("stream") for _ in range(150)]
    requests = [
        submission(
            death_update(today()),
            agreement_id=CIVIL,
            recipient_state="BE",
            reference=reference,
            purpose="marketing" if index == 70 else CIVIL_PURPOSE,
        )
        for index, reference in enumerate(references)
    ]
    requests.append(requests[10])
    answers = list(
        at_clerk.civil.SubmitUpdates(
            iter(civil_pb2.SubmitUpdatesRequest(update=r) for r in requests),
            metadata=at_clerk.metadata,
            timeout=60,
        )
    )

    assert [a.client_reference for a in answers] == [*references, references[10]]
    assert answers[70].error_reason == "PURPOSE_NOT_AGREED" and not answers[70].message_id
    assert answers[-1].message_id == answers[10].message_id
    queued = [a.message_id for a in answers[:-1] if a.message_id]
    assert len(set(queued)) == 149
    # The outbox took them in the stream's order: so did their SUBMITTED evidence.
    x = exchange.gateway("AT").exchanges
    assert x is not None
    indexes = [
        entry.idx
        for message_id in queued
        for entry in x.audit_log.entries(message_id=message_id, event_kind="submitted")
    ]
    assert len(indexes) == len(queued) and indexes == sorted(indexes)
