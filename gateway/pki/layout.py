"""Creating a state directory and issuing local clients into it.

Guarantees:

* :func:`init_state` never replaces an existing CA: if ``ca.crt`` or ``ca.key``
  exists in the target it raises :class:`FileExistsError` before writing
  anything, and the CA key itself is linked into place with no-overwrite
  semantics, so two concurrent inits cannot both win.
* Every private key is written mode 0600 and every file atomically (see
  :mod:`gateway.pki.keys`); the directory it creates is mode 0700.
* The bundle it writes passes :func:`gateway.pki.bundle.load_trust_bundle`.
* :func:`issue_client` and :func:`issue_server` do not silently replace a certificate;
  replacing one needs ``replace=True`` (the old certificate stays valid until revoked).
* With ``ca_key_out``, :func:`init_state` writes the CA key there (``ca.key``, its
  directory mode 0700) and never into the state directory: the gateway runs on the CA
  certificate and the CRL alone, and what signs takes ``ca_key`` (see
  :meth:`StateAuthority.load`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path

from gateway.pki.authority import (
    LEAF_VALIDITY_DAYS,
    IpAddress,
    IssuedCertificate,
    StateAuthority,
    parse_ip_address,
    validate_dns_name,
)
from gateway.pki.bundle import CRL_OUT_OF_BAND, FORMAT, sign_bundle, validate_peer_endpoint
from gateway.pki.crl import build_crl, crl_pem
from gateway.pki.directory import StateDirectory
from gateway.pki.identity import validate_client_name, validate_state_code
from gateway.pki.keys import (
    certificate_pem,
    load_certificate,
    write_private_key,
    write_public_file,
)

__all__ = ["StateDirectory", "init_state", "issue_client", "issue_server", "upgrade_state"]


def _write_issued(
    cert_path: Path, key_path: Path, issued: IssuedCertificate, *, overwrite: bool = True
) -> None:
    if issued.private_key is None:
        raise ValueError("issued certificate has no private key to store")
    # Key first: a certificate on disk always has its key next to it.
    write_private_key(key_path, issued.private_key, overwrite=overwrite)
    write_public_file(cert_path, certificate_pem(issued.certificate), overwrite=overwrite)


def init_state(
    state: str,
    out: Path,
    *,
    dns_names: Iterable[str],
    ip_addresses: Iterable[str | IpAddress],
    peer_endpoint: str,
    crl_location: str | None,
    now: datetime,
    ca_key_out: Path | None = None,
) -> StateDirectory:
    """Create a state's CA, its gateway, signing, audit and witness keys (each signing
    key with its post-quantum twin), an empty CRL and its bundle.

    ``crl_location`` None means the CRL travels with the bundle
    (:data:`gateway.pki.bundle.CRL_OUT_OF_BAND`). ``ca_key_out`` names a directory
    outside the state directory for the CA key (an offline CA).
    """
    # Validate every input before the first write, so a typo leaves no debris.
    validate_state_code(state)
    validate_peer_endpoint(peer_endpoint)
    dns = [validate_dns_name(name) for name in dns_names]
    ips = [parse_ip_address(address) for address in ip_addresses]
    if crl_location is not None and not crl_location.strip():
        raise ValueError("crl_location must not be empty")
    directory = StateDirectory(Path(out))
    ca_key = directory.ca_key if ca_key_out is None else offline_ca_key(directory, ca_key_out)
    for existing in (directory.ca_cert, directory.ca_key, ca_key):
        if existing.exists():
            raise FileExistsError(
                f"{existing} already exists: refusing to overwrite a state CA "
                "(choose another directory)"
            )
    directory.root.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory.clients.mkdir(mode=0o700, exist_ok=True)
    ca_key.parent.mkdir(mode=0o700, parents=True, exist_ok=True)

    authority = StateAuthority.create(state, now=now)
    write_private_key(ca_key, authority.ca_key, overwrite=False)
    write_public_file(directory.ca_cert, certificate_pem(authority.ca_cert), overwrite=False)

    gateway = authority.issue_gateway_certificate(dns_names=dns, ip_addresses=ips, now=now)
    _write_issued(directory.gateway_cert, directory.gateway_key, gateway)
    signing = authority.issue_signing_certificate(now=now)
    _write_issued(directory.signing_cert, directory.signing_key, signing)
    for cert_path, key_path, issue in _post_quantum_and_witness_keys(directory, authority, now):
        _write_issued(cert_path, key_path, issue())
    audit = authority.issue_audit_certificate(now=now)
    _write_issued(directory.audit_cert, directory.audit_key, audit)

    write_public_file(directory.crl, crl_pem(build_crl(authority, (), now=now)))
    bundle = _sign_directory_bundle(
        directory,
        authority,
        peer_endpoint=peer_endpoint,
        crl_location=crl_location if crl_location is not None else CRL_OUT_OF_BAND,
        now=now,
    )
    write_public_file(directory.bundle, bundle)
    return directory


def offline_ca_key(directory: StateDirectory, key_dir: Path) -> Path:
    """Where an offline CA's key goes: ``ca.key`` in ``key_dir``, which must lie outside
    the state directory (a key beside what the gateway reads is not offline)."""
    key_dir = Path(key_dir)
    inside = key_dir.resolve().is_relative_to(directory.root.resolve())
    if inside:
        raise ValueError(
            f"{key_dir} is inside the state directory {directory.root}: an offline CA key "
            "goes elsewhere (removable media, an air-gapped machine)"
        )
    return key_dir / "ca.key"


def _refuse_existing(paths: Iterable[Path], what: str) -> None:
    for existing in paths:
        if existing.exists():
            raise FileExistsError(
                f"{existing} already exists: {what} was issued before "
                "(replace it explicitly, and revoke the old certificate)"
            )


def issue_client(
    state_dir: Path,
    name: str,
    *,
    now: datetime,
    validity_days: int = LEAF_VALIDITY_DAYS,
    replace: bool = False,
    ca_key: Path | None = None,
) -> tuple[Path, Path]:
    """Issue a local caller's client certificate; returns ``(cert_path, key_path)``."""
    validate_client_name(name)
    directory = StateDirectory(Path(state_dir))
    authority = StateAuthority.load(directory.root, ca_key=ca_key)
    cert_path, key_path = directory.client_cert(name), directory.client_key(name)
    if not replace:
        _refuse_existing((cert_path, key_path), f"client {name!r}")
    directory.clients.mkdir(mode=0o700, exist_ok=True)
    issued = authority.issue_client_certificate(name, now=now, validity_days=validity_days)
    _write_issued(cert_path, key_path, issued, overwrite=replace)
    return cert_path, key_path


def issue_server(
    state_dir: Path,
    name: str,
    *,
    dns_names: Iterable[str],
    ip_addresses: Iterable[str | IpAddress],
    now: datetime,
    validity_days: int = LEAF_VALIDITY_DAYS,
    replace: bool = False,
    ca_key: Path | None = None,
) -> tuple[Path, Path]:
    """Issue a TLS server certificate for an endpoint the gateway calls (a registry
    behind ``[registry] kind = "grpc"``); returns ``(cert_path, key_path)`` under
    ``servers/``. The gateway trusts it through ``tls_ca = <state dir>/ca.crt`` and checks
    the target's host against its DNS names and IP addresses."""
    validate_client_name(name)
    dns = [validate_dns_name(d) for d in dns_names]
    ips = [parse_ip_address(a) for a in ip_addresses]
    directory = StateDirectory(Path(state_dir))
    authority = StateAuthority.load(directory.root, ca_key=ca_key)
    cert_path, key_path = directory.server_cert(name), directory.server_key(name)
    if not replace:
        _refuse_existing((cert_path, key_path), f"server {name!r}")
    issued = authority.issue_server_certificate(
        name, dns_names=dns, ip_addresses=ips, now=now, validity_days=validity_days
    )
    directory.servers.mkdir(mode=0o700, exist_ok=True)
    _write_issued(cert_path, key_path, issued, overwrite=replace)
    return cert_path, key_path


def _post_quantum_and_witness_keys(
    directory: StateDirectory, authority: StateAuthority, now: datetime
) -> list[tuple[Path, Path, Callable[[], IssuedCertificate]]]:
    """The keys a state directory holds besides its CA, gateway, signing and audit keys:
    the witness key and the post-quantum twins, as (certificate, key, issue)."""
    return [
        (
            directory.witness_cert,
            directory.witness_key,
            lambda: authority.issue_audit_certificate(now=now, witness=True),
        ),
        (
            directory.audit_pq_cert,
            directory.audit_pq_key,
            lambda: authority.issue_audit_certificate(now=now, post_quantum=True),
        ),
        (
            directory.witness_pq_cert,
            directory.witness_pq_key,
            lambda: authority.issue_audit_certificate(now=now, witness=True, post_quantum=True),
        ),
        (
            directory.signing_pq_cert,
            directory.signing_pq_key,
            lambda: authority.issue_signing_certificate(now=now, post_quantum=True),
        ),
    ]


def _sign_directory_bundle(
    directory: StateDirectory,
    authority: StateAuthority,
    *,
    peer_endpoint: str,
    crl_location: str,
    now: datetime,
) -> bytes:
    """The state's trust bundle in the current format, from the certificates on disk."""
    return sign_bundle(
        authority,
        signing_certificate=load_certificate(directory.signing_cert),
        audit_certificate=load_certificate(directory.audit_cert),
        witness_certificate=load_certificate(directory.witness_cert),
        audit_pq_certificate=load_certificate(directory.audit_pq_cert),
        witness_pq_certificate=load_certificate(directory.witness_pq_cert),
        signing_pq_certificate=load_certificate(directory.signing_pq_cert),
        peer_endpoint=peer_endpoint,
        crl_location=crl_location,
        issued_at=now,
    )


def upgrade_state(
    state_dir: Path | str, *, now: datetime, ca_key: Path | None = None
) -> tuple[StateDirectory, list[Path]]:
    """Bring a state directory made by an earlier release to the current format: issue
    the keys it lacks (the witness key, the post-quantum audit, witness and signing
    keys) and sign its trust bundle again with the same endpoint and CRL location;
    partners then pin the new bundle's digest. Returns the key files written.

    :class:`FileExistsError` if nothing is missing (nothing is written),
    :class:`ValueError` if its bundle cannot be read back. A key is written only with
    its certificate, and the bundle last, so a failure leaves a directory that the next
    run completes.
    """
    directory = StateDirectory(Path(state_dir))
    authority = StateAuthority.load(directory.root, ca_key=ca_key)
    peer_endpoint, crl_location = _bundle_settings(directory)
    missing = [
        (cert_path, key_path, issue)
        for cert_path, key_path, issue in _post_quantum_and_witness_keys(directory, authority, now)
        if not (cert_path.exists() and key_path.exists())
    ]
    current = _bundle_format(directory) == FORMAT
    if not missing and current:
        raise FileExistsError(f"{directory.root} already holds every key and a {FORMAT} bundle")
    written = []
    for cert_path, key_path, issue in missing:
        _write_issued(cert_path, key_path, issue())
        written.append(key_path)
    bundle = _sign_directory_bundle(
        directory, authority, peer_endpoint=peer_endpoint, crl_location=crl_location, now=now
    )
    write_public_file(directory.bundle, bundle)
    return directory, written


def _bundle_format(directory: StateDirectory) -> str | None:
    try:
        value = json.loads(directory.bundle.read_bytes()).get("format")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def _bundle_settings(directory: StateDirectory) -> tuple[str, str]:
    """The peer endpoint and CRL location the state's current bundle names (of any
    format: this state's own file, read to carry its settings over)."""
    try:
        body = json.loads(directory.bundle.read_bytes())["body"]
        return str(body["peer_endpoint"]), str(body["crl_location"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(
            f"{directory.bundle}: cannot read the peer endpoint and CRL location"
        ) from e
