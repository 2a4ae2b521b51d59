"""A registry's server certificate (``pouch pki issue-server``) is for serving the
gateway, never for calling it: chained to the state CA as it is, the gateway's local
API refuses it as a caller, since it is valid for TLS servers only."""

from __future__ import annotations

from datetime import UTC, datetime

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.pki.layout import issue_server
from gateway.server.app import Gateway
from tests.integration.conftest import Deployment, channel_to

TIMEOUT = 10.0


def _health(gateway: Gateway, deployment: Deployment, chain: bytes, key: bytes) -> int:
    ca = deployment.sites["AT"].pki.ca_cert.read_bytes()
    target = f"127.0.0.1:{gateway.local_port}"
    with channel_to(target, trusted_ca=ca, chain=chain, key=key) as channel:
        answer = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=TIMEOUT
        )
    return int(answer.status)


def test_registry_server_certificate_cannot_call_the_local_api(
    deployment: Deployment, gateway_at: Gateway
) -> None:
    pki = deployment.sites["AT"].pki
    operator = (pki.client_cert("operator").read_bytes(), pki.client_key("operator").read_bytes())
    assert _health(gateway_at, deployment, *operator) == health_pb2.HealthCheckResponse.SERVING

    cert, key = issue_server(
        pki.root,
        "registry-as-caller",
        dns_names=["localhost"],
        ip_addresses=["127.0.0.1"],
        now=datetime.now(UTC),
    )
    with pytest.raises(grpc.RpcError) as refused:
        _health(gateway_at, deployment, cert.read_bytes(), key.read_bytes())
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
