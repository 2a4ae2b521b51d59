"""Rotating one of a state's keys without dropping traffic, in two steps.

1. :func:`prepare_rotation` (``pouch pki rotate``, with the CA key) issues the next key
   and certificate beside the current ones (``signing.next.key/.crt``,
   ``audit.next.key/.crt``, ``gateway.next.key/.crt``) and, for a key partners know from
   the bundle (signing, audit), signs the next bundle version with it
   (``bundle.next.json``, issued now, the same CA, endpoint and CRL location). A state
   holding an ML-DSA-44 message-signing key (``signing-pq.key/.crt``) rotates it with the
   ES256 one (``signing-pq.next.key/.crt``), and the next bundle names both: a hybrid
   signature's two halves are always made by keys of one bundle. Nothing the gateway
   reads changes: the current keys keep signing.
2. Once every partner has taken the next bundle (``PeerService.AnnounceBundle``; a
   partner verifies the old and the new signing key during its overlap window),
   :func:`complete_rotation` moves the current key(s) and certificate(s) aside to ``retired/``
   (named by the certificate's serial number, kept to check old evidence against), puts
   the next ones in their place and makes ``bundle.next.json`` the state's
   ``bundle.json``. A reload then signs with the new key.

The TLS certificate is not in the bundle: partners trust it through the unchanged CA,
so its rotation needs no announcement, only step 2 and a reload (which serves it to new
connections).

A rotation already prepared is refused (:class:`FileExistsError`) until completed, so
a second run cannot replace a bundle partners may already hold.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

from cryptography import x509

from gateway.pki.authority import IssuedCertificate, StateAuthority
from gateway.pki.bundle import BundleError, TrustBundle, load_trust_bundle, sign_bundle
from gateway.pki.directory import StateDirectory
from gateway.pki.keys import (
    as_utc,
    certificate_der,
    certificate_pem,
    load_certificate,
    write_private_key,
    write_public_file,
)

NEXT_BUNDLE = "bundle.next.json"
RETIRED = "retired"


class RotatedKey(StrEnum):
    SIGNING = "signing"
    AUDIT = "audit"
    TLS = "tls"


@dataclass(frozen=True)
class RotationFiles:
    """Where a key's current and next files lie, and whether partners must be told."""

    current_cert: Path
    current_key: Path
    next_cert: Path
    next_key: Path
    next_bundle: Path | None
    # The ML-DSA-44 signing key rotated with the ES256 one, where the state holds it.
    post_quantum: RotationFiles | None = None


def _next_files(cert: Path, key: Path, next_bundle: Path | None) -> RotationFiles:
    return RotationFiles(
        current_cert=cert,
        current_key=key,
        next_cert=cert.with_suffix(".next.crt"),
        next_key=key.with_suffix(".next.key"),
        next_bundle=next_bundle,
    )


def rotation_files(directory: StateDirectory, what: RotatedKey) -> RotationFiles:
    cert, key = {
        RotatedKey.SIGNING: (directory.signing_cert, directory.signing_key),
        RotatedKey.AUDIT: (directory.audit_cert, directory.audit_key),
        RotatedKey.TLS: (directory.gateway_cert, directory.gateway_key),
    }[what]
    announced = what is not RotatedKey.TLS
    files = _next_files(cert, key, directory.root / NEXT_BUNDLE if announced else None)
    pq_cert, pq_key = directory.signing_pq_cert, directory.signing_pq_key
    if what is RotatedKey.SIGNING and (pq_cert.exists() or pq_key.exists()):
        return replace(files, post_quantum=_next_files(pq_cert, pq_key, None))
    return files


def _key_files(files: RotationFiles) -> tuple[RotationFiles, ...]:
    return (files,) if files.post_quantum is None else (files, files.post_quantum)


def _next_certificate(
    authority: StateAuthority, what: RotatedKey, current: x509.Certificate, now: datetime
) -> IssuedCertificate:
    if what is RotatedKey.SIGNING:
        return authority.issue_signing_certificate(now=now)
    if what is RotatedKey.AUDIT:
        return authority.issue_audit_certificate(now=now)
    try:
        san = current.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound as e:
        raise ValueError("the current gateway certificate names no host") from e
    return authority.issue_gateway_certificate(
        dns_names=san.get_values_for_type(x509.DNSName),
        ip_addresses=[
            a
            for a in san.get_values_for_type(x509.IPAddress)
            if isinstance(a, IPv4Address | IPv6Address)
        ],
        now=now,
    )


def prepare_rotation(
    state_dir: Path, what: RotatedKey, *, now: datetime, ca_key: Path | None = None
) -> RotationFiles:
    """Step 1: the next key, its certificate and (signing, audit) the next bundle."""
    directory = StateDirectory(Path(state_dir))
    files = rotation_files(directory, what)
    # One bundle version at a time: a signing and an audit rotation follow each other.
    pending = [p for f in _key_files(files) for p in (f.next_cert, f.next_key)]
    for path in [*pending, *([files.next_bundle] if files.next_bundle else [])]:
        if path.exists():
            raise FileExistsError(
                f"{path} exists: a rotation is prepared and not completed "
                "(pouch pki rotate --complete)"
            )
    authority = StateAuthority.load(directory.root, ca_key=ca_key)
    issued = _next_certificate(authority, what, load_certificate(files.current_cert), now)
    if issued.private_key is None:
        raise ValueError("issued certificate has no private key to store")
    write_private_key(files.next_key, issued.private_key, overwrite=False)
    write_public_file(files.next_cert, certificate_pem(issued.certificate), overwrite=False)
    next_pq: x509.Certificate | None = None
    if files.post_quantum is not None:
        issued_pq = authority.issue_signing_certificate(now=now, post_quantum=True)
        if issued_pq.private_key is None:
            raise ValueError("issued certificate has no private key to store")
        write_private_key(files.post_quantum.next_key, issued_pq.private_key, overwrite=False)
        write_public_file(
            files.post_quantum.next_cert, certificate_pem(issued_pq.certificate), overwrite=False
        )
        next_pq = issued_pq.certificate
    if files.next_bundle is not None:
        current = load_trust_bundle(directory.bundle)
        certificates = {
            "signing_certificate": current.signing_certificate,
            "audit_certificate": current.audit_certificate,
            f"{what.value}_certificate": issued.certificate,
        }
        bundle = sign_bundle(
            authority,
            **certificates,
            witness_certificate=current.witness_certificate,
            audit_pq_certificate=current.audit_pq_certificate,
            witness_pq_certificate=current.witness_pq_certificate,
            signing_pq_certificate=next_pq or current.signing_pq_certificate,
            peer_endpoint=current.peer_endpoint,
            crl_location=current.crl_location,
            # Later than the bundle in force, which partners require of a successor.
            issued_at=max(
                as_utc(now).replace(microsecond=0), current.issued_at + timedelta(seconds=1)
            ),
        )
        write_public_file(files.next_bundle, bundle, overwrite=False)
    return files


def complete_rotation(state_dir: Path, what: RotatedKey) -> Path:
    """Step 2: retire the current key(s) (returns where the ES256 or audit or TLS
    certificate went) and put the next in force."""
    directory = StateDirectory(Path(state_dir))
    files = _prepared(directory, rotation_files(directory, what))
    pending = [p for f in _key_files(files) for p in (f.next_cert, f.next_key)]
    for path in [*pending, files.next_bundle]:
        if path is not None and not path.exists():
            raise FileNotFoundError(f"{path} is missing: no rotation of {what} is prepared")
    retired = directory.root / RETIRED
    retired.mkdir(mode=0o700, exist_ok=True)
    serial = f"{load_certificate(files.current_cert).serial_number:x}"
    kept = [_retire(f, retired) for f in _key_files(files)]
    if files.next_bundle is not None:
        directory.bundle.replace(retired / f"bundle-{serial}.json")
        files.next_bundle.replace(directory.bundle)
    return kept[0]


def _prepared(directory: StateDirectory, files: RotationFiles) -> RotationFiles:
    """``files`` without the ML-DSA-44 key when the rotation was prepared without it (by
    a release that rotated the ES256 key alone): no next ML-DSA-44 files, and the next
    bundle names the ML-DSA-44 certificate in force, so it stays."""
    pq = files.post_quantum
    if pq is None or files.next_bundle is None or not files.next_bundle.exists():
        return files
    if pq.next_cert.exists() or pq.next_key.exists() or not pq.current_cert.exists():
        return files
    named = load_trust_bundle(files.next_bundle).signing_pq_certificate
    current = load_certificate(pq.current_cert)
    if named is None or certificate_der(named) != certificate_der(current):
        return files
    return replace(files, post_quantum=None)


def _retire(files: RotationFiles, retired: Path) -> Path:
    serial = f"{load_certificate(files.current_cert).serial_number:x}"
    kept_cert = retired / f"{files.current_cert.stem}-{serial}.crt"
    kept_key = retired / f"{files.current_key.stem}-{serial}.key"
    # Renames in an order that never leaves a certificate beside a key not its own.
    files.current_cert.replace(kept_cert)
    files.current_key.replace(kept_key)
    files.next_key.replace(files.current_key)
    files.next_cert.replace(files.current_cert)
    return kept_cert


def retired_bundles(directory: StateDirectory) -> tuple[TrustBundle, ...]:
    """The state's earlier bundle versions (``retired/bundle-*.json``, and those of a
    renewed CA under ``retired/ca-*/``), each signed by the CA of its current bundle or
    by a CA retired beside it: the agreements signed before a rotation pin one of them,
    and keep verifying with the signing key it names."""
    current = load_trust_bundle(directory.bundle)
    retired = directory.root / RETIRED
    cas = {certificate_der(current.ca_certificate)} | {
        certificate_der(load_certificate(path)) for path in sorted(retired.glob("ca-*/ca.crt"))
    }
    kept = []
    paths = [*retired.glob("bundle-*.json"), *retired.glob("ca-*/bundle*.json")]
    for path in sorted(paths):
        try:
            bundle = load_trust_bundle(path)
        except BundleError as e:
            raise BundleError(f"{path}: {e}") from e
        if certificate_der(bundle.ca_certificate) not in cas:
            raise BundleError(f"{path}: signed by another CA than {directory.bundle}")
        kept.append(bundle)
    return tuple(kept)
