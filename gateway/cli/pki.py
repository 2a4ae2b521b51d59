"""``pouch pki``: create a state's PKI, issue local clients and servers, revoke, inspect
bundles.

With ``init --offline-ca`` the CA key is written outside the state directory; every
command that signs (issue-client, issue-server, revoke, refresh-crl, upgrade, rotate,
renew-ca) then takes it with ``--ca-key FILE``. ``pki announce`` (:mod:`gateway.cli.pki_announce`)
sends a rotated key's next bundle to partners.

This is the clock's edge: commands read ``datetime.now(UTC)`` once and pass it
down. Every failure is a :class:`click.ClickException` with a message that names
the file or the rule; no traceback reaches the operator.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import click

from gateway.audit.cosignature import partner_cosigners
from gateway.audit.log_signing import partner_log_keys
from gateway.cli.pki_announce import announce_command
from gateway.pki.bundle import TrustBundle, load_trust_bundle
from gateway.pki.ca_renewal import complete_ca_renewal, prepare_ca_renewal
from gateway.pki.crl import refresh_crl, revoke
from gateway.pki.directory import StateDirectory
from gateway.pki.keys import certificate_fingerprint, load_certificate
from gateway.pki.layout import init_state, issue_client, issue_server, upgrade_state
from gateway.pki.rotation import (
    RotatedKey,
    complete_rotation,
    prepare_rotation,
    rotation_files,
)

_SERIAL = re.compile(r"0[xX][0-9a-fA-F]+|[0-9]+")


@contextmanager
def _operator_errors() -> Iterator[None]:
    """Turn library failures into one-line messages for the operator."""
    try:
        yield
    except FileExistsError as e:
        raise click.ClickException(str(e)) from e
    except FileNotFoundError as e:
        raise click.ClickException(f"no such file: {e.filename}") from e
    except PermissionError as e:
        raise click.ClickException(f"permission denied: {e.filename}") from e
    except (ValueError, OSError) as e:
        raise click.ClickException(str(e)) from e


_ca_key_option = click.option(
    "--ca-key",
    "ca_key",
    default=None,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The CA key, when it is kept outside the state directory (offline CA).",
)


def _serial_hex(serial: int) -> str:
    return f"0x{serial:x}"


def _parse_serial(text: str) -> int:
    """``0x``-prefixed hex or decimal; bare hex is refused as ambiguous."""
    cleaned = text.strip()
    if _SERIAL.fullmatch(cleaned) is None:
        raise click.BadParameter(
            f"{text!r}: write the serial as 0x-prefixed hex (as issue-client prints it) "
            "or as decimal",
            param_hint="--serial",
        )
    return int(cleaned, 0) if cleaned.lower().startswith("0x") else int(cleaned, 10)


def _known_certificates(directory: StateDirectory) -> dict[int, Path]:
    paths = [directory.gateway_cert, directory.signing_cert, directory.audit_cert]
    for issued in (directory.clients, directory.servers):
        if issued.is_dir():
            paths += sorted(issued.glob("*.crt"))
    known: dict[int, Path] = {}
    for path in paths:
        try:
            known[load_certificate(path).serial_number] = path
        except (OSError, ValueError):
            continue
    return known


@click.group(name="pki")
def pki() -> None:
    """The state PKI: root CA, certificates, revocation and the trust bundle."""


pki.add_command(announce_command)


@pki.command(name="init")
@click.option("--state", "state", required=True, help="ISO 3166-1 alpha-2 code, e.g. FR.")
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="State directory to create.",
)
@click.option("--dns", "dns_names", multiple=True, help="DNS name of the gateway (repeatable).")
@click.option("--ip", "ip_addresses", multiple=True, help="IP address of the gateway (repeatable).")
@click.option("--peer-endpoint", required=True, help="HOST:PORT partners connect to.")
@click.option("--crl-location", default=None, help="Where partners fetch the CRL (URL).")
@click.option(
    "--offline-ca",
    is_flag=True,
    help="Keep the CA key out of the state directory (needs --ca-key-out).",
)
@click.option(
    "--ca-key-out",
    default=None,
    type=click.Path(file_okay=False, path_type=Path),
    help="With --offline-ca: the directory that receives ca.key (removable media).",
)
def init_command(
    state: str,
    out: Path,
    dns_names: tuple[str, ...],
    ip_addresses: tuple[str, ...],
    peer_endpoint: str,
    crl_location: str | None,
    offline_ca: bool,
    ca_key_out: Path | None,
) -> None:
    """Create a state's root CA, gateway/signing/audit keys, CRL and trust bundle."""
    if offline_ca != (ca_key_out is not None):
        raise click.UsageError("--offline-ca and --ca-key-out DIR go together")
    with _operator_errors():
        directory = init_state(
            state,
            out,
            dns_names=dns_names,
            ip_addresses=ip_addresses,
            peer_endpoint=peer_endpoint,
            crl_location=crl_location,
            now=datetime.now(UTC),
            ca_key_out=ca_key_out,
        )
        bundle = load_trust_bundle(directory.bundle)
    click.echo(f"state directory: {directory.root}")
    if ca_key_out is not None:
        click.echo(
            f"CA key: {ca_key_out / 'ca.key'} (offline: keep it off the gateway; give it "
            "with --ca-key to issue, revoke and refresh the CRL)"
        )
    else:
        click.echo(
            f"CA key: {directory.ca_key} (the gateway does not need it: move it offline, "
            "or make the PKI with --offline-ca)"
        )
    click.echo(f"CA fingerprint: {certificate_fingerprint(bundle.ca_certificate)}")
    _echo_keys(bundle)
    click.echo(f"trust bundle: {directory.bundle}")
    click.echo(f"bundle digest: {bundle.digest}")


@pki.command(name="issue-client")
@click.option(
    "--state-dir",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
)
@click.option("--name", required=True, help="Client name: [a-z0-9][a-z0-9-]{0,62}.")
@click.option("--days", default=397, show_default=True, type=click.IntRange(min=1))
@click.option("--replace", is_flag=True, help="Replace an existing certificate of that name.")
@_ca_key_option
def issue_client_command(
    state_dir: Path, name: str, days: int, replace: bool, ca_key: Path | None
) -> None:
    """Issue a client certificate for a local caller."""
    with _operator_errors():
        cert_path, key_path = issue_client(
            state_dir,
            name,
            now=datetime.now(UTC),
            validity_days=days,
            replace=replace,
            ca_key=ca_key,
        )
    _echo_issued(cert_path, key_path)


def _echo_issued(cert_path: Path, key_path: Path) -> None:
    """Where an issued certificate and its key were written, and its serial (to revoke)."""
    click.echo(f"certificate: {cert_path}")
    click.echo(f"key: {key_path}")
    click.echo(f"serial: {_serial_hex(load_certificate(cert_path).serial_number)}")


@pki.command(name="issue-server")
@click.option(
    "--state-dir",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
)
@click.option("--name", required=True, help="Server name: [a-z0-9][a-z0-9-]{0,62}.")
@click.option("--dns", "dns_names", multiple=True, help="DNS name it serves (repeatable).")
@click.option("--ip", "ip_addresses", multiple=True, help="IP address it serves (repeatable).")
@click.option("--days", default=397, show_default=True, type=click.IntRange(min=1))
@click.option("--replace", is_flag=True, help="Replace an existing certificate of that name.")
@_ca_key_option
def issue_server_command(
    state_dir: Path,
    name: str,
    dns_names: tuple[str, ...],
    ip_addresses: tuple[str, ...],
    days: int,
    replace: bool,
    ca_key: Path | None,
) -> None:
    """Issue a TLS server certificate (serverAuth) for a registry or adapter endpoint the
    gateway calls; the gateway trusts it with tls_ca = the state's ca.crt."""
    with _operator_errors():
        cert_path, key_path = issue_server(
            state_dir,
            name,
            dns_names=dns_names,
            ip_addresses=ip_addresses,
            now=datetime.now(UTC),
            validity_days=days,
            replace=replace,
            ca_key=ca_key,
        )
    _echo_issued(cert_path, key_path)


@pki.command(name="revoke")
@click.option(
    "--state-dir",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
)
@click.option("--serial", default=None, help="Serial: 0x-prefixed hex or decimal.")
@click.option(
    "--cert",
    "cert_path",
    default=None,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Certificate file to revoke.",
)
@_ca_key_option
def revoke_command(
    state_dir: Path, serial: str | None, cert_path: Path | None, ca_key: Path | None
) -> None:
    """Add a certificate to the state's CRL (gateways pick it up without restart)."""
    directory = StateDirectory(state_dir)
    with _operator_errors():
        if serial is not None and cert_path is None:
            number = _parse_serial(serial)
        elif cert_path is not None and serial is None:
            certificate = load_certificate(cert_path)
            if certificate.issuer != load_certificate(directory.ca_cert).subject:
                raise ValueError(f"{cert_path} was not issued by the CA in {state_dir}")
            number = certificate.serial_number
        else:
            raise click.UsageError("give exactly one of --serial or --cert")
        known = _known_certificates(directory)
        revoke(state_dir, number, now=datetime.now(UTC), ca_key=ca_key)
    click.echo(f"revoked serial {_serial_hex(number)}")
    if number in known:
        click.echo(f"certificate: {known[number]}")
    else:
        click.echo("note: no certificate with this serial in the state directory", err=True)


@pki.command(name="refresh-crl")
@click.option(
    "--state-dir",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
)
@_ca_key_option
def refresh_crl_command(state_dir: Path, ca_key: Path | None) -> None:
    """Re-sign the CRL with a new nextUpdate (run at least weekly)."""
    with _operator_errors():
        refresh_crl(state_dir, now=datetime.now(UTC), ca_key=ca_key)
    click.echo(f"refreshed {StateDirectory(state_dir).crl}")


def _show_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@pki.command(name="upgrade")
@click.option(
    "--state-dir",
    "state_dir",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="A state directory made by an earlier release.",
)
@_ca_key_option
def upgrade_command(state_dir: Path, ca_key: Path | None) -> None:
    """Give an older state directory the keys it lacks (the witness key that cosigns
    partners' logs apart from the audit key that signs this state's; the post-quantum
    ML-DSA-44 audit, witness and signing keys) and sign its trust bundle again in the
    current format; hand the new bundle to partners and have them pin its digest."""
    with _operator_errors():
        directory, written = upgrade_state(state_dir, now=datetime.now(UTC), ca_key=ca_key)
        bundle = load_trust_bundle(directory.bundle)
    for key in written:
        click.echo(f"new key: {key}")
    _echo_keys(bundle)
    click.echo(f"trust bundle: {directory.bundle}")
    click.echo(f"bundle digest: {bundle.digest} (partners pin this one now)")


@pki.command(name="show-bundle")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--digest",
    "digest_only",
    is_flag=True,
    help="Print only the digest (to pin it as bundle_digest once checked with the partner).",
)
def show_bundle_command(path: Path, digest_only: bool) -> None:
    """Verify a trust bundle and print what it says."""
    with _operator_errors():
        bundle = load_trust_bundle(path)
    if digest_only:
        click.echo(bundle.digest)
        return
    expired = bundle.expires_at <= datetime.now(UTC)
    click.echo(f"state: {bundle.state}")
    click.echo(f"endpoint: {bundle.peer_endpoint}")
    click.echo(f"crl location: {bundle.crl_location}")
    click.echo(f"digest: {bundle.digest}")
    click.echo(f"issued at: {_show_time(bundle.issued_at)}")
    click.echo(f"expires: {_show_time(bundle.expires_at)}{' (EXPIRED)' if expired else ''}")
    click.echo(f"CA fingerprint: {certificate_fingerprint(bundle.ca_certificate)}")
    _echo_keys(bundle)


def _echo_keys(bundle: TrustBundle) -> None:
    """The bundle's key certificates by fingerprint, and the audit keys as the C2SP
    vkeys an auditor passes to ``pouch audit verify``."""
    certificates = {
        "signing certificate": bundle.signing_certificate,
        "signing certificate (ML-DSA-44)": bundle.signing_pq_certificate,
        "audit certificate": bundle.audit_certificate,
        "audit certificate (ML-DSA-44)": bundle.audit_pq_certificate,
        "witness certificate": bundle.witness_certificate,
        "witness certificate (ML-DSA-44)": bundle.witness_pq_certificate,
    }
    click.echo(f"signature algorithms: {' '.join(bundle.signature_algorithms)}")
    for label, certificate in certificates.items():
        if certificate is not None:
            click.echo(f"{label}: {certificate_fingerprint(certificate)}")
    for key in partner_log_keys(bundle):
        click.echo(f"log key ({key.algorithm}, vkey): {key.vkey}")
    for key in partner_cosigners(bundle):
        click.echo(f"witness key ({key.algorithm}, vkey): {key.vkey}")


@pki.command(name="rotate")
@click.option(
    "--state-dir",
    "state_dir",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="The state directory whose key is rotated.",
)
@click.option(
    "--what",
    required=True,
    type=click.Choice([k.value for k in RotatedKey]),
    help="The key: the gateway's TLS certificate, the message-signing key, the audit key.",
)
@click.option(
    "--complete",
    is_flag=True,
    help="Put the prepared key in force and move the current one to retired/ "
    "(after every partner took the next bundle: pouch pki announce).",
)
@_ca_key_option
def rotate_command(state_dir: Path, what: str, complete: bool, ca_key: Path | None) -> None:
    """Rotate a key in two steps (docs/operations.md, Key rotation): first issue the
    next key beside the current one and, for the signing and audit keys, the next trust
    bundle (bundle.next.json) to announce to partners; then, with --complete, put it in
    force. The signing key is rotated with its ML-DSA-44 twin where the state has one."""
    key = RotatedKey(what)
    with _operator_errors():
        if complete:
            in_force = rotation_files(StateDirectory(state_dir), key)
            kept = complete_rotation(state_dir, key)
            click.echo(f"in force: {in_force.current_cert}")
            if in_force.post_quantum is not None:
                click.echo(f"in force: {in_force.post_quantum.current_cert}")
            click.echo(f"retired: {kept}")
            return
        files = prepare_rotation(state_dir, key, now=datetime.now(UTC), ca_key=ca_key)
    for rotated in (files, files.post_quantum):
        if rotated is not None:
            click.echo(f"next certificate: {rotated.next_cert}")
            click.echo(f"next key: {rotated.next_key}")
    if files.next_bundle is None:
        click.echo("partners trust it through the state CA: no announcement needed")
        return
    bundle = load_trust_bundle(files.next_bundle)
    click.echo(f"next trust bundle: {files.next_bundle} ({bundle.digest})")
    click.echo("announce it: pouch pki announce --config FILE")


@pki.command(name="renew-ca")
@click.option(
    "--state-dir",
    "state_dir",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="The state directory whose CA is renewed.",
)
@click.option(
    "--ca-key",
    "ca_key",
    default=None,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The current (old) CA key, kept offline; required unless --complete.",
)
@click.option(
    "--ca-key-out",
    "ca_key_out",
    default=None,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory outside the state directory for the new CA key (ca.key, 0600).",
)
@click.option(
    "--complete",
    is_flag=True,
    help="Put the renewed CA and certificates in force (after every partner took the "
    "next bundle: pouch pki announce).",
)
def renew_ca_command(
    state_dir: Path, ca_key: Path | None, ca_key_out: Path | None, complete: bool
) -> None:
    """Renew the state CA by cross-signing (docs/operations.md, Renewing the state CA):
    first a new CA certified by the old one, every certificate re-issued under it in
    renewal/ and the next trust bundle (bundle.next.json) to announce; then, with
    --complete, put them in force."""
    with _operator_errors():
        if complete:
            retired = complete_ca_renewal(state_dir)
            click.echo(f"in force: {StateDirectory(state_dir).ca_cert}")
            click.echo(f"retired: {retired}")
            return
        if ca_key is None or ca_key_out is None:
            raise click.UsageError("renewing the CA needs --ca-key and --ca-key-out")
        renewal = prepare_ca_renewal(
            state_dir, ca_key=ca_key, ca_key_out=ca_key_out, now=datetime.now(UTC)
        )
        bundle = load_trust_bundle(renewal.next_bundle)
    click.echo(f"new CA key: {renewal.ca_key} (keep it offline)")
    click.echo(f"renewed certificates: {renewal.renewal}")
    click.echo(f"next trust bundle: {renewal.next_bundle} ({bundle.digest})")
    click.echo("announce it: pouch pki announce --config FILE")
