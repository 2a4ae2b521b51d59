"""The key exchange under each peer call: counted by group, and hybrid where required.

BE's gateway runs alone in this process, started for each test with
``[peer_api] require_hybrid_key_exchange`` off or on; AT's genuine gateway identity
calls it. A grpcio client (as every gateway's own outbound channel is) negotiates
X25519MLKEM768; :mod:`tests.integration.classical_tls_client` presents the same
certificate over a connection offering P-256 alone, which gRPC's server reports as
``prime256v1``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2

from adapters.settings import SpoolAdapterSettings
from gateway.audit.log import AuditRecord
from gateway.config import load_settings
from gateway.pki.keys import certificate_fingerprint, load_certificate
from gateway.server.app import Gateway
from pouch.v1 import peer_pb2, peer_pb2_grpc
from pouch_devtools.demo.deployment import Site, prepare_sites
from tests.integration.classical_tls_client import ClassicalIdentity, UnaryAnswer, call_unary
from tests.integration.conftest import FORBIDDEN_IN_MESSAGES, GatewayThread, channel_to

TIMEOUT = 10.0
HYBRID = "X25519MLKEM768"
CLASSICAL = "prime256v1"
REASON = "KEY_EXCHANGE_NOT_HYBRID"
PING = "/pouch.v1.PeerService/Ping"


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Site]:
    """AT, BE and CH with the AT–BE agreement, so that BE audits refusals."""
    root = tmp_path_factory.mktemp("key-exchange")
    return prepare_sites(root, ["AT", "BE", "CH"], now=datetime.now(UTC), agreements=[("AT", "BE")])


@contextlib.contextmanager
def be_serving(sites: dict[str, Site], spool: Path, *, require_hybrid: bool) -> Iterator[Gateway]:
    settings = load_settings(sites["BE"].config_path)
    peer_api = settings.peer_api.model_copy(update={"require_hybrid_key_exchange": require_hybrid})
    settings = settings.model_copy(
        update={
            "peer_api": peer_api,
            "registry": SpoolAdapterSettings(kind="spool", directory=spool),
        }
    )
    with GatewayThread(Gateway(settings)) as gateway:
        yield gateway


def ping_over_grpc(sites: dict[str, Site], be: Gateway) -> peer_pb2.PingResponse:
    at = sites["AT"].pki
    with channel_to(
        f"127.0.0.1:{be.peer_port}",
        trusted_ca=sites["BE"].pki.ca_cert.read_bytes(),
        chain=at.gateway_cert.read_bytes(),
        key=at.gateway_key.read_bytes(),
    ) as channel:
        return peer_pb2_grpc.PeerServiceStub(channel).Ping(
            peer_pb2.PingRequest(nonce="n-1"), timeout=TIMEOUT
        )


def ping_over_classical_tls(sites: dict[str, Site], be: Gateway) -> UnaryAnswer:
    at = sites["AT"].pki
    identity = ClassicalIdentity(
        trusted_ca=sites["BE"].pki.ca_cert.read_bytes(),
        certificate=at.gateway_cert,
        key=at.gateway_key,
    )
    request = peer_pb2.PingRequest(nonce="n-1").SerializeToString()
    return call_unary(("127.0.0.1", be.peer_port), PING, request, identity=identity)


def counted_group(be: Gateway, group: str) -> float:
    value = be.metrics.registry.get_sample_value("pouch_peer_key_exchange_total", {"group": group})
    return value or 0.0


def counted_refusals(be: Gateway) -> float:
    value = be.metrics.registry.get_sample_value(
        "pouch_refusals_total", {"listener": "peer", "reason": REASON}
    )
    return value or 0.0


def refusal_entries(be: Gateway) -> list[AuditRecord]:
    assert be.exchanges is not None
    entries = be.exchanges.audit_log.entries(event_kind="refused", limit=1000)
    return [e for e in entries if e.reason_code == REASON]


def reason_of(answer: UnaryAnswer) -> str:
    assert answer.details is not None, "refusal carries no google.rpc.Status"
    for detail in answer.details.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info.reason
    raise AssertionError("refusal carries no ErrorInfo")


def test_partner_gateway_connection_negotiates_post_quantum_hybrid_key_exchange(
    sites: dict[str, Site], tmp_path: Path
) -> None:
    with be_serving(sites, tmp_path, require_hybrid=True) as be:
        before = counted_group(be, HYBRID)
        answer = ping_over_grpc(sites, be)
        assert answer.caller_state == "AT"
        # BE tells the caller what its connection negotiated: the caller's gRPC cannot.
        assert answer.key_exchange_group == HYBRID
        assert counted_group(be, HYBRID) == before + 1


def test_classical_key_exchange_is_served_while_hybrid_is_not_required(
    sites: dict[str, Site], tmp_path: Path
) -> None:
    with be_serving(sites, tmp_path, require_hybrid=False) as be:
        before = counted_group(be, CLASSICAL), counted_group(be, HYBRID)
        answer = ping_over_classical_tls(sites, be)
        assert answer.status == grpc.StatusCode.OK.value[0], answer.message
        assert answer.reply is not None
        assert peer_pb2.PingResponse.FromString(answer.reply).caller_state == "AT"
        # The server saw the classical group: the client really offered nothing else.
        assert (counted_group(be, CLASSICAL), counted_group(be, HYBRID)) == (
            before[0] + 1,
            before[1],
        )


def test_classical_key_exchange_is_refused_where_hybrid_is_required(
    sites: dict[str, Site], tmp_path: Path
) -> None:
    with be_serving(sites, tmp_path, require_hybrid=True) as be:
        assert ping_over_grpc(sites, be).caller_state == "AT"  # the same certificate, hybrid
        before = counted_group(be, CLASSICAL)
        answer = ping_over_classical_tls(sites, be)
        assert answer.status == grpc.StatusCode.PERMISSION_DENIED.value[0]
        assert reason_of(answer) == REASON
        assert CLASSICAL in answer.message
        assert "[peer_api] require_hybrid_key_exchange" in answer.message
        assert not [m for m in FORBIDDEN_IN_MESSAGES if m in answer.message]
        assert counted_group(be, CLASSICAL) == before + 1


def test_classical_key_exchange_refusal_is_audited_logged_and_counted_once(
    sites: dict[str, Site], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.server.guard")
    with be_serving(sites, tmp_path, require_hybrid=True) as be:
        assert ping_over_grpc(sites, be).caller_state == "AT"
        entries, refusals = len(refusal_entries(be)), counted_refusals(be)
        assert ping_over_classical_tls(sites, be).status != grpc.StatusCode.OK.value[0]
        after = refusal_entries(be)
        assert len(after) == entries + 1
        at_certificate = load_certificate(sites["AT"].pki.gateway_cert)
        assert (
            after[-1].principal == f"gateway-certificate:{certificate_fingerprint(at_certificate)}"
        )
        assert after[-1].peer_state is None  # refused before the certificate named a state
        assert counted_refusals(be) == refusals + 1
    lines = [r for r in caplog.records if r.name == "gateway.server.guard" and REASON in r.message]
    assert len(lines) == 1
    assert lines[0].message == f"refused {PING} on the peer listener: {REASON}"
