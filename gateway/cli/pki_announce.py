"""``pouch pki announce``: send this state's next trust bundle to every partner.

Reads the gateway's configuration for the state directory (its TLS identity and its
``bundle.next.json``, made by ``pouch pki rotate``) and the partners (their peer
endpoints and the CA each is trusted by, from its pinned bundle). Each partner is asked
with ``PeerService.AnnounceBundle``, retried with the ``[delivery]`` backoff while it
cannot be reached, until ``--deadline-seconds``. One line per partner; exit 1 unless
every partner took the bundle.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click

from gateway.config import ConfigError, load_settings
from gateway.connect import ClientIdentity
from gateway.delivery.announcing import AnnouncementTarget, announce_bundle
from gateway.delivery.backoff import delivery_backoff
from gateway.delivery.partners import PARTNER_BUNDLES_DIR
from gateway.pki.bundle import BundleError, load_trust_bundle
from gateway.pki.bundle_chain import PartnerBundles
from gateway.pki.directory import StateDirectory
from gateway.pki.keys import certificate_pem
from gateway.pki.rotation import NEXT_BUNDLE


@click.command(name="announce")
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The gateway's configuration file.",
)
@click.option(
    "--bundle",
    "bundle_path",
    default=None,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The bundle to announce (default: bundle.next.json of the state directory).",
)
@click.option(
    "--deadline-seconds",
    default=600.0,
    show_default=True,
    type=click.FloatRange(min=1),
    help="How long an unreachable partner is tried again.",
)
def announce_command(config_path: Path, bundle_path: Path | None, deadline_seconds: float) -> None:
    """Announce the next trust bundle (a rotated signing or audit key) to every partner."""
    try:
        settings = load_settings(config_path)
        directory = StateDirectory(settings.pki.dir)
        path = bundle_path or directory.root / NEXT_BUNDLE
        bundle = path.read_bytes()
        digest = load_trust_bundle(bundle).digest
        targets = {}
        overlap = timedelta(seconds=settings.delivery.partner_bundle_overlap_seconds)
        for entry in settings.partners:
            partner = load_trust_bundle(entry.bundle)
            # A partner that renewed its CA is trusted through the bundles it announced.
            kept = PartnerBundles(
                {entry.state: partner}, overlap=overlap, store=directory.root / PARTNER_BUNDLES_DIR
            )
            targets[entry.state] = AnnouncementTarget(
                state=entry.state,
                endpoint=entry.endpoint or partner.peer_endpoint,
                trusted_ca=b"".join(
                    certificate_pem(ca) for ca in kept.trusted_cas(entry.state, datetime.now(UTC))
                ),
            )
        own = ClientIdentity(
            trusted_ca=b"",
            certificate_chain=directory.gateway_cert.read_bytes(),
            private_key=directory.gateway_key.read_bytes(),
        )
    except (ConfigError, BundleError, OSError) as e:
        raise click.ClickException(str(e)) from e
    if not targets:
        raise click.ClickException(f"{config_path} names no partner to announce to")
    outcomes = asyncio.run(
        announce_bundle(
            bundle,
            targets,
            own,
            backoff=delivery_backoff(settings.delivery),
            deadline_s=deadline_seconds,
            call_timeout_s=settings.delivery.call_timeout_seconds,
        )
    )
    click.echo(f"bundle: {path} ({digest})")
    for state, outcome in sorted(outcomes.items()):
        if outcome.taken and outcome.digest == digest:
            click.echo(f"{state}: taken")
        elif outcome.taken:
            click.echo(f"{state}: holds another bundle ({outcome.digest})")
        else:
            click.echo(f"{state}: not taken ({outcome.reason}, {outcome.attempts} attempts)")
    if not all(o.taken and o.digest == digest for o in outcomes.values()):
        raise SystemExit(1)
