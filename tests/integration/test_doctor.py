"""``pouch doctor`` on real files and real gateways on loopback.

One two-state deployment (AT and BE, one agreement, each with its reference registry
behind mutual TLS) runs for the module: the clean run, ``--json`` and ``--target`` ask
it as it is. Each fault is then made on a copy of the one file or setting it concerns
(an expired certificate, a stale CRL, a wrong pin, a pending migration, a partner's
endpoint where nothing listens) or with an injected clock (skew), so the running
deployment stays clean; the hashing-key mismatch, which the partner records for good,
gets a deployment of its own. Every fault test first shows the same row passing.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from gateway.config import Settings, load_settings
from gateway.pki.authority import StateAuthority
from gateway.pki.crl import build_crl, crl_pem
from gateway.pki.keys import certificate_pem, load_certificate, write_private_key
from gateway.server.app import Gateway
from gateway.server.doctor.findings import Diagnosis, Finding, Status
from gateway.server.doctor.pki_checks import check_expiry
from gateway.server.doctor.run import diagnose_files
from gateway.store.migrate import head_revision
from pouch.v1 import common_pb2
from pouch_devtools.demo.deployment import (
    RegistryProcess,
    Site,
    agreement_id_for,
    free_port,
    prepare_sites,
)
from tests.integration.conftest import GatewayThread
from tests.integration.exchange_fixtures import LocalCaller, death_update, submission

AGREEMENT = agreement_id_for("AT", "BE")


@dataclass(frozen=True)
class Running:
    sites: dict[str, Site]
    gateways: dict[str, Gateway]

    @property
    def at(self) -> Site:
        return self.sites["AT"]

    def settings(self) -> Settings:
        return load_settings(self.at.config_path)


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """AT and BE with their agreement and registries, both gateways serving."""
    root = tmp_path_factory.mktemp("doctor")
    sites = prepare_sites(root, ["AT", "BE"], now=datetime.now(UTC), agreements=[("AT", "BE")])
    registries = [RegistryProcess(site) for site in sites.values()]
    try:
        for registry in registries:
            registry.start()
        with (
            GatewayThread(Gateway(load_settings(sites["AT"].config_path))) as at,
            GatewayThread(Gateway(load_settings(sites["BE"].config_path))) as be,
        ):
            yield Running(sites, {"AT": at, "BE": be})
    finally:
        for registry in registries:
            registry.stop()


def pouch(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def diagnose(settings: Settings, clock: Callable[[], datetime] | None = None) -> Diagnosis:
    if clock is None:
        return asyncio.run(diagnose_files(settings))
    return asyncio.run(diagnose_files(settings, clock=clock))


def row(diagnosis: Diagnosis, check: str) -> Finding:
    found = [f for f in diagnosis.findings if f.check == check]
    assert len(found) == 1, f"{check!r} in {[f.check for f in diagnosis.findings]}"
    return found[0]


def with_partner(settings: Settings, **update: object) -> Settings:
    (partner,) = settings.partners
    return settings.model_copy(update={"partners": (partner.model_copy(update=update),)})


# -- a clean deployment ------------------------------------------------------------


def test_clean_two_state_deployment_passes_with_exit_code_0(running: Running) -> None:
    done = pouch("doctor", "--config", str(running.at.config_path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert " 0 FAIL" in done.stdout
    for check in ("state PKI", "crl BE", "database", f"agreement {AGREEMENT} v1 with BE"):
        assert check in done.stdout


def test_json_answer_has_one_object_per_check_for_monitoring(running: Running) -> None:
    done = pouch("doctor", "--config", str(running.at.config_path), "--json")
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert set(answer) == {"status", "counts", "findings", "partners"}
    assert answer["status"] in ("OK", "WARN")
    assert answer["counts"]["FAIL"] == 0
    assert answer["counts"]["OK"] + answer["counts"]["WARN"] == len(answer["findings"])
    for finding in answer["findings"]:
        assert set(finding) == {"status", "check", "detail", "remedy"}
        assert finding["status"] in ("OK", "WARN", "FAIL")
    checks = {f["check"]: f for f in answer["findings"]}
    assert checks["partner BE"]["status"] == "OK"
    assert checks["listener local API"]["status"] == "OK"
    assert checks["listener peer API"]["status"] == "OK"
    assert checks["registry (grpc)"]["status"] == "OK"
    assert "TLSv1.3" in checks["tls BE"]["detail"]
    assert checks["key exchange BE"]["status"] == "OK"
    assert checks["key exchange BE"]["detail"].startswith("X25519MLKEM768: post-quantum hybrid")
    assert checks["certificate BE gateway_tls"]["detail"].startswith("valid ")
    assert answer["partners"] == []  # last contact is the running gateway's to tell


def test_target_asks_the_running_gateway_and_shows_partner_contact(
    running: Running, tmp_path: Path
) -> None:
    at = running.at
    token_file = tmp_path / "admin.token"
    token_file.write_text(at.token(["admin"], now=time.time()))
    done = pouch(
        "doctor",
        "--target",
        at.local_target,
        "--ca",
        str(at.pki.ca_cert),
        "--cert",
        str(at.pki.client_cert("operator")),
        "--key",
        str(at.pki.client_key("operator")),
        "--token-file",
        str(token_file),
        "--json",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    answer = json.loads(done.stdout)
    checks = {f["check"]: f for f in answer["findings"]}
    assert checks["partner BE"]["status"] == "OK"
    assert checks[f"agreement {AGREEMENT} v1 with BE"]["status"] == "OK"
    (be,) = answer["partners"]
    assert be["state"] == "BE" and be["reachable"] is True
    assert datetime.fromisoformat(be["last_contact"]) > datetime.now(UTC) - timedelta(minutes=1)
    scraped = generate_latest(running.gateways["AT"].metrics.registry).decode()
    assert 'pouch_partner_reachable{partner="BE"} 1.0' in scraped
    assert 'pouch_partner_last_contact_seconds{partner="BE"}' in scraped


def test_target_without_the_admin_scope_is_refused(running: Running, tmp_path: Path) -> None:
    at = running.at
    token_file = tmp_path / "civil.token"
    token_file.write_text(at.token(["civil:submit"], now=time.time()))
    done = pouch(
        "doctor",
        "--target",
        at.local_target,
        "--ca",
        str(at.pki.ca_cert),
        "--cert",
        str(at.pki.client_cert("operator")),
        "--key",
        str(at.pki.client_key("operator")),
        "--token-file",
        str(token_file),
    )
    assert done.returncode == 1
    assert "PERMISSION_DENIED" in done.stderr


# -- one fault each ----------------------------------------------------------------


def test_expired_certificate_is_a_failure_with_its_dates(running: Running, tmp_path: Path) -> None:
    settings = running.settings()
    assert row(diagnose(settings), "certificate gateway_tls").status is Status.OK
    pki = tmp_path / "pki"
    shutil.copytree(running.at.pki.root, pki)
    expired = StateAuthority.load(running.at.pki.root).issue_certificate(
        common_name="gateway AT",
        san_uris=["urn:pouch:state:AT:gateway"],
        dns_names=["localhost"],
        ip_addresses=["127.0.0.1"],
        server_auth=True,
        client_auth=True,
        now=datetime.now(UTC) - timedelta(days=10),
        validity_days=1,
    )
    assert expired.private_key is not None
    (pki / "gateway.crt").write_bytes(certificate_pem(expired.certificate))
    write_private_key(pki / "gateway.key", expired.private_key)
    settings = settings.model_copy(update={"pki": settings.pki.model_copy(update={"dir": pki})})
    finding = row(diagnose(settings), "certificate gateway_tls")
    ended = expired.certificate.not_valid_after_utc.strftime("%Y-%m-%d %H:%M UTC")
    assert finding.status is Status.FAIL
    assert finding.detail.startswith(f"expired on {ended}")
    assert "issue a new certificate for this role from the state CA" in finding.remedy


def test_stale_partner_crl_is_a_failure_naming_the_partner(
    running: Running, tmp_path: Path
) -> None:
    settings = running.settings()
    assert row(diagnose(settings), "crl BE").status is Status.OK
    be_ca = StateAuthority.load(running.sites["BE"].pki.root)
    stale = tmp_path / "be-crl.pem"
    stale.write_bytes(
        crl_pem(build_crl(be_ca, [], now=datetime.now(UTC) - timedelta(days=10), crl_number=1))
    )
    finding = row(diagnose(with_partner(settings, crl=stale)), "crl BE")
    assert finding.status is Status.FAIL
    assert finding.detail.startswith("stale: ")
    assert "CRL_STALE" in finding.detail
    assert finding.remedy == (
        f"ask BE for its current CRL and put it at {stale}; the gateway reads it without restart"
    )


def test_wrong_pin_is_a_failure_and_the_command_exits_non_zero(running: Running) -> None:
    at = running.at
    assert row(diagnose(running.settings()), "bundle BE").status is Status.OK
    pinned = running.settings().partners[0].bundle_digest
    assert pinned is not None
    wrong = at.root / "gateway-wrong-pin.toml"
    wrong.write_text(
        at.config_path.read_text().replace(pinned, "sha256:" + "0" * 64), encoding="utf-8"
    )
    done = pouch("doctor", "--config", str(wrong), "--json")
    assert done.returncode == 1
    checks = {f["check"]: f for f in json.loads(done.stdout)["findings"]}
    assert checks["bundle BE"]["status"] == "FAIL"
    assert f"not the pinned sha256:{'0' * 64}" in checks["bundle BE"]["detail"]
    assert checks["bundle BE"]["remedy"].startswith("check the digest with BE out of band")
    assert checks["partner BE"]["status"] == "WARN"  # not called with an unpinned CA


def test_partner_down_is_a_failure_naming_its_endpoint(running: Running) -> None:
    settings = running.settings()
    assert row(diagnose(settings), "partner BE").status is Status.OK
    nowhere = f"127.0.0.1:{free_port()}"
    finding = row(diagnose(with_partner(settings, endpoint=nowhere)), "partner BE")
    assert finding.status is Status.FAIL
    assert finding.detail.startswith(f"{nowhere} unreachable (UNAVAILABLE")
    assert finding.remedy.startswith(
        f"check that BE's gateway runs and that {nowhere} is reachable"
    )


def test_skewed_clock_is_a_failure_with_an_injected_clock(running: Running) -> None:
    settings = running.settings()
    assert row(diagnose(settings), "clock BE").status is Status.OK
    ten_minutes_ahead = lambda: datetime.now(UTC) + timedelta(minutes=10)  # noqa: E731
    finding = row(diagnose(settings, ten_minutes_ahead), "clock BE")
    assert finding.status is Status.FAIL
    assert finding.detail.startswith("BE's clock is 600.")
    assert "behind ours" in finding.detail
    assert finding.remedy == (
        "synchronise both hosts' clocks (NTP); BE refuses envelopes created more than "
        "300 s from its clock"
    )


def test_pending_migration_is_a_failure_naming_the_command(
    running: Running, tmp_path: Path
) -> None:
    settings = running.settings()
    assert row(diagnose(settings), "database").status is Status.OK
    copy = tmp_path / "pouch.db"
    source = sqlite3.connect(settings.gateway.database_url.removeprefix("sqlite:///"))
    target = sqlite3.connect(copy)
    with target:
        source.backup(target)
    previous = _previous_revision()
    with target:
        target.execute("UPDATE schema_info SET version_num = ?", (previous,))
    source.close()
    target.close()
    gateway = settings.gateway.model_copy(update={"database_url": f"sqlite:///{copy}"})
    finding = row(diagnose(settings.model_copy(update={"gateway": gateway})), "database")
    assert finding.status is Status.FAIL
    assert finding.detail == (
        f"schema at revision {previous}, this release needs {head_revision()}: a migration "
        "is pending"
    )
    assert finding.remedy.startswith(f"pouch db init --config {settings.source} applies")


def _previous_revision() -> str:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from gateway.store.migrate import SCRIPT_LOCATION

    config = Config()
    config.set_main_option("script_location", str(SCRIPT_LOCATION))
    head = ScriptDirectory.from_config(config).get_revision(head_revision())
    assert head is not None and isinstance(head.down_revision, str)
    return head.down_revision


def test_mismatched_hash_key_is_a_failure_with_the_partner(tmp_path: Path) -> None:
    sites = prepare_sites(tmp_path, ["AT", "BE"], now=datetime.now(UTC), agreements=[("AT", "BE")])
    at = load_settings(sites["AT"].config_path)
    with GatewayThread(Gateway(load_settings(sites["BE"].config_path))):
        check = f"agreement {AGREEMENT} v1 with BE"
        assert row(diagnose(at), check).status is Status.OK
        assert at.agreements is not None
        other_keys = tmp_path / "other-hash-keys"
        other_keys.mkdir(mode=0o700)
        key = other_keys / f"{AGREEMENT}.key"
        key.write_text("ab" * 32)
        key.chmod(0o600)
        agreements = at.agreements.model_copy(update={"hash_keys_dir": other_keys})
        finding = row(diagnose(at.model_copy(update={"agreements": agreements})), check)
    assert finding.status is Status.FAIL
    assert finding.detail == (
        f"BE holds another hashing key for {AGREEMENT} (its fingerprint differs from ours); "
        "it holds the agreement out of force"
    )
    assert finding.remedy == (
        "agree the hashing key with BE out of band and put the same key at "
        f"<agreements.hash_keys_dir>/{AGREEMENT}.key on both gateways, mode 0600; then "
        "reload both"
    )


def test_a_delivery_and_its_acknowledgement_are_contact_in_both_gauges(running: Running) -> None:
    submitted = datetime.now(UTC)
    with LocalCaller(running.at, ["civil:submit"]) as caller:
        update = submission(
            death_update(submitted.date()), agreement_id=AGREEMENT, recipient_state="BE"
        )
        status = caller.wait_until_final(caller.submit(update))
    # The reference registry decides (it knows no such person: rejected); either way its
    # decision came back to AT.
    assert status.state in (common_pb2.DELIVERY_STATE_APPLIED, common_pb2.DELIVERY_STATE_REJECTED)
    # AT delivered to BE; BE sent AT the registry's decision: each contacted the other.
    for state, partner in (("AT", "BE"), ("BE", "AT")):
        metrics = running.gateways[state].metrics.registry
        labels = {"partner": partner}
        assert metrics.get_sample_value("pouch_partner_reachable", labels) == 1
        last = metrics.get_sample_value("pouch_partner_last_contact_seconds", labels)
        assert last is not None and last >= submitted.timestamp()


def test_private_key_readable_by_others_is_a_failure_naming_chmod(
    running: Running, tmp_path: Path
) -> None:
    settings = running.settings()
    assert row(diagnose(settings), "files").status is Status.OK
    pki = tmp_path / "pki"
    shutil.copytree(running.at.pki.root, pki)
    (pki / "signing.key").chmod(0o644)
    settings = settings.model_copy(update={"pki": settings.pki.model_copy(update={"dir": pki})})
    finding = row(diagnose(settings), "file pki.dir")
    assert finding.status is Status.FAIL
    assert "mode 0644 lets group or others at a secret key" in finding.detail
    assert finding.remedy == f"chmod 600 {pki / 'signing.key'} (and chown it to the gateway's user)"


def test_certificate_within_30_days_of_its_end_is_a_warning_with_the_date(
    running: Running,
) -> None:
    settings = running.settings()
    now = datetime.now(UTC)
    assert row(Diagnosis(tuple(check_expiry(settings, now))), "certificate signing").status is (
        Status.OK
    )
    end = load_certificate(running.at.pki.signing_cert).not_valid_after_utc
    later = end - timedelta(days=10, hours=1)
    finding = row(Diagnosis(tuple(check_expiry(settings, later))), "certificate signing")
    assert finding.status is Status.WARN
    assert finding.detail == f"expires in 10 days, on {end.strftime('%Y-%m-%d %H:%M UTC')}"
    assert finding.remedy.startswith("issue a new certificate for this role from the state CA")
