"""Key and certificate files: how they are written, read and fingerprinted.

Guarantees:

* A private key file is never readable by anyone but its owner, not even for an
  instant: it is created with mode 0600 (``os.open(..., 0o600)``) under a temporary
  name in the destination directory, fsynced, and only then renamed into place
  (``os.replace``), so a reader sees either the old file or the complete new one.
* Public files (certificates, CRLs, bundles) are written the same atomic way with
  mode 0644 regardless of the process umask.
* Only the algorithms Pouch uses are accepted when loading a private key: ECDSA
  P-256, Ed25519 and ML-DSA-44. Anything else is refused with :class:`ValueError`.
* Times are timezone-aware: a naive ``datetime`` is a bug and is refused.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, mldsa

PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | mldsa.MLDSA44PrivateKey
PublicKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | mldsa.MLDSA44PublicKey

PRIVATE_FILE_MODE = 0o600
PUBLIC_FILE_MODE = 0o644


def generate_p256_key() -> ec.EllipticCurvePrivateKey:
    """A fresh ECDSA P-256 key: CA, TLS, client and message-signing keys."""
    return ec.generate_private_key(ec.SECP256R1())


def generate_ed25519_key() -> ed25519.Ed25519PrivateKey:
    """A fresh Ed25519 key: the audit-log and witness keys."""
    return ed25519.Ed25519PrivateKey.generate()


def generate_mldsa44_key() -> mldsa.MLDSA44PrivateKey:
    """A fresh ML-DSA-44 key: the post-quantum audit-log, witness and signing keys."""
    return mldsa.MLDSA44PrivateKey.generate()


def as_utc(moment: datetime) -> datetime:
    """``moment`` in UTC; a naive datetime is refused because its zone is a guess."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("a timezone-aware datetime is required (got a naive one)")
    return moment.astimezone(UTC)


def _write_atomically(path: Path, data: bytes, mode: int, *, overwrite: bool) -> None:
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(temporary, flags, mode)
    try:
        try:
            # The umask may have narrowed ``mode``; public files must stay readable.
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        if overwrite:
            temporary.replace(path)
        else:
            # link() fails if ``path`` exists, so a concurrent writer cannot be clobbered.
            try:
                os.link(temporary, path)
            except FileExistsError as e:
                raise FileExistsError(f"refusing to overwrite existing file {path}") from e
            temporary.unlink()
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def private_key_pem(key: PrivateKey) -> bytes:
    """PKCS#8 PEM, unencrypted: file permissions are the protection."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def write_private_key(path: Path, key: PrivateKey, *, overwrite: bool = True) -> None:
    """Write ``key`` as PKCS#8 PEM, mode 0600 from creation, atomically.

    With ``overwrite=False`` an existing file at ``path`` is never replaced
    (:class:`FileExistsError`).
    """
    _write_atomically(Path(path), private_key_pem(key), PRIVATE_FILE_MODE, overwrite=overwrite)


def write_secret_file(path: Path, data: bytes, *, overwrite: bool = False) -> None:
    """Write secret bytes (a symmetric key), mode 0600 from creation, atomically."""
    _write_atomically(Path(path), data, PRIVATE_FILE_MODE, overwrite=overwrite)


def write_public_file(path: Path, data: bytes, *, overwrite: bool = True) -> None:
    """Write a certificate, CRL or bundle, mode 0644, atomically."""
    _write_atomically(Path(path), data, PUBLIC_FILE_MODE, overwrite=overwrite)


def certificate_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def load_private_key(path: Path) -> PrivateKey:
    """Read an unencrypted PEM private key; only ECDSA P-256, Ed25519 and ML-DSA-44."""
    data = Path(path).read_bytes()
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{path}: not an unencrypted PEM private key") from e
    if isinstance(key, ed25519.Ed25519PrivateKey | mldsa.MLDSA44PrivateKey):
        return key
    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
        return key
    raise ValueError(
        f"{path}: private key algorithm not allowed (need ECDSA P-256, Ed25519 or ML-DSA-44)"
    )


def load_certificates_pem(data: bytes) -> list[x509.Certificate]:
    """Every certificate in a PEM blob, in order; at least one, else :class:`ValueError`."""
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError as e:
        raise ValueError("no valid PEM certificate found") from e
    if not certificates:
        raise ValueError("no valid PEM certificate found")
    return certificates


def load_certificate(path: Path) -> x509.Certificate:
    """The single certificate in a PEM file; a file holding several is refused."""
    try:
        certificates = load_certificates_pem(Path(path).read_bytes())
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from e
    if len(certificates) != 1:
        raise ValueError(f"{path}: expected exactly one certificate, found {len(certificates)}")
    return certificates[0]


def certificate_der(cert: x509.Certificate) -> bytes:
    """The certificate's DER encoding (what fingerprints and thumbprints hash)."""
    return cert.public_bytes(serialization.Encoding.DER)


def certificate_fingerprint(cert: x509.Certificate) -> str:
    """``sha256:`` + lowercase hex of the SHA-256 of the certificate's DER."""
    return "sha256:" + hashlib.sha256(certificate_der(cert)).hexdigest()


def x5t_s256(cert: x509.Certificate) -> str:
    """RFC 8705 ``x5t#S256``: base64url (unpadded) SHA-256 of the certificate's DER."""
    digest = hashlib.sha256(certificate_der(cert)).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def seconds_to_expiry(cert: x509.Certificate, now: datetime) -> float:
    """Seconds from ``now`` until ``notAfter``; negative once the certificate expired."""
    return (cert.not_valid_after_utc - as_utc(now)).total_seconds()
