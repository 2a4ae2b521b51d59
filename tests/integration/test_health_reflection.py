"""Ecosystem tools reach the local API: health ``List`` and reflection v1 over mutual TLS.

A gateway with an agreement runs here (every local service registered); callers
present the operator's client certificate, which is all health and reflection need.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.server.app import Gateway
from pouch_devtools.demo.deployment import Site, prepare_sites
from tests.integration.conftest import channel_to
from tests.integration.exchange_fixtures import FAST_DELIVERY, running_gateways

TIMEOUT = 10.0
BUF = Path(sys.executable).parent / "buf"
LOCAL_SERVICES = (
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
    "pouch.v1.AgreementService",
    "pouch.v1.AuditService",
    "pouch.v1.CivilRecordService",
    "pouch.v1.GatewayService",
    "pouch.v1.IdentityService",
    "pouch.v1.RepresentationService",
)


@pytest.fixture(scope="module")
def at(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Site, Gateway]]:
    """AT's gateway, shared by the module's tests (made once: 1.8 s to set up, plus its
    stop, for each of 5 tests if it were per test).

    Sharing is safe: the tests only ask for health, reflection and method lists, which
    no call changes, and the refused call leaves nothing behind.
    """
    root = tmp_path_factory.mktemp("conformance")
    sites = prepare_sites(
        root, ["AT", "BE"], now=datetime.now(UTC), agreements=[("AT", "BE")], delivery=FAST_DELIVERY
    )
    with running_gateways(sites, ["AT"], spool_root=root / "spool") as running:
        yield sites["AT"], running.gateway("AT")


def operator_channel(site: Site) -> grpc.Channel:
    return channel_to(
        site.local_target,
        trusted_ca=site.pki.ca_cert.read_bytes(),
        chain=site.pki.client_cert("operator").read_bytes(),
        key=site.pki.client_key("operator").read_bytes(),
    )


def buf_curl(site: Site, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            str(BUF),
            "curl",
            "--protocol",
            "grpc",
            "--cacert",
            str(site.pki.ca_cert),
            "--cert",
            str(site.pki.client_cert("operator")),
            "--key",
            str(site.pki.client_key("operator")),
            *args,
            f"https://{site.local_target}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_health_list_names_every_service_with_its_status_not_internal(
    at: tuple[Site, Gateway],
) -> None:
    site, _ = at
    with operator_channel(site) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        checked = stub.Check(health_pb2.HealthCheckRequest(), timeout=TIMEOUT)
        listed = stub.List(health_pb2.HealthListRequest(), timeout=TIMEOUT)
    assert checked.status == health_pb2.HealthCheckResponse.SERVING
    assert set(listed.statuses) == {"", *LOCAL_SERVICES}
    assert {s.status for s in listed.statuses.values()} == {health_pb2.HealthCheckResponse.SERVING}


def test_health_check_answers_for_each_served_service_not_only_the_server(
    at: tuple[Site, Gateway],
) -> None:
    site, _ = at
    with operator_channel(site) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in LOCAL_SERVICES:
            answer = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=TIMEOUT)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING, service


def test_buf_curl_lists_local_services_over_reflection_v1_with_mutual_tls(
    at: tuple[Site, Gateway],
) -> None:
    site, _ = at
    v1alpha = buf_curl(site, "--reflect-protocol", "grpc-v1alpha", "--list-services")
    assert v1alpha.returncode == 0, v1alpha.stderr
    v1 = buf_curl(site, "--reflect-protocol", "grpc-v1", "--list-services")
    assert v1.returncode == 0, v1.stderr
    assert sorted(v1.stdout.split()) == sorted(LOCAL_SERVICES)


def test_buf_curl_resolves_every_method_over_reflection_v1(at: tuple[Site, Gateway]) -> None:
    site, _ = at
    listed = buf_curl(site, "--reflect-protocol", "grpc-v1", "--list-methods")
    assert listed.returncode == 0, listed.stderr
    methods = set(listed.stdout.split())
    assert "pouch.v1.CivilRecordService/SubmitUpdate" in methods
    assert "grpc.health.v1.Health/List" in methods
    assert "grpc.reflection.v1.ServerReflection/ServerReflectionInfo" in methods


def test_buf_curl_without_client_certificate_is_refused(at: tuple[Site, Gateway]) -> None:
    site, _ = at
    accepted = buf_curl(site, "--reflect-protocol", "grpc-v1", "--list-services")
    assert accepted.returncode == 0, accepted.stderr
    refused = subprocess.run(
        [
            str(BUF),
            "curl",
            "--protocol",
            "grpc",
            "--cacert",
            str(site.pki.ca_cert),
            "--reflect-protocol",
            "grpc-v1",
            "--list-services",
            f"https://{site.local_target}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode != 0
    assert "pouch.v1" not in refused.stdout
