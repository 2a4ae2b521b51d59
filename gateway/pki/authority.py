"""A state's root certificate authority and what it issues.

Guarantees:

* A :class:`StateAuthority` always holds a consistent triple: a valid state code,
  a self-signed CA certificate whose subject ``C=`` is that state and whose
  BasicConstraints say CA, and the ECDSA P-256 private key matching it. Anything
  else fails at construction, so no code path can sign with a mismatched key.
* Every certificate it issues is signed with ECDSA P-256 / SHA-256, has a random
  159-bit serial, the CA's key identifier (AKI), its own SKI, ``digitalSignature``
  key usage, exactly the EKUs asked for, and never outlives the CA.
* Identity lives in SAN URIs built by :mod:`gateway.pki.identity`. The generic
  :meth:`StateAuthority.issue_certificate` deliberately does not check that the
  URIs name this authority's state: tests use it to forge the hostile
  certificates that the gateway must refuse.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.pki.directory import StateDirectory, state_of_ca
from gateway.pki.identity import (
    audit_uri,
    client_uri,
    gateway_uri,
    signing_uri,
    validate_client_name,
    validate_state_code,
    witness_uri,
)
from gateway.pki.keys import (
    PrivateKey,
    PublicKey,
    as_utc,
    generate_ed25519_key,
    generate_mldsa44_key,
    generate_p256_key,
    load_certificate,
    load_private_key,
)

__all__ = [
    "IpAddress",
    "IssuedCertificate",
    "StateAuthority",
    "audit_uri",
    "client_uri",
    "gateway_uri",
    "parse_ip_address",
    "signing_uri",
    "validate_client_name",
    "validate_dns_name",
    "validate_state_code",
]

ORGANIZATION = "Pouch"
CA_VALIDITY_DAYS = 3650
LEAF_VALIDITY_DAYS = 397

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_DNS_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")


def validate_dns_name(name: str) -> str:
    """A lowercase ASCII (A-label) host name, optionally with a leading ``*.``."""
    labels = name.split(".")
    if labels[0] == "*" and len(labels) > 1:
        labels = labels[1:]
    if len(name) > 253 or not all(_DNS_LABEL.fullmatch(label) for label in labels):
        raise ValueError(
            f"invalid DNS name {name!r}: use lowercase ASCII labels of letters, digits "
            "and inner hyphens (IDNA A-labels for international names)"
        )
    return name


def parse_ip_address(address: str | IpAddress) -> IpAddress:
    if isinstance(address, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return address
    try:
        return ipaddress.ip_address(address)
    except ValueError as e:
        raise ValueError(f"invalid IP address {address!r}") from e


@dataclass(frozen=True)
class IssuedCertificate:
    """A new certificate and, unless the caller supplied the public key, its key."""

    certificate: x509.Certificate
    private_key: PrivateKey | None = field(default=None, repr=False)


def _key_usage(*, digital_signature: bool, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


@dataclass(frozen=True)
class StateAuthority:
    state: str
    ca_cert: x509.Certificate
    ca_key: ec.EllipticCurvePrivateKey = field(repr=False)

    def __post_init__(self) -> None:
        validate_state_code(self.state)
        if not isinstance(self.ca_key, ec.EllipticCurvePrivateKey) or not isinstance(
            self.ca_key.curve, ec.SECP256R1
        ):
            raise ValueError("a state CA key must be ECDSA P-256")
        if state_of_ca(self.ca_cert) != self.state:
            raise ValueError(
                f"CA certificate names state {state_of_ca(self.ca_cert)}, not {self.state}"
            )
        if self.ca_cert.public_key() != self.ca_key.public_key():
            raise ValueError("CA private key does not match the CA certificate")
        try:
            constraints = self.ca_cert.extensions.get_extension_for_class(x509.BasicConstraints)
        except x509.ExtensionNotFound as e:
            raise ValueError("CA certificate lacks BasicConstraints") from e
        if not constraints.value.ca:
            raise ValueError("CA certificate's BasicConstraints do not allow it to be a CA")
        try:
            self.ca_cert.verify_directly_issued_by(self.ca_cert)
        except (ValueError, TypeError, InvalidSignature) as e:
            raise ValueError("a state CA certificate must be self-signed") from e

    @classmethod
    def create(
        cls, state: str, *, now: datetime, validity_days: int = CA_VALIDITY_DAYS
    ) -> StateAuthority:
        """A new self-signed root CA for ``state`` (path length 0: it signs leaves only)."""
        validate_state_code(state)
        now = as_utc(now)
        key = generate_p256_key()
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.COUNTRY_NAME, state),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
                x509.NameAttribute(NameOID.COMMON_NAME, f"Pouch state root CA {state}"),
            ]
        )
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + timedelta(days=validity_days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(digital_signature=False, ca=True), critical=True)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .sign(key, hashes.SHA256())
        )
        return cls(state=state, ca_cert=cert, ca_key=key)

    @classmethod
    def load(cls, state_dir: Path, *, ca_key: Path | None = None) -> StateAuthority:
        """The authority of a state directory: its ``ca.crt``, and the CA key from
        ``ca_key`` or else the directory's ``ca.key``.

        A directory made with an offline CA holds no ``ca.key``; without ``ca_key`` it is
        a :class:`ValueError` saying so, and a key that does not match ``ca.crt`` is one
        too (it belongs to another state's CA, or to an older one).
        """
        directory = StateDirectory(Path(state_dir))
        cert = load_certificate(directory.ca_cert)
        key_path = directory.ca_key if ca_key is None else Path(ca_key)
        if ca_key is None and not key_path.exists():
            raise ValueError(
                f"{directory.root} holds no ca.key (its CA is kept offline): bring the CA "
                "key online and name it with --ca-key FILE"
            )
        key = load_private_key(key_path)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{key_path}: a state CA key must be ECDSA P-256")
        if key.public_key() != cert.public_key():
            raise ValueError(f"{key_path}: not the key of the CA certificate {directory.ca_cert}")
        return cls(state=state_of_ca(cert), ca_cert=cert, ca_key=key)

    def issue_server_certificate(
        self,
        name: str,
        *,
        dns_names: Iterable[str],
        ip_addresses: Iterable[str | IpAddress],
        now: datetime,
        validity_days: int = LEAF_VALIDITY_DAYS,
    ) -> IssuedCertificate:
        """A TLS server certificate for an endpoint the gateway calls (a registry or
        adapter): server EKU only and no ``urn:pouch`` identity, so it can neither call
        the gateway nor speak as it. At least one DNS name or IP address: a client checks
        the name it dialled against them."""
        dns = list(dns_names)
        ips = list(ip_addresses)
        if not dns and not ips:
            raise ValueError("a server certificate needs at least one DNS name or IP address")
        return self.issue_certificate(
            common_name=f"Pouch server {validate_client_name(name)}",
            dns_names=dns,
            ip_addresses=ips,
            server_auth=True,
            client_auth=False,
            now=now,
            validity_days=validity_days,
        )

    def _subject(self, common_name: str) -> x509.Name:
        return x509.Name(
            [
                x509.NameAttribute(NameOID.COUNTRY_NAME, self.state),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
                x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            ]
        )

    def issue_certificate(
        self,
        *,
        common_name: str,
        san_uris: Iterable[str] = (),
        dns_names: Iterable[str] = (),
        ip_addresses: Iterable[str | IpAddress] = (),
        server_auth: bool,
        client_auth: bool,
        now: datetime,
        validity_days: int,
        public_key: PublicKey | None = None,
    ) -> IssuedCertificate:
        """Issue a leaf certificate; a P-256 key is generated unless ``public_key`` is given.

        ``now`` may lie in the past (an already-expired certificate) or the
        future (a not-yet-valid one); ``validity_days`` must be positive and the
        certificate may not outlive the CA.
        """
        now = as_utc(now)
        if validity_days <= 0:
            raise ValueError("validity_days must be positive")
        not_after = now + timedelta(days=validity_days)
        if not_after > self.ca_cert.not_valid_after_utc:
            raise ValueError(
                f"certificate would expire {not_after.isoformat()}, after the CA "
                f"({self.ca_cert.not_valid_after_utc.isoformat()}); shorten validity_days"
            )
        private_key: PrivateKey | None = None
        if public_key is None:
            private_key = generate_p256_key()
            public_key = private_key.public_key()
        names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(u) for u in san_uris]
        names += [x509.DNSName(validate_dns_name(d)) for d in dns_names]
        names += [x509.IPAddress(parse_ip_address(a)) for a in ip_addresses]
        ca_ski = self.ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        builder = (
            x509.CertificateBuilder()
            .subject_name(self._subject(common_name))
            .issuer_name(self.ca_cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(digital_signature=True, ca=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski.value),
                critical=False,
            )
        )
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        usages = [ExtendedKeyUsageOID.SERVER_AUTH] if server_auth else []
        usages += [ExtendedKeyUsageOID.CLIENT_AUTH] if client_auth else []
        if usages:
            builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        return IssuedCertificate(builder.sign(self.ca_key, hashes.SHA256()), private_key)

    def issue_gateway_certificate(
        self,
        *,
        dns_names: Iterable[str],
        ip_addresses: Iterable[str | IpAddress],
        now: datetime,
        validity_days: int = LEAF_VALIDITY_DAYS,
    ) -> IssuedCertificate:
        """The gateway's TLS certificate: it serves partners and calls them (mutual TLS)."""
        return self.issue_certificate(
            common_name=f"Pouch gateway {self.state}",
            san_uris=[gateway_uri(self.state)],
            dns_names=dns_names,
            ip_addresses=ip_addresses,
            server_auth=True,
            client_auth=True,
            now=now,
            validity_days=validity_days,
        )

    def issue_client_certificate(
        self, name: str, *, now: datetime, validity_days: int = LEAF_VALIDITY_DAYS
    ) -> IssuedCertificate:
        """A local caller's client certificate (client EKU only)."""
        return self.issue_certificate(
            common_name=f"Pouch client {validate_client_name(name)}",
            san_uris=[client_uri(self.state, name)],
            server_auth=False,
            client_auth=True,
            now=now,
            validity_days=validity_days,
        )

    def issue_signing_certificate(
        self,
        *,
        now: datetime,
        validity_days: int = LEAF_VALIDITY_DAYS,
        post_quantum: bool = False,
    ) -> IssuedCertificate:
        """The message-signing key's certificate (no TLS EKU: it cannot authenticate TLS);
        with ``post_quantum``, a new ML-DSA-44 key's, for hybrid signatures."""
        key = generate_mldsa44_key() if post_quantum else None
        issued = self.issue_certificate(
            common_name=f"Pouch message signing{' ML-DSA-44' if post_quantum else ''} {self.state}",
            san_uris=[signing_uri(self.state)],
            server_auth=False,
            client_auth=False,
            now=now,
            validity_days=validity_days,
            public_key=None if key is None else key.public_key(),
        )
        return issued if key is None else IssuedCertificate(issued.certificate, key)

    def issue_audit_certificate(
        self,
        *,
        now: datetime,
        validity_days: int = LEAF_VALIDITY_DAYS,
        witness: bool = False,
        post_quantum: bool = False,
    ) -> IssuedCertificate:
        """A new key and its certificate: the audit log's (it signs the state's
        checkpoints) or, with ``witness``, the witness's (it cosigns partners'
        checkpoints). The two are never one key. Ed25519, or ML-DSA-44 with
        ``post_quantum``."""
        key: PrivateKey = generate_mldsa44_key() if post_quantum else generate_ed25519_key()
        role = "witness" if witness else "audit log"
        issued = self.issue_certificate(
            common_name=f"Pouch {role}{' ML-DSA-44' if post_quantum else ''} {self.state}",
            san_uris=[witness_uri(self.state) if witness else audit_uri(self.state)],
            server_auth=False,
            client_auth=False,
            now=now,
            validity_days=validity_days,
            public_key=key.public_key(),
        )
        return IssuedCertificate(issued.certificate, key)
