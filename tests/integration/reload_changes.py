"""What an operator changes on disk before a reload, and how to see it took effect.

Each helper writes one kind of new file into a prepared site the way an operator
would (a new agreement, a revoked certificate, a new identity-provider key, a new TLS
certificate), or a broken one, and returns what a test needs to observe the change
through the gateway's own listeners.
"""

from __future__ import annotations

import json
import socket
import ssl
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509

from gateway.pki.authority import StateAuthority
from gateway.pki.crl import revoke
from gateway.pki.idp import create_development_idp, mint_token
from gateway.pki.keys import certificate_pem, generate_p256_key, private_key_pem
from gateway.pki.layout import issue_client
from pouch_devtools.demo.deployment import Site
from tests.integration.exchange_fixtures import write_agreement


def add_agreement(agreement_id: str, first: Site, second: Site) -> None:
    """A second agreement between the two sites, signed by both, in both directories."""
    both = [first, second]
    write_agreement(
        agreement_id, first, second, today=datetime.now(UTC).date(), holders=both, signers=both
    )


def revoke_new_client(site: Site, name: str) -> tuple[bytes, bytes]:
    """A client certificate issued and then revoked on the site's CRL: (chain, key)."""
    cert_path, key_path = issue_client(site.pki.root, name, now=datetime.now(UTC))
    chain = cert_path.read_bytes()
    serial = x509.load_pem_x509_certificate(chain).serial_number
    revoke(site.pki.root, serial, now=datetime.now(UTC))
    return chain, key_path.read_bytes()


@dataclass(frozen=True)
class SecondIdpKey:
    """An identity-provider key published beside the first in the site's JWKS."""

    site: Site
    key_path: Path

    def token(self, scopes: list[str]) -> str:
        return mint_token(
            key_path=self.key_path,
            jwks_path=self.site.idp.jwks_path,
            issuer=self.site.issuer,
            audience=self.site.audience,
            subject=f"operator@{self.site.state.lower()}",
            scopes=scopes,
            client_cert_pem=self.site.pki.client_cert("operator").read_bytes(),
            lifetime_s=600,
            now=time.time(),
        )


def publish_second_idp_key(site: Site, workdir: Path) -> SecondIdpKey:
    second = create_development_idp(workdir / f"idp-{site.state}-second", kid="second-key")
    jwks = json.loads(site.idp.jwks_path.read_text())
    jwks["keys"] += json.loads(second.jwks_path.read_text())["keys"]
    staging = site.idp.jwks_path.with_suffix(".new")
    staging.write_text(json.dumps(jwks, indent=2) + "\n")
    staging.replace(site.idp.jwks_path)
    return SecondIdpKey(site, second.key_path)


def replace_tls_certificate(site: Site) -> int:
    """A new gateway certificate and key from the state CA in place; its serial."""
    issued = StateAuthority.load(site.pki.root).issue_gateway_certificate(
        dns_names=["localhost"], ip_addresses=["127.0.0.1"], now=datetime.now(UTC)
    )
    assert issued.private_key is not None
    _replace(site.pki.gateway_key, private_key_pem(issued.private_key))
    _replace(site.pki.gateway_cert, certificate_pem(issued.certificate))
    return issued.certificate.serial_number


def mismatched_tls_key(site: Site) -> None:
    """A key in gateway.key that is not the certificate's."""
    _replace(site.pki.gateway_key, private_key_pem(generate_p256_key()))


def _replace(path: Path, data: bytes) -> None:
    staging = path.with_suffix(".new")
    staging.write_bytes(data)
    staging.chmod(path.stat().st_mode & 0o777)
    staging.replace(path)


def served_certificate_serial(site: Site, target: str) -> int:
    """The serial of the certificate ``target`` presents to a new TLS connection of the
    site's operator (mutual TLS, as a gRPC client would)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cafile=str(site.pki.ca_cert))
    context.load_cert_chain(
        str(site.pki.client_cert("operator")), str(site.pki.client_key("operator"))
    )
    context.set_alpn_protocols(["h2"])
    host, port = target.rsplit(":", 1)
    with (
        socket.create_connection((host, int(port)), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number
