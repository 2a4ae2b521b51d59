"""The state PKI: each state's root CA, what it issues, its CRL and its trust bundle.

This package is the only place that touches ``cryptography.hazmat`` (besides the
envelope signer). Library functions take ``now`` as an argument; only the CLI
reads the clock.
"""

from gateway.pki.authority import (
    IpAddress,
    IssuedCertificate,
    StateAuthority,
    audit_uri,
    client_uri,
    gateway_uri,
    signing_uri,
    validate_client_name,
    validate_dns_name,
    validate_state_code,
)
from gateway.pki.bundle import (
    CRL_OUT_OF_BAND,
    BundleError,
    TrustBundle,
    load_trust_bundle,
    sign_bundle,
)
from gateway.pki.crl import CrlWatcher, RevocationList, build_crl, refresh_crl, revoke
from gateway.pki.directory import StateDirectory, state_of_ca
from gateway.pki.identity import state_of_uri
from gateway.pki.keys import (
    PrivateKey,
    PublicKey,
    certificate_der,
    certificate_fingerprint,
    load_certificate,
    load_certificates_pem,
    load_private_key,
    seconds_to_expiry,
    write_private_key,
    write_public_file,
    x5t_s256,
)
from gateway.pki.layout import init_state, issue_client

__all__ = [
    "CRL_OUT_OF_BAND",
    "BundleError",
    "CrlWatcher",
    "IpAddress",
    "IssuedCertificate",
    "PrivateKey",
    "PublicKey",
    "RevocationList",
    "StateAuthority",
    "StateDirectory",
    "TrustBundle",
    "audit_uri",
    "build_crl",
    "certificate_der",
    "certificate_fingerprint",
    "client_uri",
    "gateway_uri",
    "init_state",
    "issue_client",
    "load_certificate",
    "load_certificates_pem",
    "load_private_key",
    "load_trust_bundle",
    "refresh_crl",
    "revoke",
    "seconds_to_expiry",
    "sign_bundle",
    "signing_uri",
    "state_of_ca",
    "state_of_uri",
    "validate_client_name",
    "validate_dns_name",
    "validate_state_code",
    "write_private_key",
    "write_public_file",
    "x5t_s256",
]
