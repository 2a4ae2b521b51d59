"""The local listener admits this state's callers with a bound token and the scope."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import urllib.request
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from cryptography import x509
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from gateway.pki.crl import revoke
from gateway.pki.idp import mint_token
from gateway.pki.layout import issue_client
from gateway.server.app import Gateway
from pouch.v1 import gateway_pb2, gateway_pb2_grpc
from pouch_devtools.demo.deployment import Site
from tests.integration.conftest import (
    Deployment,
    assert_safe_message,
    channel_to,
    error_reason,
    issued_identity,
)

TIMEOUT = 10.0


def at(deployment: Deployment) -> Site:
    return deployment.sites["AT"]


def operator_files(site: Site) -> tuple[bytes, bytes]:
    return site.pki.client_cert("operator").read_bytes(), site.pki.client_key(
        "operator"
    ).read_bytes()


def gateway_info(
    gateway: Gateway, site: Site, token: str | None, identity: tuple[bytes, bytes] | None = None
) -> gateway_pb2.GetGatewayInfoResponse:
    chain, key = identity or operator_files(site)
    metadata = (("authorization", f"Bearer {token}"),) if token is not None else ()
    target = f"127.0.0.1:{gateway.local_port}"
    with channel_to(target, trusted_ca=site.pki.ca_cert.read_bytes(), chain=chain, key=key) as ch:
        return gateway_pb2_grpc.GatewayServiceStub(ch).GetGatewayInfo(
            gateway_pb2.GetGatewayInfoRequest(), metadata=metadata, timeout=TIMEOUT
        )


def health(gateway: Gateway, site: Site, chain: bytes | None, key: bytes | None) -> int:
    target = f"127.0.0.1:{gateway.local_port}"
    with channel_to(target, trusted_ca=site.pki.ca_cert.read_bytes(), chain=chain, key=key) as ch:
        answer = health_pb2_grpc.HealthStub(ch).Check(
            health_pb2.HealthCheckRequest(), timeout=TIMEOUT
        )
    return int(answer.status)


def token(
    site: Site,
    *,
    scopes: tuple[str, ...] = ("admin",),
    audience: str | None = None,
    now: float | None = None,
    lifetime_s: int = 300,
    cert: bytes | None = None,
) -> str:
    return mint_token(
        key_path=site.idp.key_path,
        jwks_path=site.idp.jwks_path,
        issuer=site.issuer,
        audience=audience or site.audience,
        subject="operator@at",
        scopes=scopes,
        client_cert_pem=cert or site.pki.client_cert("operator").read_bytes(),
        lifetime_s=lifetime_s,
        now=time.time() if now is None else now,
    )


def refusal(gateway: Gateway, site: Site, bad_token: str | None) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as refused:
        gateway_info(gateway, site, bad_token)
    assert_safe_message(refused.value)
    if bad_token:
        assert bad_token[-16:] not in f"{refused.value.details()}"
    return refused.value


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned_token_like(site: Site, header: dict[str, str], key: bytes | None) -> str:
    """A token with the right claims but a forged header; HMAC-signed with ``key`` if given."""
    genuine = token(site)
    claims = genuine.split(".")[1]
    signing_input = f"{b64(json.dumps(header).encode())}.{claims}"
    signature = b64(hmac.new(key, signing_input.encode(), hashlib.sha256).digest()) if key else ""
    return f"{signing_input}.{signature}"


def test_health_answers_over_mutual_tls(deployment: Deployment, gateway_at: Gateway) -> None:
    chain, key = operator_files(at(deployment))
    assert health(gateway_at, at(deployment), chain, key) == health_pb2.HealthCheckResponse.SERVING


def test_valid_bound_token_with_scope_reaches_gateway_info(
    deployment: Deployment, gateway_at: Gateway
) -> None:
    info = gateway_info(gateway_at, at(deployment), token(at(deployment)))
    assert info.state == "AT"
    assert info.caller_subject == "operator@at"
    assert list(info.caller_scopes) == ["admin"]
    assert sorted(p.state for p in info.partners) == ["BE", "CH"]
    assert info.schema_revision


def test_local_call_without_client_certificate_is_refused(
    deployment: Deployment, gateway_at: Gateway
) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        health(gateway_at, at(deployment), None, None)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


def test_local_caller_cert_from_partner_state_is_refused(
    deployment: Deployment, gateway_at: Gateway
) -> None:
    chain, key = operator_files(deployment.sites["BE"])
    with pytest.raises(grpc.RpcError) as refused:
        health(gateway_at, at(deployment), chain, key)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


def test_expired_client_certificate_is_refused(deployment: Deployment, gateway_at: Gateway) -> None:
    issued = deployment.authority("AT").issue_client_certificate(
        "expired-caller", now=datetime.now(UTC) - timedelta(days=10), validity_days=1
    )
    chain, key = issued_identity(issued)
    with pytest.raises(grpc.RpcError) as refused:
        health(gateway_at, at(deployment), chain, key)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


def test_revoked_client_certificate_is_refused_without_restart(
    deployment: Deployment, gateway_at: Gateway
) -> None:
    site = at(deployment)
    cert_path, key_path = issue_client(site.pki.root, "soon-revoked", now=datetime.now(UTC))
    identity = (cert_path.read_bytes(), key_path.read_bytes())
    bound = token(site, cert=identity[0])
    assert gateway_info(gateway_at, site, bound, identity).state == "AT"

    serial = x509.load_pem_x509_certificate(identity[0]).serial_number
    revoke(site.pki.root, serial, now=datetime.now(UTC))
    with pytest.raises(grpc.RpcError) as refused:
        gateway_info(gateway_at, site, bound, identity)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error_reason(refused.value) == "REVOKED"


def test_call_without_token_is_refused(deployment: Deployment, gateway_at: Gateway) -> None:
    error = refusal(gateway_at, at(deployment), None)
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error_reason(error) == "TOKEN_MISSING"


def test_expired_token_is_refused(deployment: Deployment, gateway_at: Gateway) -> None:
    stale = token(at(deployment), now=time.time() - 3600, lifetime_s=600)
    error = refusal(gateway_at, at(deployment), stale)
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error_reason(error) == "TOKEN_EXPIRED"


def test_token_for_other_audience_is_refused(deployment: Deployment, gateway_at: Gateway) -> None:
    error = refusal(gateway_at, at(deployment), token(at(deployment), audience="pouch:BE"))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error_reason(error) == "TOKEN_AUDIENCE"


def test_token_with_alg_none_is_refused(deployment: Deployment, gateway_at: Gateway) -> None:
    kid = at(deployment).idp.kid
    forged = unsigned_token_like(at(deployment), {"alg": "none", "kid": kid}, None)
    error = refusal(gateway_at, at(deployment), forged)
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error_reason(error) == "TOKEN_ALGORITHM"


def test_token_hmac_signed_with_public_key_is_refused(
    deployment: Deployment, gateway_at: Gateway
) -> None:
    site = at(deployment)
    public_jwks = site.idp.jwks_path.read_bytes()
    forged = unsigned_token_like(site, {"alg": "HS256", "kid": site.idp.kid}, public_jwks)
    error = refusal(gateway_at, site, forged)
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error_reason(error) == "TOKEN_ALGORITHM"


def test_token_without_required_scope_is_permission_denied(
    deployment: Deployment, gateway_at: Gateway
) -> None:
    error = refusal(gateway_at, at(deployment), token(at(deployment), scopes=("civil:submit",)))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error_reason(error) == "SCOPE_MISSING"


def test_token_bound_to_other_certificate_is_refused(
    deployment: Deployment, gateway_at: Gateway
) -> None:
    site = at(deployment)
    other_cert, _ = issue_client(site.pki.root, "another-caller", now=datetime.now(UTC))
    error = refusal(gateway_at, site, token(site, cert=other_cert.read_bytes()))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error_reason(error) == "TOKEN_BINDING"


def test_metrics_endpoint_counts_calls_refusals_and_certificate_expiry(
    deployment: Deployment, gateway_at: Gateway
) -> None:
    site = at(deployment)
    gateway_info(gateway_at, site, token(site))
    refusal(gateway_at, site, None)
    with urllib.request.urlopen(
        f"http://127.0.0.1:{gateway_at.metrics_port}/metrics", timeout=TIMEOUT
    ) as response:
        text = response.read().decode()
    assert (
        'pouch_requests_total{code="OK",listener="local",method="GetGatewayInfo",'
        'service="pouch.v1.GatewayService"}' in text
    )
    assert 'pouch_authentication_refusals_total{listener="local",reason="TOKEN_MISSING"}' in text
    expiry = [
        line
        for line in text.splitlines()
        if line.startswith('pouch_certificate_expiry_seconds{role="gateway_tls",state="AT"}')
    ]
    assert len(expiry) == 1 and float(expiry[0].split()[-1]) > 86400


def test_reflection_lists_the_local_services(deployment: Deployment, gateway_at: Gateway) -> None:
    site = at(deployment)
    chain, key = operator_files(site)
    target = f"127.0.0.1:{gateway_at.local_port}"
    with channel_to(target, trusted_ca=site.pki.ca_cert.read_bytes(), chain=chain, key=key) as ch:
        answers = reflection_pb2_grpc.ServerReflectionStub(ch).ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=TIMEOUT
        )
        names = {s.name for a in answers for s in a.list_services_response.service}
    assert {"pouch.v1.GatewayService", "grpc.health.v1.Health"} <= names


def test_gateway_certificate_cannot_act_as_a_local_caller(
    deployment: Deployment, gateway_at: Gateway
) -> None:
    site = at(deployment)
    identity = (site.pki.gateway_cert.read_bytes(), site.pki.gateway_key.read_bytes())
    with pytest.raises(grpc.RpcError) as refused:
        gateway_info(gateway_at, site, token(site, cert=identity[0]), identity)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error_reason(refused.value) == "NOT_A_CLIENT_CERTIFICATE"
