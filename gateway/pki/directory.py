"""Where each file of a state's PKI lives inside its state directory.

Guarantees: every module that reads or writes a state directory gets its paths
from :class:`StateDirectory`, so there is one spelling of each file name; client
paths are only built from validated client names, so a name cannot escape
``clients/``. This module reads, it never writes.

Layout::

    ca.crt ca.key                 the state's root CA
    gateway.crt gateway.key       gateway TLS certificate (server and client use)
    signing.crt signing.key       message-signing key (ECDSA P-256, JWS ES256)
    audit.crt audit.key           audit-log key (Ed25519): signs this state's checkpoints
    witness.crt witness.key       witness key (Ed25519): cosigns partners' checkpoints
    audit-pq.crt audit-pq.key     post-quantum audit-log key (ML-DSA-44)
    witness-pq.crt witness-pq.key post-quantum witness key (ML-DSA-44)
    signing-pq.crt signing-pq.key post-quantum message-signing key (ML-DSA-44), for
                                  agreements that ask for hybrid signatures
    crl.pem                       the CA's CRL
    bundle.json                   the signed trust bundle handed to partners
    clients/<name>.crt|.key       local callers' client certificates
    servers/<name>.crt|.key       TLS servers the gateway calls (a registry, an adapter)
    bundle.next.json              the next bundle version, prepared and not yet in force
    renewal/                      a CA renewal prepared (pouch pki renew-ca): the new
                                  CA, its cross certificate, the re-issued certificates
    retired/                      replaced keys, certificates and bundles (ca-<serial>/
                                  for a renewed CA's)

``ca.key`` is absent from a directory made with an offline CA (``pouch pki init
--offline-ca``): the gateway reads only ``ca.crt`` and ``crl.pem``; the commands that
sign (issue, revoke, refresh the CRL, upgrade) are given the key where it is kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import NameOID

from gateway.pki.identity import validate_client_name, validate_state_code
from gateway.pki.keys import load_certificate


def state_of_ca(ca_cert: x509.Certificate) -> str:
    """The state a CA certificate names in its subject ``C=``; exactly one, valid."""
    values = ca_cert.subject.get_attributes_for_oid(NameOID.COUNTRY_NAME)
    if len(values) != 1 or not isinstance(values[0].value, str):
        raise ValueError("CA certificate subject must carry exactly one C= (the state code)")
    return validate_state_code(values[0].value)


@dataclass(frozen=True)
class StateDirectory:
    root: Path

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.root / "ca.key"

    @property
    def gateway_cert(self) -> Path:
        return self.root / "gateway.crt"

    @property
    def gateway_key(self) -> Path:
        return self.root / "gateway.key"

    @property
    def signing_cert(self) -> Path:
        return self.root / "signing.crt"

    @property
    def signing_key(self) -> Path:
        return self.root / "signing.key"

    @property
    def audit_cert(self) -> Path:
        return self.root / "audit.crt"

    @property
    def audit_key(self) -> Path:
        return self.root / "audit.key"

    @property
    def witness_cert(self) -> Path:
        return self.root / "witness.crt"

    @property
    def witness_key(self) -> Path:
        return self.root / "witness.key"

    @property
    def audit_pq_cert(self) -> Path:
        return self.root / "audit-pq.crt"

    @property
    def audit_pq_key(self) -> Path:
        return self.root / "audit-pq.key"

    @property
    def witness_pq_cert(self) -> Path:
        return self.root / "witness-pq.crt"

    @property
    def witness_pq_key(self) -> Path:
        return self.root / "witness-pq.key"

    @property
    def signing_pq_cert(self) -> Path:
        return self.root / "signing-pq.crt"

    @property
    def signing_pq_key(self) -> Path:
        return self.root / "signing-pq.key"

    def key_pairs(self) -> dict[str, tuple[Path, Path]]:
        """The certificate and private key of each role the gateway acts in, by role name
        (as audit entries name them); the ML-DSA-44 signing key only where the state has
        its certificate, since hybrid message signatures are optional."""
        pairs = {
            "gateway_tls": (self.gateway_cert, self.gateway_key),
            "signing": (self.signing_cert, self.signing_key),
            "audit": (self.audit_cert, self.audit_key),
            "witness": (self.witness_cert, self.witness_key),
            "audit_pq": (self.audit_pq_cert, self.audit_pq_key),
            "witness_pq": (self.witness_pq_cert, self.witness_pq_key),
        }
        if self.signing_pq_cert.exists():
            pairs["signing_pq"] = (self.signing_pq_cert, self.signing_pq_key)
        return pairs

    @property
    def crl(self) -> Path:
        return self.root / "crl.pem"

    @property
    def bundle(self) -> Path:
        return self.root / "bundle.json"

    @property
    def clients(self) -> Path:
        return self.root / "clients"

    def client_cert(self, name: str) -> Path:
        return self.clients / f"{validate_client_name(name)}.crt"

    def client_key(self, name: str) -> Path:
        return self.clients / f"{validate_client_name(name)}.key"

    @property
    def servers(self) -> Path:
        return self.root / "servers"

    def server_cert(self, name: str) -> Path:
        return self.servers / f"{validate_client_name(name)}.crt"

    def server_key(self, name: str) -> Path:
        return self.servers / f"{validate_client_name(name)}.key"

    @property
    def state(self) -> str:
        """The state code, read from the CA certificate's subject."""
        return state_of_ca(load_certificate(self.ca_cert))
