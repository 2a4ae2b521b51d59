"""``pouch serve`` as an operator runs it: a real process, health over mTLS, SIGTERM."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pouch_devtools.demo.deployment import GatewayProcess, prepare_sites
from tests.integration.conftest import channel_to


def test_pouch_serve_answers_health_over_mtls_and_stops_cleanly_on_sigterm(
    tmp_path: Path,
) -> None:
    sites = prepare_sites(tmp_path, ["AT", "BE"], now=datetime.now(UTC))
    site = sites["AT"]
    process = GatewayProcess(site)
    process.start()
    try:
        with channel_to(
            site.local_target,
            trusted_ca=site.pki.ca_cert.read_bytes(),
            chain=site.pki.client_cert("operator").read_bytes(),
            key=site.pki.client_key("operator").read_bytes(),
        ) as channel:
            answer = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=10
            )
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        code = process.terminate()
    assert code == 0
    log = process.log_path.read_text()
    assert "pouch gateway AT stopping" in log
    assert "pouch gateway AT stopped" in log
    assert "Traceback" not in log
    assert (site.root / "data" / "pouch.db").exists()


def test_pouch_serve_refuses_unknown_config_key_naming_it(tmp_path: Path) -> None:
    sites = prepare_sites(tmp_path, ["AT"], now=datetime.now(UTC))
    config = sites["AT"].config_path
    config.write_text(config.read_text().replace("[pki]", 'colour = "blue"\n\n[pki]'))
    process = GatewayProcess(sites["AT"])
    try:
        process.start()
    except RuntimeError:
        pass
    else:
        process.terminate()
        raise AssertionError("gateway started with an unknown configuration key")
    log = process.log_path.read_text()
    assert "gateway.colour: unknown key" in log
    assert "Traceback" not in log


def test_health_is_not_served_to_a_caller_without_certificate(tmp_path: Path) -> None:
    sites = prepare_sites(tmp_path, ["AT"], now=datetime.now(UTC))
    site = sites["AT"]
    process = GatewayProcess(site)
    process.start()
    try:
        with channel_to(
            site.local_target, trusted_ca=site.pki.ca_cert.read_bytes(), chain=None, key=None
        ) as channel:
            try:
                health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=10
                )
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.UNAVAILABLE
            else:
                raise AssertionError("health answered a caller without a certificate")
    finally:
        assert process.terminate() == 0
