"""``pouch agreement``: validate, sign, verify and fingerprint agreement files.

This is the clock's edge for agreements: ``verify`` reads today's UTC date once
(or takes ``--on``) and passes it down. Every failure exits 1 with messages that
name the file, the line and the rule; no traceback reaches the operator.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import click

from gateway.agreements.loader import AgreementFileError, load_agreement, sign_agreement
from gateway.agreements.model import EXCHANGES_VALIDATOR
from gateway.agreements.registry import (
    assess,
    check_message_signatures,
    check_signatures,
    explain,
)
from gateway.pki.bundle import load_trust_bundle

_FILE = click.Path(path_type=Path, dir_okay=False)


def _report(error: AgreementFileError) -> None:
    for issue in error.issues:
        click.echo(str(issue), err=True)


@contextmanager
def _operator_errors() -> Iterator[None]:
    """Turn library failures into messages for the operator, exit status 1."""
    try:
        yield
    except AgreementFileError as e:
        _report(e)
        raise click.exceptions.Exit(1) from e
    except FileNotFoundError as e:
        raise click.ClickException(f"no such file: {e.filename}") from e
    except PermissionError as e:
        raise click.ClickException(f"permission denied: {e.filename}") from e
    except (ValueError, OSError) as e:
        raise click.ClickException(str(e)) from e


@click.group(name="agreement")
def agreement() -> None:
    """Bilateral agreements: strict schema, canonical digest, both parties' signatures."""


@agreement.command(name="check")
@click.argument("files", nargs=-1, required=True, type=_FILE)
def check(files: tuple[Path, ...]) -> None:
    """Validate agreement FILES; print id, version and digest of each valid one."""
    failed = False
    for path in files:
        try:
            loaded = load_agreement(path, exchanges_validator=EXCHANGES_VALIDATOR)
        except AgreementFileError as e:
            _report(e)
            failed = True
            continue
        except OSError as e:
            click.echo(f"{path}: cannot read: {e.strerror or e}", err=True)
            failed = True
            continue
        document = loaded.agreement
        click.echo(f"{path}: ok {document.id} version {document.version} {loaded.digest}")
    if failed:
        raise click.exceptions.Exit(1)


@agreement.command(name="sign")
@click.argument("file", type=_FILE)
@click.option("--key", "key", required=True, type=_FILE, help="The state's signing.key.")
@click.option("--cert", "cert", required=True, type=_FILE, help="The state's signing.crt.")
def sign(file: Path, key: Path, cert: Path) -> None:
    """Add (or replace) the signature of the state named in CERT's subject C=."""
    with _operator_errors():
        signature = sign_agreement(
            file, key_path=key, cert_path=cert, exchanges_validator=EXCHANGES_VALIDATOR
        )
    click.echo(f"{file}: signed by {signature.state} (key {signature.key_id})")


@agreement.command(name="verify")
@click.argument("file", type=_FILE)
@click.option(
    "--bundle",
    "bundles",
    multiple=True,
    required=True,
    type=_FILE,
    help="A party's trust bundle (bundle.json); give one per party.",
)
@click.option(
    "--on",
    "on",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    default=None,
    help="Judge as of this date (UTC), YYYY-MM-DD; default today.",
)
def verify(file: Path, bundles: tuple[Path, ...], on: datetime | None) -> None:
    """Check each party's signature and whether FILE would be in force; exit 1 if not."""
    with _operator_errors():
        loaded = load_agreement(file, exchanges_validator=EXCHANGES_VALIDATOR)
        trust = []
        for bundle_path in bundles:
            try:
                trust.append(load_trust_bundle(bundle_path))
            except ValueError as e:
                raise ValueError(f"{bundle_path}: {e}") from e
    today = on.date() if on is not None else datetime.now(UTC).date()
    result = assess(
        loaded,
        check_signatures(loaded, trust),
        today,
        message_signature_gaps=check_message_signatures(loaded, trust),
    )
    document = result.agreement
    click.echo(f"{file}: {document.id} version {document.version} {result.digest}")
    for verdict in result.signatures:
        status = "signature valid" if verdict.problem is None else verdict.problem.value
        click.echo(f"  {verdict.state}: {status}")
    if result.inactive_reason is None:
        click.echo(f"ACTIVE on {today.isoformat()}")
        return
    click.echo(f"INACTIVE on {today.isoformat()}:")
    for reason in result.inactive_reasons:
        click.echo(f"  {reason.value}: {explain(reason)}")
    raise click.exceptions.Exit(1)


@agreement.command(name="digest")
@click.argument("file", type=_FILE)
def digest(file: Path) -> None:
    """Print FILE's canonical digest (what envelopes name and parties sign)."""
    with _operator_errors():
        loaded = load_agreement(file, exchanges_validator=EXCHANGES_VALIDATOR)
    click.echo(loaded.digest)
