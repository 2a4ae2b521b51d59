"""The order the checks run in, and the two ways to build what they are given.

Usage (``pouch doctor --config``)::

    diagnosis = await diagnose_files(settings, clock=utc_now)
    sys.exit(1 if diagnosis.failed else 0)

A running gateway answers ``RunDiagnostics`` with :func:`diagnose` on a context of its
own (:meth:`gateway.server.app.Gateway.diagnose`). File and database checks run on a
worker thread; the ones that call other hosts run concurrently, each bounded by the
context's probe timeout.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from gateway.agreements.registry import AgreementRegistry
from gateway.config import Settings
from gateway.delivery.partners import PARTNER_BUNDLES_DIR, Partner, PartnerChannels
from gateway.pki.crl import CrlWatcher
from gateway.pki.directory import StateDirectory
from gateway.server.doctor.agreement_checks import check_agreements
from gateway.server.doctor.context import DoctorContext, utc_now
from gateway.server.doctor.findings import Diagnosis, Finding
from gateway.server.doctor.local_checks import check_files, check_schema
from gateway.server.doctor.network_checks import check_listeners, check_partners, check_registry
from gateway.server.doctor.pki_checks import (
    check_crls,
    check_expiry,
    check_partner_bundles,
    check_state_pki,
)
from gateway.server.startup_checks import StartupError, check_partner


def _local(ctx: DoctorContext) -> list[Finding]:
    settings = ctx.settings
    now = ctx.clock()
    return [
        *check_files(settings),
        *check_state_pki(settings, now),
        *check_partner_bundles(settings),
        *check_expiry(settings, now),
        *check_crls(settings, now, ctx.crls),
        *check_schema(settings),
    ]


async def diagnose(ctx: DoctorContext) -> Diagnosis:
    """Every check, in a stable order: files, PKI, expiry, CRLs, database, agreements,
    listeners, partners, registry."""
    local = await asyncio.to_thread(_local, ctx)
    agreements, listeners, partners, registry = await asyncio.gather(
        check_agreements(ctx),
        check_listeners(ctx),
        check_partners(ctx),
        check_registry(ctx),
    )
    contacts = (
        ctx.channels.contacts.snapshot(ctx.channels.states) if ctx.channels is not None else ()
    )
    return Diagnosis(
        (*local, *agreements, *listeners, *partners, *registry),
        contacts if ctx.inside_gateway else (),
    )


def partner_channels(settings: Settings) -> PartnerChannels | None:
    """Channels to each partner whose bundle loads, as this gateway's TLS identity;
    ``None`` if that identity cannot be read (the PKI rows say why)."""
    pki = StateDirectory(settings.pki.dir)
    try:
        chain = pki.gateway_cert.read_bytes()
        key = pki.gateway_key.read_bytes()
    except OSError:
        return None
    partners = {}
    for entry in settings.partners:
        try:
            bundle = check_partner(entry)
        except StartupError:
            continue  # not the pinned bundle: the partner is not called (its row says so)
        endpoint = entry.endpoint or bundle.peer_endpoint
        partners[entry.state] = Partner(state=entry.state, bundle=bundle, endpoint=endpoint)
    overlap = timedelta(seconds=settings.delivery.partner_bundle_overlap_seconds)
    try:
        # The bundles partners announced, kept by the gateway: a renewed CA is theirs.
        return PartnerChannels(
            partners,
            certificate_chain=chain,
            private_key=key,
            bundle_store=pki.root / PARTNER_BUNDLES_DIR,
            bundle_overlap=overlap,
        )
    except ValueError:
        return PartnerChannels(partners, certificate_chain=chain, private_key=key)


async def diagnose_files(
    settings: Settings, *, clock: Callable[[], datetime] = utc_now
) -> Diagnosis:
    """``pouch doctor --config``: the checks with what the files say, from outside."""
    channels = partner_channels(settings)
    try:
        return await diagnose(DoctorContext(settings=settings, clock=clock, channels=channels))
    finally:
        if channels is not None:
            await channels.close()


async def diagnose_running(
    settings: Settings,
    *,
    clock: Callable[[], datetime],
    crls: Sequence[CrlWatcher],
    agreements: AgreementRegistry[Any] | None,
    channels: PartnerChannels | None,
) -> Diagnosis:
    """A running gateway's view: its clock, its CRL watchers, its agreement registry
    (with the hashing-key standing its traffic found) and its partner channels, whose
    calls keep each partner's contact. A gateway without exchanges has no channels of
    its own: the partners are called on channels opened for the checks."""
    own = channels
    if own is None:
        channels = partner_channels(settings)
    ctx = DoctorContext(
        settings=settings,
        clock=clock,
        channels=channels,
        crls=crls,
        agreements=agreements,
        inside_gateway=True,
    )
    try:
        return await diagnose(ctx)
    finally:
        if own is None and channels is not None:
            await channels.close()
