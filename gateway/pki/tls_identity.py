"""The gateway's TLS identity (certificate and key), checked before it is served.

A reload of a running gateway offers a new ``gateway.crt``/``gateway.key`` pair;
:func:`load_tls_identity` accepts it only if every rule holds, else raises
:class:`TlsIdentityRefused` naming the file and the rule, so the identity in force
stays:

1. the certificate file holds one PEM certificate, valid now;
2. it was issued by the state CA;
3. its SAN URI is this state's gateway (``urn:pouch:state:<CC>:gateway``);
4. the key file holds an unencrypted PEM private key matching the certificate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from gateway.pki.identity import gateway_uri
from gateway.pki.keys import as_utc, certificate_pem, load_certificate, load_private_key


class TlsIdentityRefused(ValueError):
    """A certificate or key file breaks a rule; :attr:`path` names the file."""

    def __init__(self, path: Path, rule: str) -> None:
        self.path = path
        self.rule = rule
        super().__init__(f"{path}: {rule}")


@dataclass(frozen=True)
class TlsIdentity:
    """A checked certificate and its key, as PEM for the TLS stack."""

    certificate: x509.Certificate
    certificate_pem: bytes
    key_pem: bytes = field(repr=False)


def load_tls_identity(
    certificate_path: Path,
    key_path: Path,
    *,
    ca: x509.Certificate,
    state: str,
    now: datetime,
) -> TlsIdentity:
    """The pair at these paths, or :class:`TlsIdentityRefused`."""
    try:
        certificate = load_certificate(certificate_path)
    except OSError as e:
        raise TlsIdentityRefused(certificate_path, f"cannot read: {e.strerror}") from e
    except ValueError as e:
        raise TlsIdentityRefused(
            certificate_path, "not a PEM file holding exactly one certificate"
        ) from e
    now = as_utc(now)
    if certificate.not_valid_after_utc <= now:
        raise TlsIdentityRefused(
            certificate_path, f"the certificate expired on {certificate.not_valid_after_utc}"
        )
    if certificate.not_valid_before_utc > now:
        raise TlsIdentityRefused(
            certificate_path,
            f"the certificate is not valid before {certificate.not_valid_before_utc}",
        )
    try:
        certificate.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature) as e:
        raise TlsIdentityRefused(
            certificate_path, "the certificate is not issued by the state CA"
        ) from e
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        uris = san.value.get_values_for_type(x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        uris = []
    if gateway_uri(state) not in uris:
        raise TlsIdentityRefused(
            certificate_path, f"the certificate does not name {gateway_uri(state)}"
        )
    try:
        key_pem = key_path.read_bytes()
        key = load_private_key(key_path)
    except OSError as e:
        raise TlsIdentityRefused(key_path, f"cannot read: {e.strerror}") from e
    except ValueError as e:
        raise TlsIdentityRefused(key_path, "not an unencrypted PEM private key") from e
    if key.public_key() != certificate.public_key():
        raise TlsIdentityRefused(key_path, f"the key does not match {certificate_path}")
    return TlsIdentity(certificate, certificate_pem(certificate), key_pem)
