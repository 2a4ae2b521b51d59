"""A party lifts its own suspension of an agreement, and only its own.

AT and BE run in this process over real TLS with spool registries. For each side, the
test suspends an agreement of its own from that side, shows calls refused on both
gateways, shows the other party cannot lift it, resumes it with ``pouch agreement
resume`` (a real subprocess), and shows both gateways carry calls again at once.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import grpc
import pytest

from gateway.agreements.loader import load_agreement
from gateway.agreements.model import EXCHANGES_VALIDATOR
from gateway.envelope import EnvelopeHeader, EnvelopeSigner, utc_millis
from pouch.v1 import agreement_pb2, common_pb2, envelope_pb2
from pouch_devtools.demo.deployment import Site, prepare_sites
from tests.integration.conftest import assert_safe_message, error_reason
from tests.integration.exchange_fixtures import (
    FAST_DELIVERY,
    LocalCaller,
    PeerCaller,
    RunningGateways,
    death_update,
    running_gateways,
    submission,
    write_agreement,
)

SUSPENDED_BY = {"AT": "at-be-lifted-by-at", "BE": "at-be-lifted-by-be"}
NEVER_SUSPENDED = "at-be-never-suspended"
FORGED = "at-be-forged-resumption"
OTHER = {"AT": "BE", "BE": "AT"}


@pytest.fixture(scope="module")
def exchange(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateways]:
    """AT and BE, shared by the module's tests: each test suspends and resumes its own
    agreement id, never another's."""
    root = tmp_path_factory.mktemp("resume")
    now = datetime.now(UTC)
    sites = prepare_sites(
        root, ["AT", "BE"], now=now, agreements=[("AT", "BE")], delivery=FAST_DELIVERY
    )
    at, be = sites["AT"], sites["BE"]
    for agreement_id in (*SUSPENDED_BY.values(), NEVER_SUSPENDED, FORGED):
        write_agreement(agreement_id, at, be, today=now.date(), holders=[at, be], signers=[at, be])
    with running_gateways(sites, ["AT", "BE"], spool_root=root / "spool") as running:
        yield running


def today() -> date:
    return datetime.now(UTC).date()


def resume_from_cli(
    site: Site, agreement_id: str, token_file: Path
) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable, "-m", "gateway", "agreement", "resume", agreement_id,
        "--gateway", site.local_target,
        "--ca", str(site.pki.ca_cert),
        "--cert", str(site.pki.client_cert("operator")),
        "--key", str(site.pki.client_key("operator")),
        "--token-file", str(token_file),
        "--reason", "BREACH_RESOLVED",
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def submit_to_partner(caller: LocalCaller, state: str, agreement_id: str) -> str:
    return caller.submit(
        submission(death_update(today()), agreement_id=agreement_id, recipient_state=OTHER[state])
    )


def refused_reason(caller: LocalCaller, state: str, agreement_id: str) -> str:
    with pytest.raises(grpc.RpcError) as refused:
        submit_to_partner(caller, state, agreement_id)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert_safe_message(refused.value)
    return error_reason(refused.value)


@pytest.mark.parametrize("suspender", ["AT", "BE"])
def test_a_party_lifts_its_own_suspension_and_the_partner_resumes_at_once(
    exchange: RunningGateways, suspender: str, tmp_path: Path
) -> None:
    agreement_id = SUSPENDED_BY[suspender]
    partner = OTHER[suspender]
    own_site, partner_site = exchange.sites[suspender], exchange.sites[partner]
    with (
        LocalCaller(own_site, ["admin", "civil:submit"]) as own,
        LocalCaller(partner_site, ["admin", "civil:submit"]) as other,
    ):
        # In force on both sides first: the refusals below are the suspension's.
        for caller, state in ((own, suspender), (other, partner)):
            message_id = submit_to_partner(caller, state, agreement_id)
            assert caller.wait_until_final(message_id).state == common_pb2.DELIVERY_STATE_APPLIED

        own.agreements.SuspendAgreement(
            agreement_pb2.SuspendAgreementRequest(agreement_id=agreement_id, reason="DATA_BREACH"),
            metadata=own.metadata,
            timeout=10,
        )
        seen = other.wait_for_status(agreement_id, agreement_pb2.AGREEMENT_STATUS_SUSPENDED)
        assert seen.inactive_reason == f"suspended by {suspender}: DATA_BREACH"
        assert refused_reason(own, suspender, agreement_id) == "SUSPENDED"
        assert refused_reason(other, partner, agreement_id) == "SUSPENDED"
        for state in (suspender, partner):
            assert agreement_state(exchange, state, agreement_id) == ("suspended", "SUSPENDED")

        # The partner cannot lift a suspension it did not declare.
        with pytest.raises(grpc.RpcError) as refused:
            other.agreements.ResumeAgreement(
                agreement_pb2.ResumeAgreementRequest(agreement_id=agreement_id, reason="NO_REASON"),
                metadata=other.metadata,
                timeout=10,
            )
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert error_reason(refused.value) == "SUSPENDED_BY_PARTNER"
        assert other.summary(agreement_id).status == agreement_pb2.AGREEMENT_STATUS_SUSPENDED
        assert own.summary(agreement_id).status == agreement_pb2.AGREEMENT_STATUS_SUSPENDED

        token_file = tmp_path / "admin.token"
        token_file.write_text(own_site.token(["admin"], now=time.time()))
        result = resume_from_cli(own_site, agreement_id, token_file)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip().endswith(f"{agreement_id} version 1: ACTIVE"), result.stdout

        assert own.summary(agreement_id).status == agreement_pb2.AGREEMENT_STATUS_ACTIVE
        seen = other.wait_for_status(agreement_id, agreement_pb2.AGREEMENT_STATUS_ACTIVE)
        assert seen.status == agreement_pb2.AGREEMENT_STATUS_ACTIVE
        for caller, state in ((own, suspender), (other, partner)):
            message_id = submit_to_partner(caller, state, agreement_id)
            assert caller.wait_until_final(message_id).state == common_pb2.DELIVERY_STATE_APPLIED
            assert agreement_state(exchange, state, agreement_id) == ("active", "")


def agreement_state(exchange: RunningGateways, state: str, agreement_id: str) -> tuple[str, str]:
    """The (state, reason) labels of the gateway's ``pouch_agreement_state`` series."""
    registry = exchange.gateway(state).metrics.registry
    found = [
        (sample.labels["state"], sample.labels["reason"])
        for family in registry.collect()
        if family.name == "pouch_agreement_state"
        for sample in family.samples
        if sample.labels["agreement"] == agreement_id and sample.value == 1
    ]
    assert len(found) == 1, found
    return found[0]


def test_resuming_an_agreement_that_is_not_suspended_is_refused(
    exchange: RunningGateways,
) -> None:
    with LocalCaller(exchange.sites["AT"], ["admin"]) as admin:
        assert admin.summary(NEVER_SUSPENDED).status == agreement_pb2.AGREEMENT_STATUS_ACTIVE
        with pytest.raises(grpc.RpcError) as refused:
            admin.agreements.ResumeAgreement(
                agreement_pb2.ResumeAgreementRequest(
                    agreement_id=NEVER_SUSPENDED, reason="BREACH_RESOLVED"
                ),
                metadata=admin.metadata,
                timeout=10,
            )
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(refused.value) == "NOT_SUSPENDED"


def resumption_signed_by(site: Site, to: Site, agreement_id: str) -> envelope_pb2.Envelope:
    """A resumption notice as ``site``'s gateway would send it, really signed by it."""
    loaded = load_agreement(
        to.agreements_dir / f"{agreement_id}.yaml", exchanges_validator=EXCHANGES_VALIDATOR
    )
    header = EnvelopeHeader(
        message_id=str(uuid.uuid4()),
        agreement_id=agreement_id,
        agreement_version=loaded.agreement.version,
        agreement_digest=loaded.digest,
        exchange_type=common_pb2.EXCHANGE_TYPE_AGREEMENT_NOTICE,
        purpose="agreement_notice",
        sender_state=site.state,
        recipient_state=to.state,
        created_at=utc_millis(datetime.now(UTC)),
        payload_type=agreement_pb2.AgreementNotice.DESCRIPTOR.full_name,
    )
    notice = agreement_pb2.AgreementNotice(
        agreement_id=agreement_id,
        agreement_version=loaded.agreement.version,
        action=agreement_pb2.AGREEMENT_NOTICE_ACTION_RESUME,
        reason_code="BREACH_RESOLVED",
    )
    return EnvelopeSigner.from_state_directory(site.pki).sign(header, notice.SerializeToString())


def test_a_partner_resumption_of_our_own_suspension_is_refused(
    exchange: RunningGateways,
) -> None:
    at, be = exchange.sites["AT"], exchange.sites["BE"]
    with LocalCaller(at, ["admin"]) as at_admin, LocalCaller(be, ["admin"]) as be_admin:
        at_admin.agreements.SuspendAgreement(
            agreement_pb2.SuspendAgreementRequest(agreement_id=FORGED, reason="DATA_BREACH"),
            metadata=at_admin.metadata,
            timeout=10,
        )
        be_admin.wait_for_status(FORGED, agreement_pb2.AGREEMENT_STATUS_SUSPENDED)
        with PeerCaller(be, at) as as_be, pytest.raises(grpc.RpcError) as refused:
            as_be.deliver(resumption_signed_by(be, at, FORGED))
        assert error_reason(refused.value) == "SUSPENDED_BY_PARTNER"
        assert_safe_message(refused.value)
        assert at_admin.summary(FORGED).status == agreement_pb2.AGREEMENT_STATUS_SUSPENDED
        assert agreement_state(exchange, "AT", FORGED) == ("suspended", "SUSPENDED")
