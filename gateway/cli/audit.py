"""``pouch audit``: verify an exported audit bundle offline.

``pouch audit verify BUNDLE`` needs no gateway, no database and no network: it checks
the bundle with :func:`gateway.audit.verify.verify_bundle` and exits 0 only if every
check passed, 1 if any failed (2 for a usage error, as click does). The keys an
auditor trusts come from the states' trust bundles they pinned (``--bundle``: the log's
state gives the log keys, every other state its cosigner keys) or from vkey files
(``--log-key``, ``--cosigner-key``; a file holds one vkey per line); without a trusted
log key and a trusted cosigner key nothing is VERIFIED. Ed25519 and ML-DSA-44
signatures are both required unless ``--require`` names one.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import click
from rich.console import Console
from rich.text import Text

from gateway.audit.cosignature import partner_cosigners
from gateway.audit.log_signing import LogKey, partner_log_keys
from gateway.audit.verify import VerificationReport, bundle_state, verify_bundle
from gateway.pki.bundle import BundleError, TrustBundle, load_trust_bundle
from gateway.pki.note_keys import ALGORITHMS

_COSIGNER = re.compile(r"([A-Z]{2})=(.+)")
_MAX_LISTED = 200
_REQUIRE = {"both": ALGORITHMS, "ed25519": ALGORITHMS[:1], "ml-dsa-44": ALGORITHMS[1:]}


def _read_vkeys(path: Path, hint: str) -> list[str]:
    """The vkeys in ``path``, one per line (blank lines skipped)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise click.BadParameter(f"cannot read {path}: {e}", param_hint=hint) from e
    vkeys = [line.strip() for line in lines if line.strip()]
    if not vkeys:
        raise click.BadParameter(f"{path} holds no vkey", param_hint=hint)
    return vkeys


def _cosigner_keys(values: tuple[str, ...]) -> dict[str, list[str]]:
    keys: dict[str, list[str]] = {}
    for value in values:
        match = _COSIGNER.fullmatch(value)
        if match is None:
            raise click.BadParameter(
                f"{value!r}: write STATE=VKEY_FILE, e.g. DE=de-witness.vkey",
                param_hint="--cosigner-key",
            )
        state, path = match.groups()
        keys.setdefault(state, []).extend(_read_vkeys(Path(path), "--cosigner-key"))
    return keys


def _witness_keys(values: tuple[str, ...]) -> dict[str, list[str]]:
    keys: dict[str, list[str]] = {}
    for value in values:
        name, equals, path = value.partition("=")
        if not (name and equals and path):
            raise click.BadParameter(
                f"{value!r}: write NAME=VKEY_FILE, e.g. witness.example.org/w1=w1.vkey",
                param_hint="--witness-key",
            )
        keys.setdefault(name, []).extend(_read_vkeys(Path(path), "--witness-key"))
    return keys


@click.group(name="audit")
def audit() -> None:
    """The audit log: verify an exported bundle offline, and the keys it needs."""


@audit.command(name="keys")
@click.option(
    "--bundle",
    "trust_bundles",
    multiple=True,
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    metavar="TRUST_BUNDLE",
    help="A state's signed trust bundle, as you pinned it (repeatable).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Also write <state>-log.vkey and <state>-witness.vkey files (one vkey per line) "
    "into this directory.",
)
def keys_command(trust_bundles: tuple[Path, ...], out: Path | None) -> None:
    """Print each state's log keys and witness (cosigner) keys, Ed25519 and ML-DSA-44, as
    C2SP vkeys, from its trust bundle: what --log-key and --cosigner-key take."""
    pinned = _trust_bundles(trust_bundles)
    if out is not None:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise click.ClickException(f"cannot make {out}: {e}") from e
    for state, trust in sorted(pinned.items()):
        roles: dict[str, tuple[LogKey, ...]] = {
            "log": partner_log_keys(trust),
            "witness": partner_cosigners(trust),
        }
        click.echo(f"{state}  trust bundle {trust.digest}")
        for role, keys in roles.items():
            for key in keys:
                click.echo(f"  {role} key ({key.algorithm}): {key.vkey}")
            if out is not None:
                target = out / f"{state.lower()}-{role}.vkey"
                try:
                    target.write_text("".join(f"{k.vkey}\n" for k in keys), encoding="utf-8")
                except OSError as e:
                    raise click.ClickException(f"cannot write {target}: {e}") from e


@audit.command(name="verify")
@click.argument("bundle", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--log-key",
    "log_keys",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="File holding the log's vkeys (one per line), as you hold them out of band (repeatable).",
)
@click.option(
    "--cosigner-key",
    "cosigner_keys",
    multiple=True,
    metavar="STATE=VKEY_FILE",
    help="A cosigner's vkey file (one vkey per line), as you hold it (repeatable).",
)
@click.option(
    "--bundle",
    "trust_bundles",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    metavar="TRUST_BUNDLE",
    help="A state's signed trust bundle, as you pinned it (repeatable): the log's state "
    "gives the log key, every other state its cosigner key.",
)
@click.option(
    "--witness-key",
    "witness_keys",
    multiple=True,
    metavar="NAME=VKEY_FILE",
    help="An external witness's vkey file (one vkey per line), by its key name "
    "(repeatable): that witness must have cosigned, whatever --quorum says.",
)
@click.option(
    "--quorum",
    type=click.IntRange(min=1),
    help="How many of the trusted partner cosigners must have cosigned (default: all of "
    "them); every --witness-key witness is required besides.",
)
@click.option(
    "--require",
    type=click.Choice(sorted(_REQUIRE)),
    default="both",
    show_default=True,
    help="Which signatures the log and each cosigner must have made: Ed25519 and "
    "ML-DSA-44, or one of them (ed25519 for bundles made before post-quantum keys).",
)
@click.option(
    "--since",
    "since_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    metavar="CHECKPOINT_FILE",
    help="The checkpoint you kept from your last audit: the bundle must prove the log "
    "only grew from it (export with since_tree_size set to its size).",
)
@click.option(
    "--save-checkpoint",
    "save_file",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="CHECKPOINT_FILE",
    help="Once VERIFIED, keep the bundle's checkpoint here, for --since next time.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def verify_command(
    bundle: Path,
    log_keys: tuple[Path, ...],
    cosigner_keys: tuple[str, ...],
    trust_bundles: tuple[Path, ...],
    witness_keys: tuple[str, ...],
    quorum: int | None,
    require: str,
    since_file: Path | None,
    save_file: Path | None,
    as_json: bool,
) -> None:
    """Verify the audit bundle BUNDLE offline; exit 0 only if every check passes."""
    try:
        data = bundle.read_bytes()
    except OSError as e:
        raise click.ClickException(f"cannot read {bundle}: {e}") from e
    pinned = _trust_bundles(trust_bundles)
    state = bundle_state(data)
    trusted_log = [vkey for path in log_keys for vkey in _read_vkeys(path, "--log-key")] or None
    if trusted_log is None and state in pinned:
        trusted_log = [str(key.vkey) for key in partner_log_keys(pinned[state])]
    trusted_cosigners = {
        s: [str(key.vkey) for key in partner_cosigners(b)] for s, b in pinned.items() if s != state
    } | _cosigner_keys(cosigner_keys)
    since = None if since_file is None else _read_text(since_file, "--since")
    try:
        report = verify_bundle(
            data,
            trusted_log_vkeys=trusted_log,
            trusted_cosigner_vkeys=trusted_cosigners or None,
            quorum=quorum,
            since=since,
            require=_REQUIRE[require],
            trusted_witness_vkeys=_witness_keys(witness_keys) or None,
        )
    except ValueError as e:  # only the keys and the quorum given on the command line raise
        raise click.BadParameter(str(e)) from e
    if as_json:
        click.echo(json.dumps(report.as_json(), indent=2))
    else:
        console = Console(highlight=False, soft_wrap=True)
        for pinned_state, trust in sorted(pinned.items()):
            console.print(
                Text(f"trust bundle {pinned_state}: {trust.digest} (the digest you pinned?)")
            )
        _print(report, console)
    if not report.ok:
        raise click.exceptions.Exit(1)
    if save_file is not None and report.checkpoint_note is not None:
        try:
            save_file.write_text(report.checkpoint_note, encoding="utf-8")
        except OSError as e:
            raise click.ClickException(f"cannot write {save_file}: {e}") from e


def _read_text(path: Path, hint: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise click.BadParameter(f"cannot read {path}: {e}", param_hint=hint) from e


def _trust_bundles(paths: tuple[Path, ...]) -> dict[str, TrustBundle]:
    """Each trust bundle given, fully verified against its own CA, by state."""
    pinned: dict[str, TrustBundle] = {}
    for path in paths:
        try:
            trust = load_trust_bundle(path)
        except (OSError, BundleError) as e:
            raise click.BadParameter(f"{path}: {e}", param_hint="--bundle") from e
        if trust.state in pinned:
            raise click.BadParameter(
                f"{path}: a second bundle for {trust.state}", param_hint="--bundle"
            )
        pinned[trust.state] = trust
    return pinned


def _print(report: VerificationReport, console: Console) -> None:
    """A readable report; every string is printed as plain text, never as markup."""

    def line(label: str, value: str, style: str = "") -> None:
        console.print(Text.assemble((f"{label:<13}", "bold"), (value, style)))

    def source(trusted: bool) -> str:
        return "[trusted: given]" if trusted else "[taken from the bundle]"

    line("origin", report.origin or "-")
    if report.tree_size is not None and report.root_hash is not None:
        root = base64.b64encode(report.root_hash).decode("ascii")  # as the note writes it
        line("checkpoint", f"tree size {report.tree_size}, root {root}")
    for key in report.log_keys or ("-",):
        line("log key", f"{_short(key)}  {source(report.log_key_trusted)}")
    for state, keys in sorted(report.cosigner_keys.items()):
        for key in keys:
            line(f"cosigner {state}", f"{_short(key)}  {source(report.cosigner_keys_trusted)}")
    line("required", " and ".join(report.required_algorithms))
    published = "yes, cosigned by " + ", ".join(report.cosigned_by)
    line("published", published if report.published else "no", "" if report.published else "red")
    if report.witnessed_by:
        line("witnessed", "by " + ", ".join(report.witnessed_by))
    scope = (
        "filtered selection"
        if report.complete_range is None
        else f"complete for {report.complete_range[0]}..{report.complete_range[1] - 1}"
    )
    line("entries", f"{report.entries_verified} of {report.entries} verified, {scope}")
    if report.consistent_with:
        sizes = ", ".join(str(size) for size in report.consistent_with)
        line("consistent", f"with earlier checkpoints {sizes}")
    for notice in report.notices:
        console.print(Text(f"note: {notice}", style="yellow"))
    for failure in report.failures[:_MAX_LISTED]:
        console.print(Text(f"FAIL: {failure}", style="red"))
    if len(report.failures) > _MAX_LISTED:
        hidden = len(report.failures) - _MAX_LISTED
        console.print(Text(f"... and {hidden} more failures (--json lists them all)", style="red"))
    if report.ok:
        console.print(Text("VERIFIED", style="bold green"))
    else:
        console.print(Text(f"NOT VERIFIED: {len(report.failures)} failures", style="bold red"))


def _short(vkey: str) -> str:
    """A vkey as a person compares it: name, key ID and the opening of the key; an
    ML-DSA-44 key's 1,752 characters are cut (``--json`` shows every key whole)."""
    name, _, rest = vkey.partition("+")
    key_id, _, material = rest.partition("+")
    return vkey if len(material) <= 64 else f"{name}+{key_id}+{material[:16]}..."
