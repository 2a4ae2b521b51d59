"""A running gateway reloads its files through ``AgreementService.Reload`` (as SIGHUP
does, see test_reload_signal.py): new files in force for new calls and handshakes, a
stream in flight not dropped, a broken file refused with the old one kept in force.

AT and BE run in this process over real TLS with spool registries; each test has its
own deployment, since it changes files on disk.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest

from gateway.connect import bearer
from pouch.v1 import agreement_pb2, civil_pb2, common_pb2, gateway_pb2, gateway_pb2_grpc
from pouch_devtools.demo.deployment import Site, prepare_sites
from tests.integration.conftest import channel_to, error_reason
from tests.integration.exchange_fixtures import (
    FAST_DELIVERY,
    LocalCaller,
    RunningGateways,
    death_update,
    inbox_entry,
    running_gateways,
    submission,
    unique_reference,
)
from tests.integration.reload_changes import (
    add_agreement,
    mismatched_tls_key,
    publish_second_idp_key,
    replace_tls_certificate,
    revoke_new_client,
    served_certificate_serial,
)

CIVIL = "at-be-civil"
SECOND = "at-be-second"
STREAMED = 60


@pytest.fixture
def exchange(tmp_path: Path) -> Iterator[RunningGateways]:
    sites = prepare_sites(
        tmp_path,
        ["AT", "BE"],
        now=datetime.now(UTC),
        agreements=[("AT", "BE")],
        delivery=FAST_DELIVERY,
    )
    with running_gateways(sites, ["AT", "BE"], spool_root=tmp_path / "spool") as running:
        yield running


def reload(
    caller: LocalCaller, metadata: tuple[tuple[str, str], ...] | None = None
) -> dict[str, list[agreement_pb2.ReloadItem]]:
    answer = caller.agreements.Reload(
        agreement_pb2.ReloadRequest(), metadata=metadata or caller.metadata, timeout=30
    )
    by_kind: dict[str, list[agreement_pb2.ReloadItem]] = {}
    for item in answer.items:
        by_kind.setdefault(item.kind, []).append(item)
    return by_kind


def results(items: list[agreement_pb2.ReloadItem]) -> set[str]:
    return {agreement_pb2.ReloadResult.Name(i.result) for i in items}


class SlowStream(threading.Thread):
    """Streams ``count`` updates to AT through one SubmitUpdates call, 20 ms apart."""

    def __init__(self, caller: LocalCaller, count: int) -> None:
        super().__init__(daemon=True)
        self.caller = caller
        self.references = [unique_reference("reload") for _ in range(count)]
        self.answers: list[civil_pb2.SubmitUpdatesResponse] = []
        self.error: BaseException | None = None

    def _requests(self) -> Iterator[civil_pb2.SubmitUpdatesRequest]:
        for reference in self.references:
            request = submission(
                death_update(datetime.now(UTC).date()),
                agreement_id=CIVIL,
                recipient_state="BE",
                reference=reference,
            )
            yield civil_pb2.SubmitUpdatesRequest(update=request)
            time.sleep(0.02)

    def run(self) -> None:
        try:
            call = self.caller.civil.SubmitUpdates(
                self._requests(), metadata=self.caller.metadata, timeout=60
            )
            self.answers.extend(call)
        except BaseException as e:  # reported by the test
            self.error = e


def test_reload_takes_new_agreement_crl_jwks_and_tls_certificate_while_a_stream_flows(
    exchange: RunningGateways, tmp_path: Path
) -> None:
    at, be = exchange.sites["AT"], exchange.sites["BE"]
    with (
        LocalCaller(at, ["civil:submit"]) as clerk,
        LocalCaller(at, ["admin"]) as admin,
        LocalCaller(be, ["admin"]) as be_admin,
    ):
        old_serial = served_certificate_serial(at, at.local_target)
        stream = SlowStream(clerk, STREAMED)
        stream.start()
        time.sleep(0.3)  # the stream is under way
        add_agreement(SECOND, at, be)
        revoked = revoke_new_client(at, "soon-revoked")
        second_key = publish_second_idp_key(at, tmp_path)
        new_serial = replace_tls_certificate(at)

        items = reload(admin)
        reload(be_admin)  # BE takes the new agreement too

        assert results(items["agreements"]) == {"RELOAD_RESULT_RELOADED"}
        assert items["agreements"][0].changed == [SECOND]
        own_crl = [i for i in items["crl"] if i.file == str(at.pki.crl)]
        assert own_crl and results(own_crl) == {"RELOAD_RESULT_RELOADED"}
        assert results(items["jwks"]) == {"RELOAD_RESULT_RELOADED"}
        assert results(items["tls_certificate"]) == {"RELOAD_RESULT_RELOADED"}
        assert not any(i.reason_code for kind in items.values() for i in kind)
        # The evidence of what came into force, as at start, and the reload counted.
        gateway = exchange.gateway("AT")
        assert gateway.exchanges is not None
        audit = gateway.exchanges.audit_log
        assert audit.entries(event_kind="agreement_loaded", agreement_id=SECOND)
        tls_changes = audit.entries(event_kind="key_changed", limit=1000)
        assert [e.purpose for e in tls_changes].count("gateway_tls") == 2  # start, reload
        reloads = gateway.metrics.registry.get_sample_value(
            "pouch_reloads_total", {"kind": "tls_certificate", "result": "reloaded"}
        )
        assert reloads == 1

        stream.join(timeout=60)
        assert stream.error is None, stream.error
        assert [a.client_reference for a in stream.answers] == stream.references
        message_ids = [a.message_id for a in stream.answers]
        assert all(message_ids) and len(set(message_ids)) == STREAMED

        # New handshakes get the new certificate; the admin's open channel still works.
        assert old_serial != new_serial
        assert served_certificate_serial(at, at.local_target) == new_serial
        assert served_certificate_serial(at, at.peer_target) == new_serial
        assert admin.summary(SECOND).status == agreement_pb2.AGREEMENT_STATUS_ACTIVE

        # A token from the new identity-provider key is accepted.
        info = admin.gateway.GetGatewayInfo(
            gateway_pb2.GetGatewayInfoRequest(),
            metadata=bearer(second_key.token(["admin"])),
            timeout=10,
        )
        assert info.state == "AT"
        assert info.tls_certificate_not_after.seconds > 0

        # The revoked client is refused.
        chain, key = revoked
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

        # Every streamed update reached BE's registry once, and the new agreement carries
        # calls at once.
        for message_id in message_ids:
            assert clerk.wait_until_final(message_id).state == common_pb2.DELIVERY_STATE_APPLIED
        be_gateway = exchange.gateway("BE")
        assert all(inbox_entry(be_gateway, m) is not None for m in message_ids)
        assert all(exchange.spool_text("BE", m) is not None for m in message_ids)
        clerk.submit(
            submission(
                death_update(datetime.now(UTC).date()), agreement_id=SECOND, recipient_state="BE"
            )
        )


def test_broken_files_on_reload_are_refused_and_the_old_ones_stay_in_force(
    exchange: RunningGateways, caplog: pytest.LogCaptureFixture
) -> None:
    at = exchange.sites["AT"]
    with LocalCaller(at, ["civil:submit"]) as clerk, LocalCaller(at, ["admin"]) as admin:
        serial = served_certificate_serial(at, at.local_target)
        before = reload(admin)  # nothing changed: nothing refused
        assert not any(i.reason_code for kind in before.values() for i in kind)
        # Minted while the JWKS is whole: the identity provider reads it to name its key.
        admin_token, clerk_token = admin.metadata, clerk.metadata

        broken_agreement = at.agreements_dir / "at-be-broken.yaml"
        broken_agreement.write_text("id: at-be-broken\nversion: [\n")
        at.idp.jwks_path.write_text("{not a JWKS")
        at.pki.crl.write_text("-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n")
        mismatched_tls_key(at)

        with caplog.at_level(logging.WARNING, logger="gateway.server.reload"):
            items = reload(admin, admin_token)

        refused: dict[str, set[tuple[str, str]]] = {}
        for kind, found in items.items():
            for i in found:
                if i.result == agreement_pb2.RELOAD_RESULT_REFUSED:
                    refused.setdefault(kind, set()).add((i.file, i.reason_code))
        assert refused == {
            "agreements": {(str(broken_agreement), "AGREEMENT_FILE_INVALID")},
            "crl": {(str(at.pki.crl), "CRL_INVALID")},
            "jwks": {(str(at.idp.jwks_path), "JWKS_INVALID")},
            "tls_certificate": {(str(at.pki.gateway_key), "TLS_IDENTITY_INVALID")},
        }
        gateway = exchange.gateway("AT")
        assert gateway.exchanges is not None
        refusals = gateway.exchanges.audit_log.entries(event_kind="admin_action", limit=1000)
        assert {e.reason_code for e in refusals} >= {
            "AGREEMENT_FILE_INVALID",
            "CRL_INVALID",
            "JWKS_INVALID",
            "TLS_IDENTITY_INVALID",
        }
        refused_count = gateway.metrics.registry.get_sample_value(
            "pouch_reloads_total", {"kind": "jwks", "result": "refused"}
        )
        assert refused_count == 1
        logged = [r.getMessage() for r in caplog.records if r.name == "gateway.server.reload"]
        assert len(logged) == 4
        assert any(str(broken_agreement) in line and "stays in force" in line for line in logged)
        assert any(str(at.pki.gateway_key) in line and "does not match" in line for line in logged)

        # The old agreement set, keys, CRL and certificate are all still in force.
        listing = admin.agreements.ListAgreements(
            agreement_pb2.ListAgreementsRequest(), metadata=admin_token, timeout=10
        )
        assert {a.ref.id: a.status for a in listing.agreements} == {
            CIVIL: agreement_pb2.AGREEMENT_STATUS_ACTIVE
        }
        request = submission(
            death_update(datetime.now(UTC).date()), agreement_id=CIVIL, recipient_state="BE"
        )
        message_id = clerk.civil.SubmitUpdate(request, metadata=clerk_token, timeout=10).message_id
        assert inbox_eventually(exchange, message_id)
        assert served_certificate_serial(at, at.local_target) == serial


def inbox_eventually(exchange: RunningGateways, message_id: str) -> bool:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if inbox_entry(exchange.gateway("BE"), message_id) is not None:
            return True
        time.sleep(0.05)
    return False


def test_reload_is_refused_without_the_admin_scope(exchange: RunningGateways) -> None:
    at = exchange.sites["AT"]
    with LocalCaller(at, ["admin"]) as admin:
        assert reload(admin)["agreements"]
    with LocalCaller(at, ["civil:submit"]) as clerk, pytest.raises(grpc.RpcError) as refused:
        clerk.agreements.Reload(agreement_pb2.ReloadRequest(), metadata=clerk.metadata, timeout=10)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED


def reload_from_cli(site: Site, token_file: Path) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable, "-m", "gateway", "agreement", "reload",
        "--gateway", site.local_target,
        "--ca", str(site.pki.ca_cert),
        "--cert", str(site.pki.client_cert("operator")),
        "--key", str(site.pki.client_key("operator")),
        "--token-file", str(token_file),
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def test_pouch_agreement_reload_says_what_came_into_force_and_fails_on_a_refusal(
    exchange: RunningGateways, tmp_path: Path
) -> None:
    at, be = exchange.sites["AT"], exchange.sites["BE"]
    token_file = tmp_path / "admin.token"
    token_file.write_text(at.token(["admin"], now=time.time()))
    add_agreement(SECOND, at, be)
    result = reload_from_cli(at, token_file)
    assert result.returncode == 0, result.stderr
    assert f"agreements -: reloaded ({SECOND})" in result.stdout.splitlines()
    assert f"jwks {at.idp.jwks_path}: unchanged" in result.stdout.splitlines()

    at.idp.jwks_path.write_text("{not a JWKS")
    result = reload_from_cli(at, token_file)
    assert result.returncode == 1
    refused = [line for line in result.stdout.splitlines() if line.startswith("jwks ")]
    assert refused == [
        f"jwks {at.idp.jwks_path}: refused: JWKS_INVALID: {at.idp.jwks_path} is not valid JSON"
    ]
    assert "Traceback" not in result.stderr


def test_a_changed_partner_bundle_is_reported_as_needing_a_restart(
    exchange: RunningGateways,
) -> None:
    at = exchange.sites["AT"]
    bundle = at.root / "partners" / "BE" / "bundle.json"
    with LocalCaller(at, ["admin", "civil:submit"]) as admin:
        items = reload(admin)
        assert results(items["partner_bundle"]) == {"RELOAD_RESULT_UNCHANGED"}
        assert results(items["signing_key"]) == {"RELOAD_RESULT_UNCHANGED"}

        bundle.write_bytes(bundle.read_bytes() + b"\n")
        # The same signing certificate written again is no new key.
        at.pki.signing_cert.write_bytes(at.pki.signing_cert.read_bytes() + b"\n")
        items = reload(admin)
        refused = {
            (i.kind, i.file, i.reason_code)
            for found in items.values()
            for i in found
            if i.result == agreement_pb2.RELOAD_RESULT_REFUSED
        }
        assert refused == {("partner_bundle", str(bundle), "RESTART_REQUIRED")}
        assert results(items["signing_key"]) == {"RELOAD_RESULT_UNCHANGED"}
        # What was read at start stays in force: the agreement still carries calls.
        message_id = admin.submit(
            submission(
                death_update(datetime.now(UTC).date()), agreement_id=CIVIL, recipient_state="BE"
            )
        )
        assert inbox_eventually(exchange, message_id)
