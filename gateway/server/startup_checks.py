"""Everything the configuration names, read and checked before any listener opens.

A gateway that starts must be able to serve its first request: a misconfiguration that
would only show then (a key that does not match its certificate, a hash key missing for
an agreement, an unpinned partner) stops the start instead. Each failure is one
:class:`StartupError` whose message is one line, ``<config key>: <path>: <rule>``; no
driver's or parser's exception text reaches the operator. ``pouch serve --check`` runs
:func:`check_startup` alone; ``pouch serve`` runs it, then starts.

The checks, in order (the first failure stops them):

========================  ==========================================================
``pki.dir``               CA, gateway, signing and audit certificates readable, in
                          their validity period, issued by the state CA, each key
                          matching its certificate; the state's CRL verifies
``tokens.jwks_file``      readable and a valid JWKS for the allowed algorithms
``partners[XX]``          bundle verifies, is for that state and matches the pinned
                          ``bundle_digest`` (pinning is mandatory unless the partner
                          says ``insecure_unpinned = true``); its CRL verifies
``storage``               sealing keys readable by their owner only, well formed
``registry``              TLS files readable, key matching certificate
``agreements``            every file loads; an agreement in force has a hash key of
                          at least 32 bytes; one not in force is a warning, except
                          one asking for hybrid message signatures that this state
                          or its partner cannot sign (no ML-DSA-44 signing key here,
                          or a pinned bundle that names none), which is refused
listeners                 every port free (:mod:`gateway.server.exclusive_ports`)
``gateway.database_url``  parses, reaches the database, which holds a Pouch schema
                          (:mod:`gateway.store.opening`)
========================  ==========================================================
"""

from __future__ import annotations

import stat
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from sqlalchemy import Engine

from gateway.agreements.gate import MIN_HASH_KEY_BYTES, load_hash_key
from gateway.agreements.model import EXCHANGES_VALIDATOR
from gateway.agreements.registry import AgreementRegistry, InactiveReason, explain
from gateway.agreements.yaml_tree import AgreementFileError
from gateway.audit.external_witness import configured_witnesses
from gateway.config import PartnerSection, Settings
from gateway.errors import AgreementRejected, StorageUnavailable
from gateway.pki.bundle import CLASSICAL_SIGNING, HYBRID_SIGNING, TrustBundle, load_trust_bundle
from gateway.pki.crl import CrlWatcher
from gateway.pki.directory import StateDirectory, state_of_ca
from gateway.pki.keys import load_certificate, load_certificates_pem, load_private_key
from gateway.pki.rotation import retired_bundles
from gateway.pki.sealing import PayloadSealer, load_sealing_keys
from gateway.pki.tokens import JwksKeys
from gateway.server.exclusive_ports import PortTaken, require_free
from gateway.store.engine import open_engine, redact_url
from gateway.store.migrate import upgrade_to_head
from gateway.store.opening import open_database, require_pouch_database


class StartupError(RuntimeError):
    """The gateway cannot start safely; the message says which setting is at fault.

    ``key`` is that setting (``pki.dir``, ``partners[BE].bundle_digest``…) when known,
    so that ``pouch doctor`` can attach the remedy for that setting."""

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


@dataclass(frozen=True)
class StartupReport:
    """What start-up found doubtful but not fatal: one line each, for the log."""

    warnings: tuple[str, ...]


def _fail(key: str, path: Path | str, rule: str) -> StartupError:
    return StartupError(f"{key}: {path}: {rule}", key=key)


def init_hint(settings: Settings) -> str:
    """The command that creates this configuration's database."""
    return f"pouch db init --config {settings.source}" if settings.source else "pouch db init"


def check_startup(
    settings: Settings, *, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
) -> StartupReport:
    """Run every check; :class:`StartupError` names the first failure."""
    now = clock()
    pki = check_pki(settings, now)
    check_jwks(settings)
    partners = [check_partner(entry) for entry in settings.partners]
    warnings: tuple[str, ...] = ()
    if settings.agreements is not None:
        check_sealing_keys(settings)
        check_registry_tls(settings)
        own_bundle = load_bundle("pki.dir", pki.bundle)
        # check_pki checked the ML-DSA-44 signing key against its certificate.
        signs = HYBRID_SIGNING if pki.signing_pq_cert.exists() else CLASSICAL_SIGNING
        try:
            retired = retired_bundles(pki)
        except (OSError, ValueError) as e:
            raise StartupError(f"pki.dir: a retired bundle is refused: {e}") from e
        warnings = check_agreements(settings, [own_bundle, *retired, *partners], signs, clock)
    try:
        configured_witnesses(settings.audit.witnesses)
    except ValueError as e:
        raise StartupError(str(e)) from e
    try:
        require_free(settings)
    except PortTaken as e:
        raise StartupError(str(e)) from e
    check_database(settings)
    return StartupReport(warnings)


def check_database(settings: Settings) -> None:
    """The database exists and holds a Pouch schema; nothing is created or migrated."""
    url = settings.gateway.database_url
    try:
        engine = open_database(url, init_hint=init_hint(settings))
    except ValueError as e:
        raise _fail("gateway.database_url", redact_url(url), _unparsed(e)) from e
    except StorageUnavailable as e:
        raise _fail("gateway.database_url", redact_url(url), e.message) from e
    engine.dispose()


def database_engine(settings: Settings) -> Engine:
    """The engine a gateway opens its database with; it never creates one."""
    url = settings.gateway.database_url
    try:
        return open_engine(url)
    except ValueError as e:
        raise _fail("gateway.database_url", redact_url(url), _unparsed(e)) from e


def migrate_existing(engine: Engine, settings: Settings) -> None:
    """Apply pending migrations to the Pouch database ``engine`` reaches, and only to one."""
    url = settings.gateway.database_url
    storage = settings.storage
    sealer = (
        None
        if storage is None
        else PayloadSealer(
            load_sealing_keys(storage.sealing_key_file, storage.previous_sealing_key_files)
        )
    )
    try:
        require_pouch_database(engine, url, init_hint=init_hint(settings))
        upgrade_to_head(engine, sealer=sealer)
    except StorageUnavailable as e:
        raise _fail("gateway.database_url", redact_url(url), e.message) from e


def _unparsed(error: ValueError) -> str:
    if "unsupported database" in str(error) or "in-memory" in str(error):
        return str(error)
    return "not a database URL: use sqlite:///PATH or postgresql://USER@HOST/DATABASE"


def check_pki(settings: Settings, now: datetime) -> StateDirectory:
    pki = StateDirectory(settings.pki.dir)
    ca = certificate_in_period("pki.dir", pki.ca_cert, now)
    state = state_of_ca(ca)
    if state != settings.gateway.state:
        raise _fail(
            "pki.dir",
            pki.ca_cert,
            f"the state CA is {state}'s, but gateway.state is {settings.gateway.state}",
        )
    for path in (pki.witness_cert, pki.audit_pq_cert, pki.witness_pq_cert):
        if not path.exists():
            raise _fail(
                "pki.dir",
                path,
                "missing: this state directory was made by an earlier release; run "
                f"pouch pki upgrade --state-dir {pki.root} and have partners pin the new "
                "bundle",
            )
    for certificate, key in pki.key_pairs().values():
        check_key_pair(
            "pki.dir", certificate_in_period("pki.dir", certificate, now), certificate, key
        )
        check_issued("pki.dir", certificate, ca, pki.ca_cert)
    for audit_path, witness_path in (
        (pki.audit_cert, pki.witness_cert),
        (pki.audit_pq_cert, pki.witness_pq_cert),
    ):
        if load_certificate(audit_path).public_key() == load_certificate(witness_path).public_key():
            raise _fail(
                "pki.dir",
                witness_path,
                "the witness key is the audit key: the key that cosigns partners' checkpoints "
                "must not be the one that signs this state's log",
            )
    check_crl("pki.dir", pki.crl, ca)
    return pki


def certificate_in_period(key: str, path: Path, now: datetime) -> x509.Certificate:
    try:
        certificate = load_certificate(path)
    except OSError as e:
        raise _fail(key, path, _unreadable(e)) from e
    except ValueError as e:
        raise _fail(key, path, "not a PEM file holding exactly one certificate") from e
    if certificate.not_valid_after_utc <= now:
        raise _fail(key, path, f"the certificate expired on {certificate.not_valid_after_utc}")
    if certificate.not_valid_before_utc > now:
        raise _fail(
            key, path, f"the certificate is not valid before {certificate.not_valid_before_utc}"
        )
    return certificate


def check_key_pair(key: str, certificate: x509.Certificate, cert_path: Path, path: Path) -> None:
    try:
        private = load_private_key(path)
    except OSError as e:
        raise _fail(key, path, _unreadable(e)) from e
    except ValueError as e:
        raise _fail(
            key, path, "not an unencrypted PEM private key (P-256, Ed25519 or ML-DSA-44)"
        ) from e
    if private.public_key() != certificate.public_key():
        raise _fail(key, path, f"the private key does not match the certificate {cert_path}")


def check_issued(key: str, path: Path, ca: x509.Certificate, ca_path: Path) -> None:
    try:
        load_certificate(path).verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature) as e:
        raise _fail(key, path, f"the certificate is not issued by the state CA {ca_path}") from e


def check_crl(key: str, path: Path, issuer: x509.Certificate) -> None:
    try:
        CrlWatcher(path, issuer)
    except OSError as e:
        raise _fail(key, path, _unreadable(e)) from e
    except ValueError as e:
        raise _fail(key, path, "not a CRL signed by the CA it must come from") from e


def check_jwks(settings: Settings) -> None:
    tokens = settings.tokens
    try:
        JwksKeys.from_file(tokens.jwks_file, algorithms=frozenset(tokens.algorithms))
    except OSError as e:
        raise _fail("tokens.jwks_file", tokens.jwks_file, _unreadable(e)) from e
    except ValueError as e:
        raise _fail(
            "tokens.jwks_file",
            tokens.jwks_file,
            "not a JWKS of public keys for the allowed algorithms",
        ) from e


def load_bundle(key: str, path: Path) -> TrustBundle:
    try:
        return load_trust_bundle(path)
    except OSError as e:
        raise _fail(key, path, _unreadable(e)) from e
    except ValueError as e:
        raise _fail(key, path, f"trust bundle refused: {e}") from e


def check_partner(entry: PartnerSection) -> TrustBundle:
    key = f"partners[{entry.state}]"
    bundle = load_bundle(f"{key}.bundle", entry.bundle)
    if bundle.state != entry.state:
        raise _fail(f"{key}.bundle", entry.bundle, f"the bundle is for {bundle.state}")
    if entry.bundle_digest is None and not entry.insecure_unpinned:
        raise _fail(
            f"{key}.bundle_digest",
            entry.bundle,
            "missing: pinning is mandatory; set the digest checked with the partner out of "
            f"band ({bundle.digest} is what this file holds)",
        )
    if entry.bundle_digest is not None and bundle.digest != entry.bundle_digest:
        raise _fail(
            f"{key}.bundle_digest",
            entry.bundle,
            f"the bundle's digest is {bundle.digest}, not the pinned {entry.bundle_digest}",
        )
    if entry.crl is not None:
        check_crl(f"{key}.crl", entry.crl, bundle.ca_certificate)
    return bundle


def check_sealing_keys(settings: Settings) -> None:
    storage = settings.storage
    if storage is None:  # load_settings refuses this; a hand-built Settings may not
        raise StartupError("storage.sealing_key_file: required with [agreements]")
    named = [("storage.sealing_key_file", storage.sealing_key_file)] + [
        ("storage.previous_sealing_key_files", p) for p in storage.previous_sealing_key_files
    ]
    for key, path in named:
        require_private(key, path)
        try:
            load_sealing_keys(path)
        except ValueError as e:
            raise _fail(key, path, "must hold 32 random bytes as hex, and nothing else") from e


def require_private(key: str, path: Path) -> None:
    try:
        mode = path.stat().st_mode
    except OSError as e:
        raise _fail(key, path, _unreadable(e)) from e
    if not stat.S_ISREG(mode):
        raise _fail(key, path, "not a regular file")
    if mode & 0o077:
        raise _fail(
            key,
            path,
            f"mode {stat.S_IMODE(mode):04o} lets group or others at a secret key; "
            "it must be readable by its owner only (chmod 600)",
        )


def check_registry_tls(settings: Settings) -> None:
    registry = settings.registry
    ca: Path | None = getattr(registry, "tls_ca", None)
    cert: Path | None = getattr(registry, "tls_cert", None)
    private: Path | None = getattr(registry, "tls_key", None)
    if ca is not None:
        try:
            load_certificates_pem(ca.read_bytes())
        except OSError as e:
            raise _fail("registry.tls_ca", ca, _unreadable(e)) from e
        except ValueError as e:
            raise _fail("registry.tls_ca", ca, "not a PEM file of CA certificates") from e
    if cert is not None and private is not None:
        try:
            certificate = load_certificate(cert)
        except OSError as e:
            raise _fail("registry.tls_cert", cert, _unreadable(e)) from e
        except ValueError as e:
            raise _fail("registry.tls_cert", cert, "not a PEM file holding one certificate") from e
        check_key_pair("registry.tls_key", certificate, cert, private)


_HYBRID_GAPS = (InactiveReason.NO_ML_DSA_SIGNING_KEY, InactiveReason.BUNDLE_WITHOUT_ML_DSA)


def load_agreements(
    settings: Settings,
    bundles: list[TrustBundle],
    signs: tuple[str, ...],
    clock: Callable[[], datetime],
) -> AgreementRegistry[Any]:
    """The agreements as a gateway with these bundles and signing keys would hold them."""
    agreements = settings.agreements
    assert agreements is not None
    try:
        return AgreementRegistry(
            agreements.dir,
            own_state=settings.gateway.state,
            bundles=bundles,
            clock=clock,
            exchanges_validator=EXCHANGES_VALIDATOR,
            own_signature_algorithms=signs,
        )
    except AgreementFileError as e:
        # Each issue already names the file, the line and the rule.
        raise StartupError(f"agreements: cannot load: {e}", key="agreements.dir") from e
    except (OSError, ValueError) as e:
        raise _fail("agreements.dir", agreements.dir, "cannot be read as agreement files") from e


def check_agreements(
    settings: Settings,
    bundles: list[TrustBundle],
    signs: tuple[str, ...],
    clock: Callable[[], datetime],
) -> tuple[str, ...]:
    agreements = settings.agreements
    assert agreements is not None
    own = settings.gateway.state
    registry = load_agreements(settings, bundles, signs, clock)
    warnings = []
    for loaded in registry.list():
        if own not in loaded.agreement.parties:
            continue
        for gap in _HYBRID_GAPS:
            if gap in loaded.inactive_reasons:
                raise _fail(
                    "agreements.dir",
                    loaded.source,
                    f"agreement {loaded.id} version {loaded.version} ({gap.value}): {explain(gap)}",
                )
        if loaded.inactive_reason is not None:
            warnings.append(
                f"agreement {loaded.id} version {loaded.version} is not in force "
                f"({loaded.inactive_reason.value}): {explain(loaded.inactive_reason)}"
            )
            continue
        key_path = agreements.hash_keys_dir / f"{loaded.id}.key"
        try:
            load_hash_key(agreements.hash_keys_dir, loaded.id)
        except AgreementRejected as e:
            rule = (
                f"missing: agreement {loaded.id} needs its hashing key, shared with the "
                "partner out of band"
                if not key_path.is_file()
                else f"must hold at least {MIN_HASH_KEY_BYTES} random bytes as hex"
            )
            raise _fail("agreements.hash_keys_dir", key_path, rule) from e
    return tuple(warnings)


def _unreadable(error: OSError) -> str:
    return f"cannot be read ({error.strerror or 'input/output error'})"
