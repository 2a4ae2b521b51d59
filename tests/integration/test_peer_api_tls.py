"""The peer listener admits a partner gateway only as the state whose CA issued it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import grpc
import pytest
from cryptography import x509

from gateway.pki.crl import revoke
from gateway.pki.identity import gateway_uri
from gateway.server.app import Gateway
from pouch.v1 import peer_pb2, peer_pb2_grpc
from tests.integration.conftest import (
    Deployment,
    assert_safe_message,
    channel_to,
    error_reason,
    issued_identity,
)

TIMEOUT = 10.0


def ping(gateway: Gateway, trusted_ca: bytes, chain: bytes | None, key: bytes | None) -> str:
    target = f"127.0.0.1:{gateway.peer_port}"
    with channel_to(target, trusted_ca=trusted_ca, chain=chain, key=key) as channel:
        answer = peer_pb2_grpc.PeerServiceStub(channel).Ping(
            peer_pb2.PingRequest(nonce="n-1"), timeout=TIMEOUT
        )
    assert answer.nonce == "n-1"
    assert answer.gateway_state == "AT"
    return answer.caller_state


def at_ca(deployment: Deployment) -> bytes:
    return deployment.sites["AT"].pki.ca_cert.read_bytes()


def assert_listening(deployment: Deployment, gateway: Gateway) -> None:
    """The genuine partner is answered: a refusal that follows is the listener's
    decision, not a stopped listener (which would also answer UNAVAILABLE)."""
    be = deployment.sites["BE"].pki
    caller = ping(
        gateway, at_ca(deployment), be.gateway_cert.read_bytes(), be.gateway_key.read_bytes()
    )
    assert caller == "BE"


def gateway_cert(
    deployment: Deployment,
    state: str,
    *,
    claims: str | None = None,
    now: datetime | None = None,
    days: int = 30,
) -> tuple[bytes, bytes]:
    issued = deployment.authority(state).issue_certificate(
        common_name="test gateway",
        san_uris=[gateway_uri(claims or state)],
        dns_names=["localhost"],
        server_auth=True,
        client_auth=True,
        # Backdated, as CAs do: a handshake in the second it was issued must not find
        # it not yet valid.
        now=now or datetime.now(UTC) - timedelta(minutes=5),
        validity_days=days,
    )
    return issued_identity(issued)


def test_partner_gateway_is_recognised_by_its_issuing_ca(
    deployment: Deployment, gateway_at: Gateway
) -> None:
    be = deployment.sites["BE"].pki
    caller = ping(
        gateway_at, at_ca(deployment), be.gateway_cert.read_bytes(), be.gateway_key.read_bytes()
    )
    assert caller == "BE"


def test_peer_call_without_client_certificate_is_refused(
    deployment: Deployment, gateway_at: Gateway
) -> None:
    assert_listening(deployment, gateway_at)
    with pytest.raises(grpc.RpcError) as refused:
        ping(gateway_at, at_ca(deployment), None, None)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


def test_peer_cert_from_unknown_ca_is_refused(deployment: Deployment, gateway_at: Gateway) -> None:
    assert_listening(deployment, gateway_at)
    chain, key = gateway_cert(deployment, "FR")
    with pytest.raises(grpc.RpcError) as refused:
        ping(gateway_at, at_ca(deployment), chain, key)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


def test_peer_cert_from_partner_ca_claiming_other_state_is_refused(
    deployment: Deployment, gateway_at: Gateway
) -> None:
    # BE's CA issues a certificate whose SAN claims to be CH's gateway.
    chain, key = gateway_cert(deployment, "BE", claims="CH")
    with pytest.raises(grpc.RpcError) as refused:
        ping(gateway_at, at_ca(deployment), chain, key)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error_reason(refused.value) == "SAN_MISMATCH"
    assert_safe_message(refused.value)


def test_own_state_certificate_cannot_speak_on_peer_api(
    deployment: Deployment, gateway_at: Gateway
) -> None:
    assert_listening(deployment, gateway_at)
    at = deployment.sites["AT"].pki
    with pytest.raises(grpc.RpcError) as refused:
        ping(
            gateway_at, at_ca(deployment), at.gateway_cert.read_bytes(), at.gateway_key.read_bytes()
        )
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


def test_expired_peer_certificate_is_refused(deployment: Deployment, gateway_at: Gateway) -> None:
    assert_listening(deployment, gateway_at)
    chain, key = gateway_cert(deployment, "BE", now=datetime.now(UTC) - timedelta(days=10), days=1)
    with pytest.raises(grpc.RpcError) as refused:
        ping(gateway_at, at_ca(deployment), chain, key)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


def test_revoked_peer_certificate_is_refused_without_restart(
    deployment: Deployment, gateway_at: Gateway
) -> None:
    chain, key = gateway_cert(deployment, "CH")
    assert ping(gateway_at, at_ca(deployment), chain, key) == "CH"

    serial = x509.load_pem_x509_certificate(chain).serial_number
    ch = deployment.sites["CH"].pki
    revoke(ch.root, serial, now=datetime.now(UTC))
    # The out-of-band CRL update: CH's new CRL lands in AT's copy.
    target = deployment.sites["AT"].root / "partners" / "CH" / "crl.pem"
    staged = target.with_suffix(".new")
    staged.write_bytes(ch.crl.read_bytes())
    staged.replace(target)  # published whole, as operators' tooling does

    with pytest.raises(grpc.RpcError) as refused:
        ping(gateway_at, at_ca(deployment), chain, key)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error_reason(refused.value) == "REVOKED"
    assert_safe_message(refused.value)
