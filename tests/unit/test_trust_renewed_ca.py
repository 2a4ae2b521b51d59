"""A partner's renewed CA, as the peer listener's identifier and a CRL watcher see it:
trusted from the moment its bundle is taken, the replaced CA only through the overlap,
even for a certificate the identifier remembers."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509

from gateway.pki import StateAuthority
from gateway.pki.crl import CrlWatcher, build_crl, crl_pem
from gateway.pki.keys import certificate_pem
from gateway.trust.peer import CertificateIdentifier, PeerRejected, TrustAnchor

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def _gateway_pem(authority: StateAuthority) -> bytes:
    issued = authority.issue_gateway_certificate(dns_names=[], ip_addresses=["127.0.0.1"], now=NOW)
    return certificate_pem(issued.certificate)


def test_a_remembered_certificate_of_the_replaced_ca_is_refused_once_its_overlap_ends() -> None:
    old, new = StateAuthority.create("BE", now=NOW), StateAuthority.create("BE", now=NOW)
    trusted: list[tuple[x509.Certificate, ...]] = [(new.ca_cert, old.ca_cert)]
    anchor = TrustAnchor("BE", old.ca_cert, None, lambda: trusted[0])
    identifier = CertificateIdentifier({"BE": anchor}, clock=lambda: NOW)
    old_pem, new_pem = _gateway_pem(old), _gateway_pem(new)
    assert identifier.identify_gateway(old_pem).state == "BE"
    assert identifier.identify_gateway(new_pem).state == "BE"

    trusted[0] = (new.ca_cert,)

    assert identifier.identify_gateway(new_pem).state == "BE"
    with pytest.raises(PeerRejected) as refused:
        identifier.identify_gateway(old_pem)
    assert refused.value.reason == "UNKNOWN_ISSUER"


def test_a_crl_of_the_renewed_ca_is_taken_only_once_that_ca_is_trusted(tmp_path: Path) -> None:
    old, new = StateAuthority.create("BE", now=NOW), StateAuthority.create("BE", now=NOW)
    path = tmp_path / "crl.pem"
    path.write_bytes(crl_pem(build_crl(old, [], now=NOW)))
    trusted: list[tuple[x509.Certificate, ...]] = [(old.ca_cert,)]
    watcher = CrlWatcher(path, old.ca_cert, issuers=lambda: trusted[0], clock=lambda: NOW)
    renewed_list = crl_pem(build_crl(new, [(7, NOW)], now=NOW, crl_number=2))

    path.write_bytes(renewed_list)
    with pytest.raises(ValueError):
        watcher.reload_now()
    assert not watcher.current().is_revoked(7)

    trusted[0] = (new.ca_cert, old.ca_cert)
    assert watcher.reload_now()
    assert watcher.current().is_revoked(7)
