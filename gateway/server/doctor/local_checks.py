"""The checks of the files the configuration names and of the database.

Each function returns findings, never raises for what it finds: a check that cannot
run (a file it needs is missing) is itself the finding. Where ``pouch serve`` has a
rule (:mod:`gateway.server.startup_checks`), the same function is called here and its
one-line message becomes the detail, so the doctor and the start-up never disagree.
Certificates, bundles and CRLs are :mod:`.pki_checks`'.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from gateway.config import Settings
from gateway.pki.directory import StateDirectory
from gateway.server.doctor.findings import Finding, fail, ok, warn
from gateway.server.startup_checks import (
    StartupError,
    check_database,
    require_private,
)
from gateway.store.migrate import current_revision, head_revision, known_revisions
from gateway.store.opening import open_database


def _config_hint(settings: Settings) -> str:
    return f" --config {settings.source}" if settings.source else ""


# -- files and modes ---------------------------------------------------------------


def _named_files(settings: Settings) -> Iterator[tuple[str, Path, bool]]:
    """(config key, path, secret) of every file the configuration names."""
    pki = StateDirectory(settings.pki.dir)
    yield "pki.dir", pki.ca_cert, False
    yield "pki.dir", pki.crl, False
    yield "pki.dir", pki.bundle, False
    for certificate, key in pki.key_pairs().values():
        yield "pki.dir", certificate, False
        yield "pki.dir", key, True
    yield "tokens.jwks_file", settings.tokens.jwks_file, False
    for partner in settings.partners:
        yield f"partners[{partner.state}].bundle", partner.bundle, False
        if partner.crl is not None:
            yield f"partners[{partner.state}].crl", partner.crl, False
    if settings.storage is not None:
        yield "storage.sealing_key_file", settings.storage.sealing_key_file, True
        for previous in settings.storage.previous_sealing_key_files:
            yield "storage.previous_sealing_key_files", previous, True
    if settings.agreements is not None:
        keys = settings.agreements.hash_keys_dir
        for path in sorted(keys.glob("*.key")) if keys.is_dir() else ():
            yield "agreements.hash_keys_dir", path, True
    registry = settings.registry
    for name in ("tls_ca", "tls_cert", "tls_key", "secret_file"):
        named: object = getattr(registry, name, None)
        if isinstance(named, Path):
            yield f"registry.{name}", named, name in ("tls_key", "secret_file")


def check_files(settings: Settings) -> list[Finding]:
    """Every named file present; every secret one readable by its owner only."""
    findings: list[Finding] = []
    files = secrets = 0
    for key, path, secret in _named_files(settings):
        if not path.is_file():
            findings.append(
                fail(
                    f"file {key}",
                    f"{path}: missing",
                    f"put the file at {path} or correct {key} in the configuration",
                )
            )
            continue
        files += 1
        if secret:
            secrets += 1
            try:
                require_private(key, path)
            except StartupError as e:
                findings.append(
                    fail(
                        f"file {key}",
                        str(e),
                        f"chmod 600 {path} (and chown it to the gateway's user)",
                    )
                )
    for key, directory in _named_directories(settings):
        if not directory.is_dir():
            findings.append(
                fail(f"file {key}", f"{directory}: no such directory", f"create {directory}")
            )
    ca_key = StateDirectory(settings.pki.dir).ca_key
    if ca_key.exists():
        findings.append(
            warn(
                "state CA key",
                f"{ca_key}: the state CA's private key lies in the gateway's directory",
                "keep the CA key offline (pouch pki init --offline-ca); the gateway needs "
                "only ca.crt and crl.pem, and the commands that sign take the key's path",
            )
        )
    if not any(f.check.startswith("file ") and f.status.value == "FAIL" for f in findings):
        findings.insert(
            0,
            ok(
                "files",
                f"{files} files present; {secrets} secret keys readable by their owner only",
            ),
        )
    return findings


def _named_directories(settings: Settings) -> Iterator[tuple[str, Path]]:
    if settings.agreements is not None:
        yield "agreements.dir", settings.agreements.dir
        yield "agreements.hash_keys_dir", settings.agreements.hash_keys_dir


# -- database ----------------------------------------------------------------------


def check_schema(settings: Settings) -> list[Finding]:
    """The database is reachable, holds a Pouch schema, and is at this release's head."""
    hint = _config_hint(settings)
    try:
        check_database(settings)
    except StartupError as e:
        return [
            fail(
                "database",
                str(e),
                f"start the database server or correct gateway.database_url; a new "
                f"deployment creates its database with pouch db init{hint}",
            )
        ]
    engine = open_database(settings.gateway.database_url, init_hint="")
    try:
        current = current_revision(engine)
    finally:
        engine.dispose()
    head = head_revision()
    if current == head:
        return [ok("database", f"reachable, schema at the latest revision {head}")]
    if current is not None and current not in known_revisions():
        return [
            fail(
                "database",
                f"schema at revision {current}, unknown to this release (head {head}): a "
                "newer release migrated it",
                "run the release that migrated this database, or upgrade this one",
            )
        ]
    return [
        fail(
            "database",
            f"schema at revision {current}, this release needs {head}: a migration is pending",
            f"pouch db init{hint} applies the pending migrations (pouch serve also applies "
            "them as it starts)",
        )
    ]
