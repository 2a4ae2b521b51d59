"""SIGHUP reloads a real ``pouch serve`` process while a client streams updates to it.

AT and BE run as ``pouch serve`` processes with their reference registries. While AT
takes a stream of civil-record updates, its operator adds an agreement, revokes a
client certificate, publishes a second identity-provider key and puts a new TLS
certificate in place, then sends SIGHUP: the gateway keeps running, says what it
reloaded, serves the new certificate to new connections, and every streamed update is
applied by BE's registry exactly once. A broken file sent with a second SIGHUP is
refused and the gateway keeps serving.
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest

from gateway.connect import bearer
from pouch.v1 import agreement_pb2, agreement_pb2_grpc, gateway_pb2, gateway_pb2_grpc
from pouch_devtools.demo.deployment import GatewayProcess, RegistryProcess, Site, prepare_sites
from tests.integration.civil_builders import (
    BulkSubmission,
    applied_in_registry,
    gateway_database,
    query_sqlite,
    update_requests,
    wait_until,
)
from tests.integration.conftest import channel_to, error_reason
from tests.integration.reload_changes import (
    SecondIdpKey,
    add_agreement,
    publish_second_idp_key,
    replace_tls_certificate,
    revoke_new_client,
    served_certificate_serial,
)

COUNT = 300
DELIVERY = {
    "backoff_initial_seconds": 0.1,
    "backoff_max_seconds": 1.0,
    "poll_interval_seconds": 0.05,
}
SECOND = "at-be-second"


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[dict[str, Site], dict[str, GatewayProcess]]]:
    sites = prepare_sites(
        tmp_path, ["AT", "BE"], now=datetime.now(UTC), agreements=[("AT", "BE")], delivery=DELIVERY
    )
    registries = [RegistryProcess(site) for site in sites.values()]
    gateways = {state: GatewayProcess(site) for state, site in sites.items()}
    try:
        for registry in registries:
            registry.start()
        for process in gateways.values():
            process.start()
        yield sites, gateways
    finally:
        for process in gateways.values():
            process.terminate()
        for registry in registries:
            registry.stop()


def _log_lines(process: GatewayProcess, marker: str) -> list[str]:
    return [line for line in process.log_path.read_text().splitlines() if marker in line]


def send_sighup_and_wait(process: GatewayProcess, reloads_before: int) -> str:
    """SIGHUP, then the gateway's line saying what it reloaded."""
    assert process.process is not None
    process.process.send_signal(signal.SIGHUP)
    marker = f"pouch gateway {process.site.state} reloaded:"
    wait_until(
        lambda: len(_log_lines(process, marker)) > reloads_before,
        timeout_s=30,
        describe=lambda: process.log_path.read_text()[-2000:],
        interval_s=0.05,
    )
    return _log_lines(process, marker)[-1]


class ReloadDuringStream(threading.Thread):
    """Once the stream is under way, changes AT's files and sends it SIGHUP."""

    def __init__(
        self, site: Site, process: GatewayProcess, submission: BulkSubmission, workdir: Path
    ) -> None:
        super().__init__(daemon=True)
        self.site = site
        self.process = process
        self.submission = submission
        self.workdir = workdir
        self.line = ""
        self.acknowledged_at_reload = 0
        self.error: BaseException | None = None
        self.revoked: tuple[bytes, bytes] | None = None
        self.new_serial = 0
        self.second_key: SecondIdpKey | None = None

    def run(self) -> None:
        try:
            deadline = time.monotonic() + 60
            while self.submission.acknowledged < 60 and time.monotonic() < deadline:
                time.sleep(0.01)
            self.revoked = revoke_new_client(self.site, "soon-revoked")
            self.second_key = publish_second_idp_key(self.site, self.workdir)
            self.new_serial = replace_tls_certificate(self.site)
            self.acknowledged_at_reload = self.submission.acknowledged
            self.line = send_sighup_and_wait(self.process, 0)
        except BaseException as e:  # reported by the test
            self.error = e


def test_sighup_reloads_a_running_pouch_serve_while_updates_stream_and_each_is_applied_once(
    running: tuple[dict[str, Site], dict[str, GatewayProcess]], tmp_path: Path
) -> None:
    sites, gateways = running
    at, be = sites["AT"], sites["BE"]
    old_serial = served_certificate_serial(at, at.local_target)
    add_agreement(SECOND, at, be)  # in both directories; each gateway takes it on SIGHUP
    send_sighup_and_wait(gateways["BE"], 0)

    submission = BulkSubmission(at, update_requests("sighup", COUNT), stream_size=COUNT)
    reloading = ReloadDuringStream(at, gateways["AT"], submission, tmp_path)
    reloading.start()
    message_ids = asyncio.run(submission.run())
    reloading.join(timeout=60)
    assert reloading.error is None, reloading.error
    print(f"reload after {reloading.acknowledged_at_reload} of {COUNT} acknowledged")
    assert 0 < reloading.acknowledged_at_reload < COUNT, "the reload did not fall mid-stream"
    assert submission.resumptions == 0, "the stream broke"
    assert reloading.line.endswith(
        "reloaded: agreements, crl, jwks, tls_certificate; refused: nothing"
    ), reloading.line

    # Every update applied by BE's registry exactly once.
    assert len(set(message_ids.values())) == COUNT
    wait_until(
        lambda: len(applied_in_registry(be)) == COUNT,
        timeout_s=120,
        describe=lambda: f"{len(applied_in_registry(be))} of {COUNT} applied",
    )
    assert sorted(applied_in_registry(be)) == sorted(message_ids.values())
    (received,) = query_sqlite(gateway_database(be), "SELECT count(*) FROM inbox")[0]
    assert received == COUNT

    # The new certificate on new connections, the new agreement in force, the new
    # identity-provider key accepted, the revoked client refused.
    assert served_certificate_serial(at, at.local_target) == reloading.new_serial != old_serial
    with channel_to(
        at.local_target,
        trusted_ca=at.pki.ca_cert.read_bytes(),
        chain=at.pki.client_cert("operator").read_bytes(),
        key=at.pki.client_key("operator").read_bytes(),
    ) as channel:
        assert reloading.second_key is not None
        token = reloading.second_key.token(["admin"])
        listing = agreement_pb2_grpc.AgreementServiceStub(channel).ListAgreements(
            agreement_pb2.ListAgreementsRequest(), metadata=bearer(token), timeout=10
        )
    assert {a.ref.id: a.status for a in listing.agreements}[SECOND] == (
        agreement_pb2.AGREEMENT_STATUS_ACTIVE
    )
    assert reloading.revoked is not None
    chain, key = reloading.revoked
    with (
        channel_to(
            at.local_target, trusted_ca=at.pki.ca_cert.read_bytes(), chain=chain, key=key
        ) as channel,
        pytest.raises(grpc.RpcError) as refused,
    ):
        gateway_pb2_grpc.GatewayServiceStub(channel).GetGatewayInfo(
            gateway_pb2.GetGatewayInfoRequest(), timeout=10
        )
    assert error_reason(refused.value) == "REVOKED"

    # A broken agreement file on the next SIGHUP is refused; the gateway keeps serving.
    (at.agreements_dir / "broken.yaml").write_text("id: broken\nversion: [\n")
    line = send_sighup_and_wait(gateways["AT"], 1)
    assert line.endswith(f"refused: agreements {at.agreements_dir / 'broken.yaml'}"), line
    assert gateways["AT"].process is not None and gateways["AT"].process.poll() is None
    log = gateways["AT"].log_path.read_text()
    assert "reload refused agreements" in log and "what was in force stays in force" in log
    assert "Traceback" not in log


def test_sighup_reloads_a_gateway_without_agreements_and_it_keeps_serving(
    tmp_path: Path,
) -> None:
    sites = prepare_sites(tmp_path, ["AT", "BE"], now=datetime.now(UTC))
    at = sites["AT"]
    process = GatewayProcess(at)
    process.start()
    try:
        line = send_sighup_and_wait(process, 0)
        assert line.endswith("reloaded: nothing; refused: nothing"), line
        new_serial = replace_tls_certificate(at)
        line = send_sighup_and_wait(process, 1)
        assert line.endswith("reloaded: tls_certificate; refused: nothing"), line
        assert served_certificate_serial(at, at.local_target) == new_serial
        assert process.process is not None and process.process.poll() is None
    finally:
        assert process.terminate() == 0
    assert "Traceback" not in process.log_path.read_text()
