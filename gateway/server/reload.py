"""Reload of a running gateway (SIGHUP, or ``AgreementService.Reload``): new files in
force without a restart, and without dropping a connection or a call in flight.

What a reload re-reads, by kind, each all-or-nothing:

=================  =========================================================  ==========
kind               files                                                      reason
=================  =========================================================  ==========
agreements         every ``*.yaml``/``*.yml`` of ``[agreements] dir``         AGREEMENT_FILE_INVALID
crl                the state's CRL and each partner's configured CRL          CRL_INVALID
jwks               ``[tokens] jwks_file``                                     JWKS_INVALID
tls_certificate    ``gateway.crt`` and ``gateway.key`` of the state directory  TLS_IDENTITY_INVALID
=================  =========================================================  ==========

Files read at start only (partner trust bundles, whose digests the configuration and
the agreements pin; a partner's new bundle comes by ``PeerService.AnnounceBundle``) are
looked at too: one changed since start is reported refused with ``RESTART_REQUIRED``,
kind ``partner_bundle``. A new message-signing key and certificate (kind
``signing_key``, after ``pouch pki rotate --complete``) are taken in only when the
state's own ``bundle.json``, the one announced to partners, names that certificate and
the ML-DSA-44 one beside it, where the state holds one (``SIGNING_KEY_NOT_ANNOUNCED``
otherwise, ``SIGNING_KEY_INVALID`` for a broken pair); every signer then signs with the
new keys.

A file that breaks a rule is refused: one warning line names the file and the rule,
the reload's answer lists it with its reason code, and what was in force before stays
in force for that kind (one bad agreement file keeps the whole previous set; each CRL
stands alone). What was taken in is one ``reloaded`` event line, an
``AGREEMENT_LOADED`` audit entry per new or changed agreement and a ``KEY_CHANGED``
entry for a new TLS certificate (as at start, :mod:`gateway.audit.start_evidence`), and
``pouch_reloads_total{kind,result}``.

The TLS identity is served through gRPC's dynamic server credentials
(:class:`ServingCertificate`): each new handshake asks for the identity in force, so
connections already open keep theirs and new ones get the reloaded certificate.

Usage::

    reload = GatewayReload(sources, metrics_registry=metrics.registry)
    report = reload.run(principal="signal:SIGHUP")   # blocking: call in a thread
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path

import grpc
from cryptography import x509
from prometheus_client import CollectorRegistry, Counter

from gateway.agreements.loader import AgreementFileError
from gateway.agreements.registry import AgreementRegistry, LoadedAgreement
from gateway.envelope.jws import StateSigningKey
from gateway.events import Event, emit
from gateway.pki.bundle import TrustBundle, load_trust_bundle
from gateway.pki.crl import CrlWatcher
from gateway.pki.directory import StateDirectory
from gateway.pki.keys import certificate_der
from gateway.pki.tls_identity import TlsIdentity, TlsIdentityRefused, load_tls_identity
from gateway.pki.tokens import InvalidJwks, JwksWatcher
from gateway.policy.rules import PolicySection

log = logging.getLogger(__name__)


class ReloadResult(StrEnum):
    RELOADED = "reloaded"
    UNCHANGED = "unchanged"
    REFUSED = "refused"


@dataclass(frozen=True)
class ReloadOutcome:
    """One file (or set of files) of one kind: what the reload did with it.
    ``changed`` names what came into force (agreement ids); ``rule`` is the broken
    rule of a refusal, for the log; ``reason`` its stable code."""

    kind: str
    file: str
    result: ReloadResult
    reason: str = ""
    rule: str = ""
    changed: tuple[str, ...] = ()


@dataclass(frozen=True)
class ReloadReport:
    outcomes: tuple[ReloadOutcome, ...]

    @property
    def refused(self) -> tuple[ReloadOutcome, ...]:
        return tuple(o for o in self.outcomes if o.result is ReloadResult.REFUSED)

    @property
    def reloaded(self) -> tuple[ReloadOutcome, ...]:
        return tuple(o for o in self.outcomes if o.result is ReloadResult.RELOADED)


class ServingCertificate:
    """The TLS identity the listeners present, replaced by a reload; thread-safe."""

    def __init__(self, identity: TlsIdentity) -> None:
        self._identity = identity
        self._generation = 0
        self._lock = threading.Lock()

    @property
    def identity(self) -> TlsIdentity:
        return self._identity

    def replace(self, identity: TlsIdentity) -> None:
        with self._lock:
            self._identity = identity
            self._generation += 1

    def credentials(self, root_certificates: bytes | Callable[[], bytes]) -> grpc.ServerCredentials:
        """Server credentials requiring a client certificate from ``root_certificates``,
        presenting the identity in force at each new handshake. Given as a function, the
        roots are asked for at each handshake too: a partner's renewed CA, once its
        bundle is taken, is trusted from the next handshake on."""
        roots = root_certificates if callable(root_certificates) else lambda: root_certificates
        served = [(self._generation, roots())]

        def configuration(
            identity: TlsIdentity, trusted: bytes
        ) -> grpc.ServerCertificateConfiguration:
            return grpc.ssl_server_certificate_configuration(
                [(identity.key_pem, identity.certificate_pem)],
                root_certificates=trusted,
            )

        def fetch() -> grpc.ServerCertificateConfiguration | None:
            # Called by gRPC before every handshake: None keeps what it serves.
            trusted = roots()
            with self._lock:
                if served[0] == (self._generation, trusted):
                    return None
                served[0] = (self._generation, trusted)
                identity = self._identity
            return configuration(identity, trusted)

        return grpc.dynamic_ssl_server_credentials(
            configuration(self._identity, served[0][1]),
            fetch,  # type: ignore[arg-type]  # gRPC documents None as "keep the current one"
            require_client_authentication=True,
        )


@dataclass(frozen=True)
class ReloadSources:
    """What a reload re-reads. ``registry`` is None for a gateway without agreements;
    ``crls`` lists the CRL watchers in use; ``evidence`` records the start-style audit
    entries (agreements, certificates by role), None without an audit log."""

    state: str
    ca_certificate: x509.Certificate
    tls_paths: tuple[Path, Path]
    serving: ServingCertificate
    jwks: JwksWatcher
    crls: Callable[[], Sequence[CrlWatcher]]
    registry: AgreementRegistry[PolicySection] | None
    evidence: Callable[[Sequence[LoadedAgreement[PolicySection]], dict[str, bytes]], None] | None
    refusal_evidence: Callable[[str, str], None] | None
    clock: Callable[[], datetime]
    restart_only: tuple[tuple[str, Path], ...] = ()
    """Files (by kind) a reload does not take in: one changed since start is reported
    refused with ``RESTART_REQUIRED``, so nobody believes it in force."""
    signing: SigningKeySource | None = None
    """The message-signing key and the signers it is handed to (kind ``signing_key``)."""


@dataclass(frozen=True)
class SigningKeySource:
    """A rotated message-signing key is taken in only when the state's own
    ``bundle.json`` (the bundle partners were announced, signed by our CA) names its
    certificate; every signer in ``signers`` then signs with it."""

    directory: StateDirectory
    signers: tuple[StateSigningKey, ...]


def _digest(*paths: Path) -> str | None:
    sha = hashlib.sha256()
    try:
        for path in paths:
            sha.update(path.read_bytes())
    except OSError:
        return None
    return sha.hexdigest()


def _names_post_quantum(bundle: TrustBundle, key: StateSigningKey) -> bool:
    """Whether ``bundle`` names ``key``'s ML-DSA-44 certificate, or neither has one: the
    two halves of a hybrid signature are taken in together or not at all."""
    named, held = bundle.signing_pq_certificate, key.post_quantum
    if named is None or held is None:
        return named is None and held is None
    return certificate_der(named) == certificate_der(held.certificate)


def _same_keys(a: StateSigningKey, b: StateSigningKey) -> bool:
    pq_a, pq_b = a.post_quantum, b.post_quantum
    return certificate_der(a.certificate) == certificate_der(b.certificate) and (
        (pq_a is None and pq_b is None)
        or (
            pq_a is not None
            and pq_b is not None
            and certificate_der(pq_a.certificate) == certificate_der(pq_b.certificate)
        )
    )


class GatewayReload:
    """Runs one reload at a time over :class:`ReloadSources`."""

    def __init__(self, sources: ReloadSources, *, metrics_registry: CollectorRegistry) -> None:
        self._s = sources
        self._lock = threading.Lock()
        self._reloads = Counter(
            "pouch_reloads",
            "Reloads of the running gateway, by kind (agreements, crl, jwks, "
            "tls_certificate) and result (reloaded, unchanged, refused).",
            ["kind", "result"],
            registry=metrics_registry,
        )
        # What each file held when last taken in, so "changed" means changed since then
        # (a call may already have read a new CRL or JWKS file by itself).
        self._seen: dict[str, str | None] = {
            str(sources.jwks.path): _digest(sources.jwks.path),
            **{str(w.path): _digest(w.path) for w in sources.crls()},
        }
        self._at_start = {str(path): _digest(path) for _, path in sources.restart_only}
        if sources.signing is not None:
            pki = sources.signing.directory
            self._seen["signing_key"] = _digest(pki.signing_cert, pki.signing_key)

    def run(self, *, principal: str) -> ReloadReport:
        """Blocking. Every kind re-read, one event line, metrics and audit entries."""
        with self._lock:
            outcomes = [
                *self._agreements(),
                *(self._crl(watcher) for watcher in self._s.crls()),
                self._jwks(),
                self._tls(),
                *(self._restart_only(kind, path) for kind, path in self._s.restart_only),
                *([] if self._s.signing is None else [self._signing(self._s.signing)]),
            ]
        report = ReloadReport(tuple(outcomes))
        for outcome in report.outcomes:
            self._reloads.labels(outcome.kind, outcome.result.value).inc()
        for outcome in report.refused:
            log.warning(
                "reload refused %s %s: %s; what was in force stays in force",
                outcome.kind,
                outcome.file,
                outcome.rule,
            )
            if self._s.refusal_evidence is not None:
                self._s.refusal_evidence(principal, outcome.reason)
        emit(
            Event.RELOADED,
            by=principal,
            changed=[name for o in report.reloaded for name in (o.changed or (o.kind,))],
            refused=[o.kind for o in report.refused],
            count=len(report.reloaded),
        )
        return report

    def _agreements(self) -> list[ReloadOutcome]:
        registry = self._s.registry
        if registry is None:
            return []
        try:
            changes = registry.reload(all_or_nothing=True)
        except AgreementFileError as e:
            return [
                ReloadOutcome(
                    "agreements",
                    issue.file,
                    ReloadResult.REFUSED,
                    "AGREEMENT_FILE_INVALID",
                    f"line {issue.line}: {issue.path}: {issue.rule}",
                )
                for issue in e.issues
            ]
        if not changes:
            return [ReloadOutcome("agreements", "", ReloadResult.UNCHANGED)]
        new = {*changes.added, *changes.replaced}
        if self._s.evidence is not None:
            self._s.evidence([a for a in registry.list() if a.id in new], {})
        return [
            ReloadOutcome(
                "agreements",
                "",
                ReloadResult.RELOADED,
                changed=tuple(sorted({*new, *changes.removed})),
            )
        ]

    def _crl(self, watcher: CrlWatcher) -> ReloadOutcome:
        path = str(watcher.path)
        try:
            watcher.reload_now()
        except ValueError as e:
            rule = str(e).removeprefix(f"{path}: ")
            return ReloadOutcome("crl", path, ReloadResult.REFUSED, "CRL_INVALID", rule)
        return self._compare("crl", watcher.path)

    def _jwks(self) -> ReloadOutcome:
        path = self._s.jwks.path
        try:
            self._s.jwks.reload_now()
        except InvalidJwks as e:
            return ReloadOutcome("jwks", str(path), ReloadResult.REFUSED, "JWKS_INVALID", str(e))
        return self._compare("jwks", path)

    def _compare(self, kind: str, path: Path) -> ReloadOutcome:
        digest = _digest(path)
        changed = digest != self._seen.get(str(path))
        self._seen[str(path)] = digest
        result = ReloadResult.RELOADED if changed else ReloadResult.UNCHANGED
        return ReloadOutcome(kind, str(path), result)

    def _restart_only(self, kind: str, path: Path) -> ReloadOutcome:
        if _digest(path) == self._at_start[str(path)]:
            return ReloadOutcome(kind, str(path), ReloadResult.UNCHANGED)
        return ReloadOutcome(
            kind,
            str(path),
            ReloadResult.REFUSED,
            "RESTART_REQUIRED",
            "changed since start; it is read at start only, the one read then stays in force",
        )

    def _signing(self, source: SigningKeySource) -> ReloadOutcome:
        pki = source.directory
        pq_files = [p for p in (pki.signing_pq_cert, pki.signing_pq_key) if p.exists()]
        digest = _digest(pki.signing_cert, pki.signing_key, *pq_files)
        if digest == self._seen.get("signing_key"):
            return ReloadOutcome("signing_key", str(pki.signing_cert), ReloadResult.UNCHANGED)
        try:
            key = StateSigningKey.from_state_directory(pki)
            bundle = load_trust_bundle(pki.bundle)
        except (OSError, ValueError) as e:
            return ReloadOutcome(
                "signing_key",
                str(pki.signing_cert),
                ReloadResult.REFUSED,
                "SIGNING_KEY_INVALID",
                str(e),
            )
        if (
            bundle.state != self._s.state
            or certificate_der(bundle.ca_certificate) != certificate_der(self._s.ca_certificate)
            or certificate_der(bundle.signing_certificate) != certificate_der(key.certificate)
            or not _names_post_quantum(bundle, key)
        ):
            return ReloadOutcome(
                "signing_key",
                str(pki.signing_cert),
                ReloadResult.REFUSED,
                "SIGNING_KEY_NOT_ANNOUNCED",
                f"{pki.bundle} (the bundle partners hold) does not name this signing "
                "certificate (ES256, and ML-DSA-44 where held): announce the next bundle "
                "and complete the rotation first",
            )
        self._seen["signing_key"] = digest
        if all(_same_keys(s.in_force, key) for s in source.signers):
            return ReloadOutcome("signing_key", str(pki.signing_cert), ReloadResult.UNCHANGED)
        for signer in source.signers:
            signer.take_over(key)
        if self._s.evidence is not None:
            taken = {"signing": certificate_der(key.certificate)}
            if key.post_quantum is not None:
                taken["signing_pq"] = certificate_der(key.post_quantum.certificate)
            self._s.evidence([], taken)
        return ReloadOutcome("signing_key", str(pki.signing_cert), ReloadResult.RELOADED)

    def _tls(self) -> ReloadOutcome:
        cert_path, key_path = self._s.tls_paths
        try:
            identity = load_tls_identity(
                cert_path,
                key_path,
                ca=self._s.ca_certificate,
                state=self._s.state,
                now=self._s.clock(),
            )
        except TlsIdentityRefused as e:
            return ReloadOutcome(
                "tls_certificate", str(e.path), ReloadResult.REFUSED, "TLS_IDENTITY_INVALID", e.rule
            )
        current = self._s.serving.identity
        if (identity.certificate_pem, identity.key_pem) == (
            current.certificate_pem,
            current.key_pem,
        ):
            return ReloadOutcome("tls_certificate", str(cert_path), ReloadResult.UNCHANGED)
        self._s.serving.replace(identity)
        if self._s.evidence is not None:
            self._s.evidence([], {"gateway_tls": certificate_der(identity.certificate)})
        return ReloadOutcome("tls_certificate", str(cert_path), ReloadResult.RELOADED)
