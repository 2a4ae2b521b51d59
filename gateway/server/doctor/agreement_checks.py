"""Every agreement this state is party to: as held here, and as the partner holds it.

Here: both signatures verify against the pinned bundles, the validity window, the
declared status, and the hashing key is present and well formed. There: a
``ConfirmAgreement`` call states our digest and hashing-key fingerprint; the partner
answers with its fingerprint, or refuses another text (``AGREEMENT_DIGEST_MISMATCH``)
or another key (``HASH_KEY_MISMATCH``). That call is the protocol's own: a partner that
finds another key holds the agreement out of force from then on, as it would on the
first exchange, so the doctor shows the fault before an exchange meets it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import grpc.aio

from gateway.agreements.gate import load_hash_key
from gateway.agreements.hash_key import hash_key_fingerprint
from gateway.agreements.registry import (
    AgreementRegistry,
    InactiveReason,
    LoadedAgreement,
    explain,
)
from gateway.errors import AgreementRejected, status_details
from gateway.pki.bundle import CLASSICAL_SIGNING, HYBRID_SIGNING, TrustBundle
from gateway.pki.directory import StateDirectory
from gateway.server.doctor.context import DoctorContext
from gateway.server.doctor.findings import Finding, fail, ok, warn
from gateway.server.startup_checks import StartupError, check_partner, load_agreements, load_bundle
from pouch.v1 import common_pb2, peer_pb2

# Held out of force by a decision of a party, not by a fault.
_DECIDED = frozenset({InactiveReason.SUSPENDED, InactiveReason.TERMINATED})
_WINDOW = frozenset({InactiveReason.NOT_YET_VALID, InactiveReason.EXPIRED})


def held_agreements(
    ctx: DoctorContext,
) -> tuple[list[LoadedAgreement[Any]], list[Finding]]:
    """This state's agreements (the gateway's live registry, or the files), or why not."""
    settings = ctx.settings
    if settings.agreements is None:
        return [], [ok("agreements", "no [agreements]: this gateway exchanges nothing")]
    registry = ctx.agreements
    if registry is None:
        try:
            registry = _registry_from_files(ctx)
        except StartupError as e:
            return [], [
                fail(
                    "agreements",
                    str(e),
                    "correct the file and line the detail names (pouch agreement verify "
                    "checks a file alone)",
                )
            ]
    own = settings.gateway.state
    held = [a for a in registry.list() if own in a.agreement.parties]
    if not held:
        return [], [warn("agreements", f"none in {settings.agreements.dir}", "")]
    return held, []


def _registry_from_files(ctx: DoctorContext) -> AgreementRegistry[Any]:
    settings = ctx.settings
    pki = StateDirectory(settings.pki.dir)
    bundles: list[TrustBundle] = [load_bundle("pki.dir", pki.bundle)]
    for partner in settings.partners:
        try:
            bundles.append(check_partner(partner))
        except StartupError:
            continue  # its agreements show BUNDLE_DIGEST_MISMATCH; the bundle row says why
    signs = HYBRID_SIGNING if pki.signing_pq_cert.exists() else CLASSICAL_SIGNING
    return load_agreements(settings, bundles, signs, ctx.clock)


def _name(loaded: LoadedAgreement[Any]) -> str:
    return f"agreement {loaded.id} v{loaded.version}"


def _partner_of(loaded: LoadedAgreement[Any], own: str) -> str:
    first, second = loaded.agreement.parties
    return second if first == own else first


def check_held(
    ctx: DoctorContext, loaded: LoadedAgreement[Any], newest_in_force: set[str]
) -> Finding:
    """The agreement as held here: signatures, window, status, hashing key."""
    agreement = loaded.agreement
    own = ctx.settings.gateway.state
    partner = _partner_of(loaded, own)
    window = f"{agreement.valid_from.isoformat()} to {agreement.valid_until.isoformat()}"
    reason = loaded.inactive_reason
    check = _name(loaded)
    if reason is not None:
        detail = f"not in force ({reason.value}): {explain(reason)}; valid {window}"
        if reason in _DECIDED:
            return warn(
                check, detail, f"pouch agreement resume {loaded.id}, if it was ours to lift"
            )
        if reason is InactiveReason.NOT_YET_VALID:
            return warn(check, detail, "nothing to do: it takes force on its first day")
        if reason is InactiveReason.EXPIRED and loaded.id in newest_in_force:
            return ok(check, f"replaced by a later version in force; valid {window}")
        return fail(check, detail, _remedy(reason, loaded, partner))
    assert ctx.settings.agreements is not None
    keys = ctx.settings.agreements.hash_keys_dir
    try:
        load_hash_key(keys, loaded.id)
    except AgreementRejected:
        return fail(
            check,
            f"in force {window}, but its hashing key {keys / (loaded.id + '.key')} is missing "
            "or shorter than 32 bytes",
            f"put the key shared with {partner} at that path, mode 0600 (for a new "
            "agreement, pouch keys hash-key writes one to send them out of band)",
        )
    return ok(check, f"in force {window}; signed by {own} and {partner}; hashing key present")


def _remedy(reason: InactiveReason, loaded: LoadedAgreement[Any], partner: str) -> str:
    if reason in (InactiveReason.MISSING_SIGNATURE, InactiveReason.BAD_SIGNATURE):
        return (
            f"have both parties sign this text (pouch agreement sign), {partner} included, "
            f"and load the signed file on both sides"
        )
    if reason is InactiveReason.BUNDLE_DIGEST_MISMATCH:
        return (
            "the agreement pins another trust bundle than this gateway holds: pin the "
            "partner's current bundle, or sign a new version naming the current digests"
        )
    if reason is InactiveReason.HASH_KEY_MISMATCH:
        return _HASH_KEY_REMEDY.format(partner=partner, id=loaded.id)
    if reason is InactiveReason.EXPIRED:
        return f"agree and sign a new version with {partner}"
    return "see the detail; pouch serve --check names the file and rule"


_HASH_KEY_REMEDY = (
    "agree the hashing key with {partner} out of band and put the same key at "
    "<agreements.hash_keys_dir>/{id}.key on both gateways, mode 0600; then reload both"
)


async def check_with_partner(ctx: DoctorContext, loaded: LoadedAgreement[Any]) -> Finding:
    """The partner holds the same text and the same hashing key (``ConfirmAgreement``)."""
    own = ctx.settings.gateway.state
    partner = _partner_of(loaded, own)
    check = f"{_name(loaded)} with {partner}"
    assert ctx.settings.agreements is not None
    try:
        key = load_hash_key(ctx.settings.agreements.hash_keys_dir, loaded.id)
    except AgreementRejected:
        return warn(check, "not compared: no hashing key here (see the row above)", "")
    fingerprint = hash_key_fingerprint(key, loaded.digest)
    if ctx.channels is None:
        return warn(check, "not compared: this gateway's TLS identity cannot be read", "")
    request = peer_pb2.ConfirmAgreementRequest(
        agreement=common_pb2.AgreementRef(
            id=loaded.id, version=loaded.version, digest=loaded.digest
        ),
        hash_key_fingerprint=fingerprint,
    )
    try:
        answer = await ctx.channels.peer(partner).ConfirmAgreement(
            request, timeout=ctx.probe_timeout_s
        )
    except grpc.aio.AioRpcError as e:
        return _refusal(check, e, loaded, partner)
    if answer.hash_key_fingerprint != fingerprint:
        return fail(
            check,
            f"{partner} holds another hashing key: its fingerprint "
            f"{answer.hash_key_fingerprint[:16]}…, ours {fingerprint[:16]}…",
            _HASH_KEY_REMEDY.format(partner=partner, id=loaded.id),
        )
    return ok(
        check,
        f"{partner} holds the same text ({loaded.digest[:23]}…) and hashing key "
        f"(fingerprint {fingerprint[:16]}…)",
    )


def _refusal(
    check: str, error: grpc.aio.AioRpcError, loaded: LoadedAgreement[Any], partner: str
) -> Finding:
    reason = status_details(error).reason
    if reason == "AGREEMENT_DIGEST_MISMATCH":
        return fail(
            check,
            f"{partner} holds another text of {loaded.id} v{loaded.version} (ours is "
            f"{loaded.digest})",
            f"compare pouch agreement digest of the file with {partner}'s; both "
            "gateways must load the same file, signed by both",
        )
    if reason == "HASH_KEY_MISMATCH":
        return fail(
            check,
            f"{partner} holds another hashing key for {loaded.id} (its fingerprint differs "
            "from ours); it holds the agreement out of force",
            _HASH_KEY_REMEDY.format(partner=partner, id=loaded.id),
        )
    code = error.code()
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED) and not reason:
        return warn(check, f"not compared: {partner} unreachable (see its row)", "")
    if code == grpc.StatusCode.UNIMPLEMENTED:
        return warn(
            check,
            f"not compared: {partner}'s release has no ConfirmAgreement",
            f"ask {partner} to upgrade",
        )
    return fail(
        check,
        f"{partner} refused the comparison: {code.name} {reason}".rstrip(),
        f"ask {partner}'s operators what their gateway logs for {loaded.id}",
    )


async def check_agreements(ctx: DoctorContext) -> list[Finding]:
    """One row per agreement held here, and one per agreement in force with its partner."""
    held, findings = await asyncio.to_thread(held_agreements, ctx)
    in_force = {a.id for a in held if a.inactive_reason is None}
    rows = list(findings)
    for loaded in held:
        rows.append(check_held(ctx, loaded, in_force))
    compared = [
        a
        for a in held
        if a.inactive_reason is None or a.inactive_reason is InactiveReason.HASH_KEY_MISMATCH
    ]
    rows += await asyncio.gather(*(check_with_partner(ctx, a) for a in compared))
    return rows


__all__ = ["check_agreements", "held_agreements"]
