"""Renewing a state's CA by cross-signing, in the two steps of a key rotation.

1. :func:`prepare_ca_renewal` (``pouch pki renew-ca``, with the old CA key) makes the new
   CA key, written only outside the state directory (``--ca-key-out``), and beside the
   current files, under ``renewal/``:

   * ``ca.crt``: the new CA, self-signed, for the same state (subject ``C=``);
   * ``ca.cross.crt``: the cross certificate, the new CA's subject and public key
     certified by the old CA (a CA, valid within the old CA's validity);
   * every leaf certificate (gateway, signing, audit, witness, their post-quantum twins,
     local clients and servers) re-issued by the new CA for the same key, name,
     extensions and end date, and ``crl.pem`` with the same entries signed by it;

   and ``bundle.next.json``, the next bundle version, signed by the new CA and carrying
   the cross certificate (``ca_cross_certificate``): a partner takes it because the CA it
   pinned certified the new one (:mod:`gateway.pki.bundle_chain`). Nothing the gateway
   reads changes.
2. Once every partner took it (``pouch pki announce``), :func:`complete_ca_renewal`
   moves the current CA certificate, CRL, bundle and leaf certificates to
   ``retired/ca-<serial>/`` and puts the renewed ones in their place; the keys stay.

A state directory that holds ``ca.key`` is refused: the old key would sit beside a CA
certificate it no longer matches. A renewal already prepared, or a key rotation whose
next bundle is pending, is refused until completed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from gateway.pki.authority import StateAuthority
from gateway.pki.bundle import load_trust_bundle, sign_bundle
from gateway.pki.crl import build_crl, crl_pem
from gateway.pki.directory import StateDirectory
from gateway.pki.keys import (
    as_utc,
    certificate_pem,
    load_certificate,
    write_private_key,
    write_public_file,
)
from gateway.pki.rotation import NEXT_BUNDLE, RETIRED

RENEWAL = "renewal"
CROSS_CERTIFICATE = "ca.cross.crt"
NEW_CA_KEY = "ca.key"


@dataclass(frozen=True)
class CaRenewal:
    """What step 1 wrote: the new CA key (outside the state directory), the renewed
    files under ``renewal/`` and the next bundle."""

    ca_key: Path
    renewal: Path
    next_bundle: Path


def _leaf_paths(directory: StateDirectory) -> list[Path]:
    fixed = [
        directory.gateway_cert,
        directory.signing_cert,
        directory.audit_cert,
        directory.witness_cert,
        directory.audit_pq_cert,
        directory.witness_pq_cert,
        directory.signing_pq_cert,
    ]
    issued = [
        path
        for folder in (directory.clients, directory.servers)
        if folder.is_dir()
        for path in sorted(folder.glob("*.crt"))
    ]
    return [path for path in (*fixed, *issued) if path.exists()]


def reissue(
    authority: StateAuthority, certificate: x509.Certificate, now: datetime
) -> x509.Certificate:
    """``certificate`` issued again by ``authority``: the same subject, key, extensions
    and end date (cut to the CA's), a new serial and the new CA's key identifier."""
    ca_ski = authority.ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    builder = (
        x509.CertificateBuilder()
        .subject_name(certificate.subject)
        .issuer_name(authority.ca_cert.subject)
        .public_key(certificate.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(as_utc(now))
        .not_valid_after(
            min(certificate.not_valid_after_utc, authority.ca_cert.not_valid_after_utc)
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski.value),
            critical=False,
        )
    )
    for extension in certificate.extensions:
        if not isinstance(extension.value, x509.AuthorityKeyIdentifier):
            builder = builder.add_extension(extension.value, critical=extension.critical)
    return builder.sign(authority.ca_key, hashes.SHA256())


def cross_certificate(old: StateAuthority, new: StateAuthority, now: datetime) -> x509.Certificate:
    """The new CA's subject and key certified by the old CA, within the old CA's life."""
    old_ski = old.ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    new_ca = new.ca_cert
    return (
        x509.CertificateBuilder()
        .subject_name(new_ca.subject)
        .issuer_name(old.ca_cert.subject)
        .public_key(new_ca.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(max(as_utc(now), old.ca_cert.not_valid_before_utc))
        .not_valid_after(min(new_ca.not_valid_after_utc, old.ca_cert.not_valid_after_utc))
        .add_extension(
            new_ca.extensions.get_extension_for_class(x509.BasicConstraints).value,
            critical=True,
        )
        .add_extension(
            new_ca.extensions.get_extension_for_class(x509.KeyUsage).value, critical=True
        )
        .add_extension(
            new_ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value,
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(old_ski.value),
            critical=False,
        )
        .sign(old.ca_key, hashes.SHA256())
    )


def prepare_ca_renewal(
    state_dir: Path, *, ca_key: Path, ca_key_out: Path, now: datetime
) -> CaRenewal:
    """Step 1: the new CA, its cross certificate, the re-issued leaves and next bundle."""
    directory = StateDirectory(Path(state_dir))
    root = directory.root.resolve()
    out = Path(ca_key_out).resolve()
    if out == root or out.is_relative_to(root):
        raise ValueError(
            f"{ca_key_out} is inside the state directory {directory.root}: the new CA key "
            "is kept offline, outside the directory the gateway reads"
        )
    if directory.ca_key.exists():
        raise ValueError(
            f"{directory.ca_key} exists: move the CA key offline first and name it with "
            "--ca-key, so the old key is not left beside the renewed CA certificate"
        )
    renewal = directory.root / RENEWAL
    next_bundle = directory.root / NEXT_BUNDLE
    for path in (renewal, next_bundle):
        if path.exists():
            raise FileExistsError(
                f"{path} exists: a renewal or rotation is prepared and not completed"
            )
    old = StateAuthority.load(directory.root, ca_key=ca_key)
    new = StateAuthority.create(old.state, now=now)
    cross = cross_certificate(old, new, now)
    current = load_trust_bundle(directory.bundle)
    reissued = {}
    for path in _leaf_paths(directory):
        certificate = load_certificate(path)
        if certificate.not_valid_after_utc <= as_utc(now):
            raise ValueError(f"{path} has expired: issue it anew before renewing the CA")
        reissued[path] = reissue(new, certificate, now)
    crl = x509.load_pem_x509_crl(directory.crl.read_bytes())
    revoked = [(entry.serial_number, entry.revocation_date_utc) for entry in crl]
    # The numbering goes on, so a partner holding the old CA's list takes the new one.
    crl_number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number + 1
    bundle = sign_bundle(
        new,
        signing_certificate=reissued[directory.signing_cert],
        audit_certificate=reissued[directory.audit_cert],
        witness_certificate=reissued[directory.witness_cert],
        audit_pq_certificate=reissued[directory.audit_pq_cert],
        witness_pq_certificate=reissued[directory.witness_pq_cert],
        signing_pq_certificate=(
            None if current.signing_pq_certificate is None else reissued[directory.signing_pq_cert]
        ),
        peer_endpoint=current.peer_endpoint,
        crl_location=current.crl_location,
        # Later than the bundle in force, which partners require of a successor.
        issued_at=max(as_utc(now).replace(microsecond=0), current.issued_at + timedelta(seconds=1)),
        ca_cross_certificate=cross,
    )
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    key_file = out / NEW_CA_KEY
    write_private_key(key_file, new.ca_key, overwrite=False)
    renewal.mkdir(mode=0o700)
    write_public_file(renewal / "ca.crt", certificate_pem(new.ca_cert), overwrite=False)
    write_public_file(renewal / CROSS_CERTIFICATE, certificate_pem(cross), overwrite=False)
    write_public_file(
        renewal / "crl.pem", crl_pem(build_crl(new, revoked, now=now, crl_number=crl_number))
    )
    for path, certificate in reissued.items():
        target = renewal / path.relative_to(directory.root)
        target.parent.mkdir(mode=0o700, exist_ok=True)
        write_public_file(target, certificate_pem(certificate), overwrite=False)
    write_public_file(next_bundle, bundle, overwrite=False)
    return CaRenewal(ca_key=key_file, renewal=renewal, next_bundle=next_bundle)


def complete_ca_renewal(state_dir: Path) -> Path:
    """Step 2: the renewed CA, CRL, leaves and bundle in force; the replaced ones kept
    under ``retired/ca-<serial>/`` (returned)."""
    directory = StateDirectory(Path(state_dir))
    renewal = directory.root / RENEWAL
    next_bundle = directory.root / NEXT_BUNDLE
    for path in (renewal / "ca.crt", renewal / CROSS_CERTIFICATE, next_bundle):
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: no CA renewal is prepared")
    serial = f"{load_certificate(directory.ca_cert).serial_number:x}"
    retired = directory.root / RETIRED / f"ca-{serial}"
    retired.mkdir(mode=0o700, parents=True, exist_ok=True)
    renewed = sorted(p for p in renewal.rglob("*") if p.is_file() and p.name != CROSS_CERTIFICATE)
    # ca.crt last: a completion cut short leaves it under renewal/ and the old serial in
    # force, so running it again moves what is left into the same retired/ folder.
    renewed.sort(key=lambda p: p.name == "ca.crt")
    for source in renewed:
        relative = source.relative_to(renewal)
        current = directory.root / relative
        (retired / relative).parent.mkdir(mode=0o700, exist_ok=True)
        current.replace(retired / relative)
        source.replace(current)
    (renewal / CROSS_CERTIFICATE).replace(retired / CROSS_CERTIFICATE)
    directory.bundle.replace(retired / "bundle.json")
    next_bundle.replace(directory.bundle)
    for folder in sorted((p for p in renewal.rglob("*") if p.is_dir()), reverse=True):
        folder.rmdir()
    renewal.rmdir()
    return retired
