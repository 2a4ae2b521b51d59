"""``pouch keys``: the symmetric keys an operator makes: the sealing key of stored
payloads and an agreement's hashing key shared with the partner.

Each key file is written mode 0600 from creation and never over an existing file (a
sealing key lost is every row sealed with it lost; a hashing key replaced on one side
breaks linkage with the partner). Commands print where the key went and a fingerprint
that names it; never the key.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from gateway.agreements.hash_key import (
    generate_hash_key,
    hash_key_fingerprint,
    hash_key_id,
    parse_hash_key,
)
from gateway.agreements.loader import AgreementFileError, load_agreement
from gateway.agreements.model import EXCHANGES_VALIDATOR
from gateway.pki.sealing import generate_sealing_key, load_sealing_keys, sealing_key_id

_OUT = click.Path(dir_okay=False, path_type=Path)
_IN = click.Path(exists=True, dir_okay=False, path_type=Path)


@contextmanager
def _operator_errors() -> Iterator[None]:
    try:
        yield
    except FileExistsError as e:
        raise click.ClickException(
            f"{e.filename or e}: already exists, refusing to overwrite a key (move it "
            "away first if it is really to be replaced)"
        ) from e
    except AgreementFileError as e:
        raise click.ClickException("; ".join(str(issue) for issue in e.issues)) from e
    except (ValueError, OSError) as e:
        raise click.ClickException(str(e)) from e


def _prepare(out: Path) -> None:
    if out.exists():
        raise FileExistsError(0, "exists", str(out))
    out.parent.mkdir(mode=0o700, parents=True, exist_ok=True)


@click.group(name="keys")
def keys() -> None:
    """Symmetric keys: the payload sealing key and agreements' hashing keys."""


@keys.command(name="sealing")
@click.option("--out", required=True, type=_OUT, help="The key file ([storage] sealing_key_file).")
def sealing_command(out: Path) -> None:
    """Make a payload sealing key: 32 random bytes as hex, mode 0600."""
    with _operator_errors():
        _prepare(out)
        key_id = generate_sealing_key(out)
    click.echo(f"sealing key: {out} (mode 0600)")
    click.echo(f"key id: {key_id.hex()}")


@keys.command(name="hash-key")
@click.option(
    "--out",
    required=True,
    type=_OUT,
    help="The key file: <agreement id>.key in [agreements] hash_keys_dir.",
)
def hash_key_command(out: Path) -> None:
    """Make an agreement's hashing key: 32 random bytes as hex, mode 0600. Hand it to the
    partner over a secure channel and compare the fingerprints."""
    with _operator_errors():
        _prepare(out)
        fingerprint = generate_hash_key(out)
    click.echo(f"hashing key: {out} (mode 0600)")
    click.echo(f"fingerprint: {fingerprint}")


@keys.command(name="fingerprint")
@click.option("--sealing", "sealing", type=_IN, default=None, help="A sealing key file.")
@click.option("--hash-key", "hash_key", type=_IN, default=None, help="A hashing key file.")
@click.option(
    "--agreement",
    type=_IN,
    default=None,
    help="With --hash-key: also the fingerprint the gateways show each other under this agreement.",
)
def fingerprint_command(
    sealing: Path | None, hash_key: Path | None, agreement: Path | None
) -> None:
    """Print the fingerprint of a key file (never the key), to compare with the partner's."""
    if (sealing is None) == (hash_key is None):
        raise click.UsageError("give exactly one of --sealing or --hash-key")
    if agreement is not None and hash_key is None:
        raise click.UsageError("--agreement goes with --hash-key")
    with _operator_errors():
        if sealing is not None:
            key = load_sealing_keys(sealing).current
            click.echo(f"key id: {sealing_key_id(key).hex()}")
            return
        assert hash_key is not None
        try:
            secret = parse_hash_key(hash_key.read_text(encoding="ascii"))
        except (ValueError, UnicodeDecodeError) as e:
            raise ValueError(f"{hash_key}: {e}") from None
        click.echo(f"fingerprint: {hash_key_id(secret)}")
        if agreement is not None:
            loaded = load_agreement(agreement, exchanges_validator=EXCHANGES_VALIDATOR)
            bound = hash_key_fingerprint(secret, loaded.digest)
            click.echo(f"agreement {loaded.agreement.id} fingerprint: {bound}")
