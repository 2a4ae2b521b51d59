"""A misconfigured gateway refuses to start, in one line naming the key, path and rule.

Every broken configuration is started as a real ``pouch serve`` process and as
``pouch serve --check``; both must exit non-zero with the same single line on stderr and
no traceback, before any listener opens. Each test first shows ``--check`` passing on
the configuration as prepared, so a refusal for some other reason cannot pass it.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.pki.authority import StateAuthority
from gateway.pki.bundle import load_trust_bundle
from gateway.pki.keys import certificate_pem, load_certificate, write_private_key
from pouch_devtools.demo.deployment import GatewayProcess, Site, free_port, prepare_sites
from tests.integration.conftest import channel_to
from tests.integration.exchange_fixtures import write_agreement

POUCH = Path(sys.executable).parent / "pouch"
AGREEMENT = "at-be-civil"


def pouch(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(POUCH), *arguments], capture_output=True, text=True, timeout=120, check=False
    )


def checked(site: Site) -> subprocess.CompletedProcess[str]:
    return pouch("serve", "--check", "--config", str(site.config_path))


def assert_passes(site: Site) -> None:
    result = checked(site)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("ready to serve"), result.stdout


def refusal(site: Site) -> str:
    """The one line both ``pouch serve`` and ``pouch serve --check`` refuse with."""
    lines = []
    for result in (pouch("serve", "--config", str(site.config_path)), checked(site)):
        assert result.returncode != 0
        assert "Traceback" not in result.stderr
        assert "ready" not in result.stdout
        (line,) = result.stderr.strip().splitlines()
        lines.append(line)
    assert lines[0] == lines[1]
    return lines[0]


def deployment(tmp_path: Path, *, now: datetime | None = None) -> dict[str, Site]:
    return prepare_sites(
        tmp_path, ["AT", "BE"], now=now or datetime.now(UTC), agreements=[("AT", "BE")]
    )


def edit_config(site: Site, old: str, new: str) -> None:
    text = site.config_path.read_text(encoding="utf-8")
    assert old in text
    site.config_path.write_text(text.replace(old, new), encoding="utf-8")


# -- the state's own PKI --------------------------------------------------------


def test_gateway_key_not_matching_its_certificate_is_refused_naming_both(tmp_path: Path) -> None:
    at = deployment(tmp_path)["AT"]
    assert_passes(at)
    at.pki.gateway_key.write_bytes(at.pki.client_key("operator").read_bytes())
    assert refusal(at) == (
        f"Error: pki.dir: {at.pki.gateway_key}: the private key does not match the "
        f"certificate {at.pki.gateway_cert}"
    )


def test_the_audit_key_in_the_witness_role_is_refused(tmp_path: Path) -> None:
    # One key both signing the state's log and cosigning partners': refused at start.
    at = deployment(tmp_path)["AT"]
    assert_passes(at)
    at.pki.witness_cert.write_bytes(at.pki.audit_cert.read_bytes())
    at.pki.witness_key.write_bytes(at.pki.audit_key.read_bytes())
    assert refusal(at) == (
        f"Error: pki.dir: {at.pki.witness_cert}: the witness key is the audit key: the key "
        "that cosigns partners' checkpoints must not be the one that signs this state's log"
    )


def test_the_post_quantum_audit_key_in_the_witness_role_is_refused(tmp_path: Path) -> None:
    at = deployment(tmp_path)["AT"]
    at.pki.witness_pq_cert.write_bytes(at.pki.audit_pq_cert.read_bytes())
    at.pki.witness_pq_key.write_bytes(at.pki.audit_pq_key.read_bytes())
    assert refusal(at) == (
        f"Error: pki.dir: {at.pki.witness_pq_cert}: the witness key is the audit key: the "
        "key that cosigns partners' checkpoints must not be the one that signs this state's log"
    )


def test_a_state_directory_without_post_quantum_keys_is_refused_naming_the_upgrade(
    tmp_path: Path,
) -> None:
    at = deployment(tmp_path)["AT"]
    at.pki.audit_pq_cert.unlink()
    assert refusal(at) == (
        f"Error: pki.dir: {at.pki.audit_pq_cert}: missing: this state directory was made "
        f"by an earlier release; run pouch pki upgrade --state-dir {at.pki.root} and have "
        "partners pin the new bundle"
    )


def test_a_post_quantum_key_not_matching_its_certificate_is_refused(tmp_path: Path) -> None:
    at = deployment(tmp_path)["AT"]
    at.pki.audit_pq_key.write_bytes(at.pki.witness_pq_key.read_bytes())
    assert refusal(at) == (
        f"Error: pki.dir: {at.pki.audit_pq_key}: the private key does not match the "
        f"certificate {at.pki.audit_pq_cert}"
    )


def test_gateway_certificate_from_another_state_ca_is_refused(tmp_path: Path) -> None:
    sites = deployment(tmp_path)
    at, be = sites["AT"], sites["BE"]
    assert_passes(at)
    at.pki.gateway_cert.write_bytes(be.pki.gateway_cert.read_bytes())
    at.pki.gateway_key.write_bytes(be.pki.gateway_key.read_bytes())
    assert refusal(at) == (
        f"Error: pki.dir: {at.pki.gateway_cert}: the certificate is not issued by the "
        f"state CA {at.pki.ca_cert}"
    )


def test_expired_gateway_certificate_is_refused_with_its_end_date(tmp_path: Path) -> None:
    at = deployment(tmp_path)["AT"]
    assert_passes(at)
    issued = StateAuthority.load(at.pki.root).issue_certificate(
        common_name="gateway AT",
        dns_names=["localhost"],
        ip_addresses=["127.0.0.1"],
        server_auth=True,
        client_auth=True,
        now=datetime.now(UTC) - timedelta(days=10),
        validity_days=1,
    )
    assert issued.private_key is not None
    at.pki.gateway_cert.write_bytes(certificate_pem(issued.certificate))
    write_private_key(at.pki.gateway_key, issued.private_key)
    ended = load_certificate(at.pki.gateway_cert).not_valid_after_utc
    assert (
        refusal(at) == f"Error: pki.dir: {at.pki.gateway_cert}: the certificate expired on {ended}"
    )


def test_unparseable_own_crl_is_refused(tmp_path: Path) -> None:
    at = deployment(tmp_path)["AT"]
    assert_passes(at)
    at.pki.crl.write_text("not a CRL\n")
    assert refusal(at) == (
        f"Error: pki.dir: {at.pki.crl}: not a CRL signed by the CA it must come from"
    )


def test_missing_partner_crl_is_refused_naming_the_partner(tmp_path: Path) -> None:
    at = deployment(tmp_path)["AT"]
    assert_passes(at)
    crl = at.root / "partners" / "BE" / "crl.pem"
    crl.unlink()
    assert refusal(at) == (
        f"Error: partners[BE].crl: {crl}: cannot be read (No such file or directory)"
    )


def test_unparseable_jwks_is_refused(tmp_path: Path) -> None:
    at = deployment(tmp_path)["AT"]
    assert_passes(at)
    at.idp.jwks_path.write_text("{not json")
    assert refusal(at) == (
        f"Error: tokens.jwks_file: {at.idp.jwks_path}: not a JWKS of public keys for the "
        "allowed algorithms"
    )


# -- partners: bundles and pins -------------------------------------------------


def test_partner_bundle_whose_signature_fails_is_refused(tmp_path: Path) -> None:
    at = deployment(tmp_path)["AT"]
    assert_passes(at)
    bundle = at.root / "partners" / "BE" / "bundle.json"
    text = bundle.read_text()
    endpoint = load_trust_bundle(bundle).peer_endpoint
    bundle.write_text(text.replace(endpoint, "127.0.0.1:1"))
    assert refusal(at) == (
        f"Error: partners[BE].bundle: {bundle}: trust bundle refused: trust bundle "
        "signature does not verify with its CA"
    )


def test_partner_bundle_not_matching_the_pinned_digest_is_refused(tmp_path: Path) -> None:
    at = deployment(tmp_path)["AT"]
    assert_passes(at)
    bundle = at.root / "partners" / "BE" / "bundle.json"
    digest = load_trust_bundle(bundle).digest
    pinned = "sha256:" + "0" * 64
    edit_config(at, digest, pinned)
    assert refusal(at) == (
        f"Error: partners[BE].bundle_digest: {bundle}: the bundle's digest is {digest}, "
        f"not the pinned {pinned}"
    )


def test_partner_without_pinned_digest_is_refused_unless_marked_insecure(tmp_path: Path) -> None:
    at = deployment(tmp_path)["AT"]
    assert_passes(at)
    bundle = at.root / "partners" / "BE" / "bundle.json"
    digest = load_trust_bundle(bundle).digest
    edit_config(at, f'bundle_digest = "{digest}"\n', "")
    assert refusal(at) == (
        f"Error: partners[BE].bundle_digest: {bundle}: missing: pinning is mandatory; set "
        f"the digest checked with the partner out of band ({digest} is what this file holds)"
    )
    edit_config(at, 'state = "BE"\n', 'state = "BE"\ninsecure_unpinned = true\n')
    assert_passes(at)


# -- secrets --------------------------------------------------------------------


def test_missing_hash_key_of_an_agreement_in_force_is_refused(tmp_path: Path) -> None:
    at = deployment(tmp_path)["AT"]
    assert_passes(at)
    key = at.hash_keys_dir / f"{AGREEMENT}.key"
    key.unlink()
    assert refusal(at) == (
        f"Error: agreements.hash_keys_dir: {key}: missing: agreement {AGREEMENT} needs its "
        "hashing key, shared with the partner out of band"
    )


def test_hash_key_shorter_than_32_bytes_is_refused(tmp_path: Path) -> None:
    at = deployment(tmp_path)["AT"]
    assert_passes(at)
    key = at.hash_keys_dir / f"{AGREEMENT}.key"
    key.write_text("00" * 31 + "\n")
    assert refusal(at) == (
        f"Error: agreements.hash_keys_dir: {key}: must hold at least 32 random bytes as hex"
    )


def test_sealing_key_readable_by_others_is_refused_as_ssh_refuses_it(tmp_path: Path) -> None:
    at = deployment(tmp_path)["AT"]
    assert_passes(at)
    at.sealing_key_file.chmod(0o644)
    assert refusal(at) == (
        f"Error: storage.sealing_key_file: {at.sealing_key_file}: mode 0644 lets group or "
        "others at a secret key; it must be readable by its owner only (chmod 600)"
    )


def test_agreement_signed_by_one_party_starts_with_a_warning_naming_it(tmp_path: Path) -> None:
    sites = deployment(tmp_path)
    at, be = sites["AT"], sites["BE"]
    write_agreement("at-be-unsigned", at, be, today=date.today(), holders=[at], signers=[at])
    result = checked(at)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    (warning,) = [line for line in result.stderr.splitlines() if "WARNING" in line]
    assert warning.endswith(
        "agreement at-be-unsigned version 1 is not in force (MISSING_SIGNATURE): it is "
        "not signed by both parties"
    )
    assert AGREEMENT not in result.stderr


def test_hybrid_agreement_without_our_ml_dsa_signing_key_is_refused_naming_it(
    tmp_path: Path,
) -> None:
    sites = deployment(tmp_path)
    at, be = sites["AT"], sites["BE"]
    path = write_agreement(
        "at-be-hybrid",
        at,
        be,
        today=date.today(),
        holders=[at],
        signers=[at, be],
        message_signatures="hybrid",
    )
    assert_passes(at)
    at.pki.signing_pq_key.unlink()
    at.pki.signing_pq_cert.unlink()
    assert refusal(at) == (
        f"Error: agreements.dir: {path}: agreement at-be-hybrid version 1 "
        "(NO_ML_DSA_SIGNING_KEY): it asks for hybrid message signatures and this gateway "
        "holds no ML-DSA-44 signing key (signing-pq.key)"
    )


# -- the database ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "rule"),
    [
        (
            "not a database url",
            "<unparseable database url>: not a database URL: use sqlite:///PATH or "
            "postgresql://USER@HOST/DATABASE",
        ),
        (
            "sqlite:////nonexistent/pouch-typo/pouch.db",
            "sqlite:////nonexistent/pouch-typo/pouch.db: the directory "
            "/nonexistent/pouch-typo does not exist (it is never created at start); create "
            "it, then run `pouch db init --config {config}`",
        ),
        (
            "postgresql://pouch@127.0.0.1:1/pouch?connect_timeout=5",
            "postgresql://pouch@127.0.0.1:1/pouch?connect_timeout=5: the host "
            "refused the connection: is PostgreSQL running and listening there?",
        ),
    ],
    ids=["unparseable", "missing-directory", "host-refuses"],
)
def test_unusable_database_url_is_refused_saying_why(tmp_path: Path, url: str, rule: str) -> None:
    at = deployment(tmp_path)["AT"]
    assert_passes(at)
    edit_config(at, 'database_url = "sqlite:///data/pouch.db"', f'database_url = "{url}"')
    assert refusal(at) == "Error: gateway.database_url: " + rule.format(config=at.config_path)
    assert not Path("/nonexistent/pouch-typo").exists()


def test_database_path_that_is_a_directory_is_refused(tmp_path: Path) -> None:
    at = deployment(tmp_path)["AT"]
    assert_passes(at)
    folder = at.root / "data" / "pouch.db"
    folder.unlink()
    folder.mkdir()
    assert refusal(at) == (
        f"Error: gateway.database_url: sqlite:///{folder}: is not a regular file: name the "
        "database file"
    )


def test_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    at = deployment(tmp_path)["AT"]
    assert_passes(at)
    database = at.root / "data" / "pouch.db"
    for companion in database.parent.glob("pouch.db-*"):
        companion.unlink()
    database.write_bytes(b"these are not the pages of a database\n" * 200)
    assert refusal(at) == (
        f"Error: gateway.database_url: sqlite:///{database}: is not an SQLite database file"
    )


def test_sqlite_database_of_something_else_is_refused(tmp_path: Path) -> None:
    at = deployment(tmp_path)["AT"]
    assert_passes(at)
    database = at.root / "data" / "other.db"
    with sqlite3.connect(database) as db:
        db.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY)")
    edit_config(at, "data/pouch.db", "data/other.db")
    assert refusal(at) == (
        f"Error: gateway.database_url: sqlite:///{database}: holds no schema_info table: "
        "not a Pouch database"
    )


def test_missing_database_is_refused_until_pouch_db_init_creates_it(tmp_path: Path) -> None:
    at = deployment(tmp_path)["AT"]
    database = at.root / "data" / "pouch.db"
    for old in database.parent.iterdir():
        old.unlink()
    assert refusal(at) == (
        f"Error: gateway.database_url: sqlite:///{database}: no database here; a new "
        f"state's database is created once, by `pouch db init --config {at.config_path}`"
    )
    assert not database.exists()
    init = pouch("db", "init", "--config", str(at.config_path))
    assert init.returncode == 0, init.stderr
    assert init.stdout.startswith(f"pouch db init: sqlite:///{database}: created, at schema")
    process = GatewayProcess(at)
    process.start()
    try:
        assert health(at) == health_pb2.HealthCheckResponse.SERVING
    finally:
        assert process.terminate() == 0


# -- one gateway per port ---------------------------------------------------------


def health(site: Site) -> health_pb2.HealthCheckResponse.ServingStatus.ValueType:
    with channel_to(
        site.local_target,
        trusted_ca=site.pki.ca_cert.read_bytes(),
        chain=site.pki.client_cert("operator").read_bytes(),
        key=site.pki.client_key("operator").read_bytes(),
    ) as channel:
        answer = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=10
        )
    return answer.status


@pytest.mark.parametrize("listener", ["local", "peer", "metrics"])
def test_second_gateway_on_an_occupied_port_exits_naming_the_listener(
    tmp_path: Path, listener: str
) -> None:
    at = deployment(tmp_path)["AT"]
    first = GatewayProcess(at)
    first.start()
    try:
        assert health(at) == health_pb2.HealthCheckResponse.SERVING
        taken = {
            "local": ("local_api", at.local_port),
            "peer": ("peer_api", at.peer_port),
            "metrics": ("metrics", at.metrics_port),
        }
        # The second configuration moves the ports checked before the one under test to
        # free ones, so that the check reaches this one.
        for name in ("local", "peer", "metrics"):
            if name == listener:
                break
            _, port = taken[name]
            edit_config(at, f"127.0.0.1:{port}", f"127.0.0.1:{free_port()}")
        section, port = taken[listener]
        second = pouch("serve", "--config", str(at.config_path))
        assert second.returncode != 0
        assert "Traceback" not in second.stderr
        (line,) = second.stderr.strip().splitlines()
        assert line == (
            f"Error: {section}.listen: 127.0.0.1:{port}: port in use: another process "
            f"(another gateway?) holds the {listener} listener's port"
        )
        assert first.process is not None and first.process.poll() is None
        assert health(at) == health_pb2.HealthCheckResponse.SERVING
    finally:
        assert first.terminate() == 0
