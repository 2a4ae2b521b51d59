"""Attacks by a partner leave evidence: an audit entry naming its certificate, and a count.

Only BE runs, in this process; AT's genuine gateway identity calls its peer API. Each
attack is one that the envelope tests show refused; here the refusal must also be an
audit entry (reason code, AT's state, AT's TLS certificate fingerprint as the acting
principal, never a value of the record) and a count in ``pouch_refusals_total`` by
reason. Each test first shows the genuine delivery accepted.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import grpc
import pytest

from gateway.audit.log import AuditRecord
from gateway.envelope.payload import encode_payload
from gateway.pki.keys import certificate_fingerprint, load_certificate
from gateway.server.app import Gateway
from pouch.v1 import envelope_pb2
from tests.integration.conftest import error_reason
from tests.integration.exchange_fixtures import (
    PeerCaller,
    RunningGateways,
    be_alone,
)
from tests.integration.test_hostile_requests import peer_channel
from tests.integration.test_peer_envelope_attacks import (
    death_tree,
    from_at,
    resigned_by_ch,
)

TIMEOUT = 10.0


@pytest.fixture(scope="module")
def be_only(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateways]:
    """BE's gateway alone, shared by the module's tests (made once: 0.9 s to set
    up, plus its stop, for each of 7 tests if it were per test).

    Sharing is safe: tests run one at a time; nothing but a test's own synchronous calls
    reaches BE (AT is not running, so no partner traffic arrives unasked), and each test
    compares the refusals of one reason with the tally it read before its own call, and
    waits until its own entry and count have landed before it ends, so the next test's
    tally is settled (the module writes far fewer than the 1,000 refusals one page reads).
    """
    with be_alone(tmp_path_factory.mktemp("attack-evidence"), ["AT", "BE", "CH"]) as running:
        yield running


def at_fingerprint(be_only: RunningGateways) -> str:
    return certificate_fingerprint(load_certificate(be_only.sites["AT"].pki.gateway_cert))


def refusal_entries(be: Gateway, reason: str) -> list[AuditRecord]:
    assert be.exchanges is not None
    entries = be.exchanges.audit_log.entries(event_kind="refused", limit=1000)
    return [e for e in entries if e.reason_code == reason]


def counted(be: Gateway, reason: str) -> float:
    value = be.metrics.registry.get_sample_value(
        "pouch_refusals_total", {"listener": "peer", "reason": reason}
    )
    return value or 0.0


def assert_evidence(
    be_only: RunningGateways, be: Gateway, reason: str, before: tuple[int, float]
) -> AuditRecord:
    """One more entry and one more count for ``reason``, naming AT's certificate."""
    entries = refusal_entries(be, reason)
    assert len(entries) == before[0] + 1
    entry = entries[-1]
    assert entry.principal == f"gateway-certificate:{at_fingerprint(be_only)}"
    assert entry.peer_state == "AT"
    deadline = time.monotonic() + 5  # counted once the handler returned
    while counted(be, reason) != before[1] + 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert counted(be, reason) == before[1] + 1
    return entry


def tally(be: Gateway, reason: str) -> tuple[int, float]:
    return len(refusal_entries(be, reason)), counted(be, reason)


def refused(caller: PeerCaller, envelope: envelope_pb2.Envelope) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as error:
        caller.deliver(envelope)
    return error.value


def test_forged_envelope_signature_is_audited_with_the_certificate(
    be_only: RunningGateways, be: Gateway, as_at: PeerCaller
) -> None:
    assert as_at.deliver(from_at(be_only)).message_id
    before = tally(be, "ENVELOPE_SIGNATURE")
    envelope = from_at(be_only)
    envelope.payload = encode_payload(death_tree(be_only, family_name="Forged"))
    assert error_reason(refused(as_at, envelope)) == "ENVELOPE_SIGNATURE"
    entry = assert_evidence(be_only, be, "ENVELOPE_SIGNATURE", before)
    assert entry.message_id == envelope.message_id
    assert b"Forged" not in entry.canonical


def test_envelope_signed_with_another_states_key_is_audited_with_the_certificate(
    be_only: RunningGateways, be: Gateway, as_at: PeerCaller
) -> None:
    envelope = from_at(be_only)
    resigned_by_ch(be_only, envelope)
    before = tally(be, "ENVELOPE_SIGNATURE")
    assert error_reason(refused(as_at, envelope)) == "ENVELOPE_SIGNATURE"
    assert_evidence(be_only, be, "ENVELOPE_SIGNATURE", before)


def test_replay_is_audited_with_the_certificate(
    be_only: RunningGateways, be: Gateway, as_at: PeerCaller
) -> None:
    original = from_at(be_only)
    as_at.deliver(original)
    before = tally(be, "REPLAY")
    replay = from_at(
        be_only, death_tree(be_only, family_name="Replaced"), message_id=original.message_id
    )
    assert error_reason(refused(as_at, replay)) == "REPLAY"
    entry = assert_evidence(be_only, be, "REPLAY", before)
    assert entry.message_id == original.message_id


def test_agreement_digest_mismatch_is_audited_with_the_certificate(
    be_only: RunningGateways, be: Gateway, as_at: PeerCaller
) -> None:
    assert as_at.deliver(from_at(be_only)).message_id
    before = tally(be, "AGREEMENT_DIGEST_MISMATCH")
    envelope = from_at(be_only, digest="sha256:" + uuid.uuid4().hex * 2)
    assert error_reason(refused(as_at, envelope)) == "AGREEMENT_DIGEST_MISMATCH"
    assert_evidence(be_only, be, "AGREEMENT_DIGEST_MISMATCH", before)


def test_oversized_message_from_a_partner_is_audited_with_the_certificate(
    be_only: RunningGateways, be: Gateway, as_at: PeerCaller
) -> None:
    limit = be.settings.gateway.max_message_bytes
    tree = death_tree(be_only)
    tree["parties"][0]["person"]["name"]["given_names"] = ["x" * (limit + 1)]
    before = tally(be, "MESSAGE_TOO_LARGE")
    assert error_reason(refused(as_at, from_at(be_only, tree))) == "MESSAGE_TOO_LARGE"
    entry = assert_evidence(be_only, be, "MESSAGE_TOO_LARGE", before)
    assert entry.message_id is None  # the request was never read


def test_batch_over_the_limit_from_a_partner_is_audited_with_the_certificate(
    be_only: RunningGateways, be: Gateway, as_at: PeerCaller
) -> None:
    assert as_at.deliver_batch([from_at(be_only)]).results[0].HasField("receipt")
    before = tally(be, "BATCH_SIZE")
    envelope = from_at(be_only)
    with pytest.raises(grpc.RpcError) as error:
        as_at.deliver_batch([envelope] * 65)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_reason(error.value) == "BATCH_SIZE"
    assert_evidence(be_only, be, "BATCH_SIZE", before)


def test_malformed_request_from_a_partner_is_audited_with_the_certificate(
    be_only: RunningGateways, be: Gateway, as_at: PeerCaller
) -> None:
    assert as_at.deliver(from_at(be_only)).message_id
    before = tally(be, "MALFORMED_REQUEST")
    with peer_channel(be_only) as channel, pytest.raises(grpc.RpcError) as error:
        deliver = channel.unary_unary("/pouch.v1.PeerService/Deliver", None, None)
        deliver(b"\x0a\xff\xff\xff\xff\x0f", timeout=TIMEOUT)
    assert error_reason(error.value) == "MALFORMED_REQUEST"
    assert_evidence(be_only, be, "MALFORMED_REQUEST", before)
