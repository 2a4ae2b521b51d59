"""Who is calling: a TLS client certificate becomes a state, or is refused.

A certificate that chains to state X's CA can only ever speak as X. The peer
listener trusts the merged CA certificates of all partners at the TLS layer, so the
handshake alone proves only that *some* partner CA issued the certificate. This
module finds the one pinned CA that issued it directly, takes the state from that
CA (never from the certificate), checks that the certificate's SAN URI names the
same state's gateway, that it is within its validity period, and that the issuing
state's current CRL does not list it. Reading the SAN alone would let one partner
impersonate another.

A CRL past its ``nextUpdate`` and the configured grace proves nothing about any
certificate, so every certificate of that CA is then refused with ``CRL_STALE``
(:class:`~gateway.pki.crl.CrlStale`, UNAVAILABLE: the caller is not at fault and the
same call succeeds once a fresh CRL is on disk, read without a restart).

A partner that renewed its CA by cross-signing has two CAs for a while: an anchor's
``trusted_now`` names the CAs in force at each call (the bundle in force and those in
their overlap window, :meth:`~gateway.pki.bundle_chain.PartnerBundles.trusted_cas`), so
a taken bundle's new CA is trusted at once and the replaced one only until its overlap
ends; a certificate remembered as issued by a CA no longer trusted is refused.

The same checks, against the gateway's own CA, identify local callers.

What depends on the certificate alone (its issuing anchor, found by verifying the
signature, its SAN URIs, DER and fingerprint) is remembered per presented PEM, for a
bounded number of certificates; the validity period and the CRL are checked on every
call.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from gateway.errors import AuthenticationRejected
from gateway.pki.crl import CrlWatcher
from gateway.pki.keys import certificate_der, certificate_fingerprint

_GATEWAY_URI = re.compile(r"^urn:pouch:state:(?P<state>[A-Z]{2}):gateway$")
_CLIENT_URI = re.compile(r"^urn:pouch:state:(?P<state>[A-Z]{2}):client:(?P<name>[a-z0-9-]+)$")


@dataclass(frozen=True)
class TrustAnchor:
    """One state's CA as pinned from its trust bundle, with its revocation list;
    ``trusted_now``, when given, replaces the pinned CA by the CAs it names at each call."""

    state: str
    ca_certificate: x509.Certificate
    crl: CrlWatcher | None
    trusted_now: Callable[[], tuple[x509.Certificate, ...]] | None = None

    def certificate_authorities(self) -> tuple[x509.Certificate, ...]:
        """The CAs whose certificates speak as :attr:`state` now."""
        if self.trusted_now is None:
            return (self.ca_certificate,)
        return self.trusted_now()


@dataclass(frozen=True)
class AuthenticatedPeer:
    """A partner gateway whose certificate was issued by its own state's CA."""

    state: str
    certificate_fingerprint: str
    serial: int


@dataclass(frozen=True)
class AuthenticatedClient:
    """A local caller holding a client certificate of this gateway's own state."""

    state: str
    name: str
    certificate_der: bytes
    certificate_fingerprint: str


class PeerRejected(AuthenticationRejected):
    """A certificate that may not speak on this listener; ``reason`` says why."""


def parse_certificate(pem: bytes | None) -> x509.Certificate:
    if not pem:
        raise PeerRejected("no client certificate was presented", reason="NO_CLIENT_CERTIFICATE")
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError as e:
        raise PeerRejected("client certificate is malformed", reason="MALFORMED_CERTIFICATE") from e


def _san_uris(certificate: x509.Certificate) -> list[str]:
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return san.value.get_values_for_type(x509.UniformResourceIdentifier)


def _issued_by(certificate: x509.Certificate, ca: x509.Certificate) -> bool:
    if certificate.issuer != ca.subject:
        return False
    try:
        certificate.verify_directly_issued_by(ca)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


@dataclass(frozen=True)
class _Issued:
    """What a certificate says of itself once its issuing anchor is known."""

    certificate: x509.Certificate
    anchor: TrustAnchor
    issuer_der: bytes
    san_uris: tuple[str, ...]
    der: bytes
    fingerprint: str


_REMEMBERED_CERTIFICATES = 4096


class CertificateIdentifier:
    """Maps a presented certificate to its state, using only pinned anchors.

    With no anchors at all, every certificate is refused.
    """

    def __init__(
        self, anchors: Mapping[str, TrustAnchor], *, clock: Callable[[], datetime]
    ) -> None:
        self._anchors = dict(anchors)
        self._clock = clock
        # A refusal raises, so only certificates that passed these checks are remembered.
        self._issued_for = functools.lru_cache(maxsize=_REMEMBERED_CERTIFICATES)(self._issue)

    def _issue(self, pem: bytes | None) -> _Issued:
        certificate = parse_certificate(pem)
        anchor, issuer = self._anchor_for(certificate)
        return _Issued(
            certificate=certificate,
            anchor=anchor,
            issuer_der=certificate_der(issuer),
            san_uris=tuple(_san_uris(certificate)),
            der=certificate_der(certificate),
            fingerprint=certificate_fingerprint(certificate),
        )

    def _anchor_for(self, certificate: x509.Certificate) -> tuple[TrustAnchor, x509.Certificate]:
        for anchor in self._anchors.values():
            for ca in anchor.certificate_authorities():
                if _issued_by(certificate, ca):
                    return anchor, ca
        raise PeerRejected(
            "certificate was not issued by any trusted state CA", reason="UNKNOWN_ISSUER"
        )

    def _check_current(self, issued: _Issued) -> None:
        certificate, anchor = issued.certificate, issued.anchor
        if anchor.trusted_now is not None and issued.issuer_der not in {
            certificate_der(ca) for ca in anchor.certificate_authorities()
        }:
            # Remembered from before: its CA was replaced and its overlap is over.
            raise PeerRejected(
                "certificate was not issued by any trusted state CA", reason="UNKNOWN_ISSUER"
            )
        now = self._clock()
        if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
            raise PeerRejected("certificate is outside its validity period", reason="EXPIRED")
        if anchor.crl is not None and anchor.crl.in_force().is_revoked(certificate.serial_number):
            raise PeerRejected("certificate has been revoked", reason="REVOKED")

    def identify_gateway(self, pem: bytes | None) -> AuthenticatedPeer:
        """The partner gateway behind ``pem``, or :class:`PeerRejected`."""
        issued = self._issued_for(pem)
        certificate, anchor = issued.certificate, issued.anchor
        claimed = {m["state"] for u in issued.san_uris if (m := _GATEWAY_URI.match(u))}
        if claimed != {anchor.state}:
            raise PeerRejected(
                f"certificate issued by the CA of {anchor.state} must name exactly that "
                "state's gateway in its SAN",
                reason="SAN_MISMATCH",
            )
        self._check_current(issued)
        return AuthenticatedPeer(
            state=anchor.state,
            certificate_fingerprint=issued.fingerprint,
            serial=certificate.serial_number,
        )

    def identify_client(self, pem: bytes | None) -> AuthenticatedClient:
        """The local caller behind ``pem``, or :class:`PeerRejected`."""
        issued = self._issued_for(pem)
        anchor = issued.anchor
        names = [
            m["name"]
            for u in issued.san_uris
            if (m := _CLIENT_URI.match(u)) and m["state"] == anchor.state
        ]
        if len(names) != 1:
            raise PeerRejected(
                "certificate is not a local caller certificate of this state",
                reason="NOT_A_CLIENT_CERTIFICATE",
            )
        self._check_current(issued)
        return AuthenticatedClient(
            state=anchor.state,
            name=names[0],
            certificate_der=issued.der,
            certificate_fingerprint=issued.fingerprint,
        )
