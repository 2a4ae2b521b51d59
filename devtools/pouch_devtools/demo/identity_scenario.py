"""The identity part of ``pouch demo``: one state asks its partner to confirm documents.

The responding state's reference registry is seeded before its gateway starts
(:func:`seed_identity_documents`). The requester then asks, as a consulate issuing an
emergency travel document would: a claim that agrees with the record (``MATCH``), the
same person's names written without diacritics (compared after the agreement's
transliteration, still ``MATCH``), a claim with another given name (``PARTIAL``, with
the per-field flags), and a purpose the agreement does not list (refused before
anything leaves).

Identity queries are synchronous and never sit in an outbox: what the policy did to
each claim is read from the requester's audit log, the ``submitted`` entry of that
message id, which records the paths removed or transformed and never a value.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import grpc
import grpc.aio

from gateway.connect import bearer, secure_channel
from gateway.exchanges.iso3166 import ALPHA3_TO_ALPHA2
from gateway.exchanges.mrz import check_digit
from pouch.v1 import (
    audit_pb2,
    audit_pb2_grpc,
    common_pb2,
    identity_pb2,
    identity_pb2_grpc,
)
from pouch_devtools.demo.deployment import Site, agreement_id_for
from pouch_devtools.reference_registry import ReferenceRegistry

CALL_TIMEOUT_S = 10.0
PURPOSE = "emergency_travel_document"
REFUSED_PURPOSE = "law_enforcement"


@dataclass(frozen=True)
class RecordedDocument:
    """A fictitious identity document as the responding state's registry holds it."""

    number: str
    given_names: tuple[str, ...]
    family_names: tuple[str, ...]
    born: tuple[int, int, int]
    sex: common_pb2.Sex.ValueType


# ICAO Doc 9303 part 4's specimen passport holder, re-issued here by the responder.
SPECIMEN = RecordedDocument(
    "L898902C3", ("Anna", "Maria"), ("Eriksson",), (1974, 8, 12), common_pb2.SEX_FEMALE
)
WITH_DIACRITICS = RecordedDocument(
    "BE1234567", ("Jürgen",), ("Müller",), (1980, 1, 31), common_pb2.SEX_MALE
)


@dataclass(frozen=True)
class Confirmation:
    """One confirmation asked, and what came back."""

    label: str
    claimed: str  # how the claim is described on screen: names only, no number
    expected: str
    outcome: str
    message_id: str
    flags: tuple[tuple[str, bool], ...]
    document_status: str
    removed: tuple[str, ...]
    transformed: tuple[str, ...]


@dataclass(frozen=True)
class IdentityOutcome:
    confirmations: tuple[Confirmation, ...]
    refused_purpose: str


def seed_identity_documents(site: Site, nationality: str | None = None) -> None:
    """Put the demo's passports in ``site``'s registry; call before it starts."""
    site.registry_dir.mkdir(parents=True, exist_ok=True)
    registry = ReferenceRegistry(site.registry_db)
    try:
        for document in (SPECIMEN, WITH_DIACRITICS):
            year, month, day = document.born
            registry.add_document(
                document_type=identity_pb2.DOCUMENT_TYPE_PASSPORT,
                number=document.number,
                name=common_pb2.PersonName(
                    given_names=document.given_names, family_names=document.family_names
                ),
                date_of_birth=common_pb2.CivilDate(year=year, month=month, day=day),
                sex=document.sex,
                nationality=nationality or site.state,
            )
    finally:
        registry.close()


def claim_for(
    document: RecordedDocument,
    nationality: str,
    *,
    given_names: Sequence[str] | None = None,
    family_names: Sequence[str] | None = None,
) -> identity_pb2.IdentityClaim:
    """What a consulate holding ``document`` (or a version of its names) would claim."""
    year, month, day = document.born
    return identity_pb2.IdentityClaim(
        document_type=identity_pb2.DOCUMENT_TYPE_PASSPORT,
        document_number=document.number,
        name=common_pb2.PersonName(
            given_names=list(given_names or document.given_names),
            family_names=list(family_names or document.family_names),
        ),
        date_of_birth=common_pb2.CivilDate(year=year, month=month, day=day),
        sex=document.sex,
        nationality=nationality,
    )


def specimen_mrz(issuer: str, *, expires: tuple[int, int, int] = (2034, 4, 15)) -> str:
    """The Doc 9303 specimen passport's TD3 zone, re-issued by ``issuer`` (alpha-2).

    The holder, number, birth date, sex and personal number are the specimen's; the
    issuing state, nationality, expiry and so every check digit are recomputed.
    """
    state = next(a3 for a3, a2 in ALPHA3_TO_ALPHA2.items() if a2 == issuer)
    year, month, day = SPECIMEN.born
    number = SPECIMEN.number
    born = f"{year % 100:02d}{month:02d}{day:02d}"
    until = f"{expires[0] % 100:02d}{expires[1]:02d}{expires[2]:02d}"
    personal = "ZE184226B".ljust(14, "<")
    names = "<<".join(
        "<".join(part.upper() for part in names)
        for names in (SPECIMEN.family_names, SPECIMEN.given_names)
    )
    upper = f"P<{state}{names}".ljust(44, "<")
    parts = [
        f"{number}{check_digit(number)}",
        f"{born}{check_digit(born)}",
        f"{until}{check_digit(until)}",
        f"{personal}{check_digit(personal)}",
    ]
    lower = f"{parts[0]}{state}{parts[1]}F{parts[2]}{parts[3]}"
    return f"{upper}\n{lower}{check_digit(parts[0] + parts[1] + parts[2] + parts[3])}"


def describe_claim(claim: identity_pb2.IdentityClaim) -> str:
    """The names of a claim, as the demo prints them (the number never is)."""
    if claim.mrz and not claim.name.family_names:
        return "MRZ " + " ".join(claim.mrz.split("\n")[0][5:].replace("<", " ").split())
    given = " ".join(claim.name.given_names)
    family = " ".join(claim.name.family_names)
    return f"{given} {family.upper()}".strip()


def result_name(result: identity_pb2.MatchResult.ValueType) -> str:
    return identity_pb2.MatchResult.Name(result).removeprefix("MATCH_RESULT_")


def describe_flags(flags: Sequence[tuple[str, bool]]) -> str:
    """Per-field flags as one line, mismatches first so they are seen."""
    ordered = sorted(flags, key=lambda flag: (flag[1], flag[0]))
    return ", ".join(f"{field} {'yes' if matched else 'NO'}" for field, matched in ordered)


async def _policy_effect(
    audit: audit_pb2_grpc.AuditServiceAsyncStub,
    metadata: tuple[tuple[str, str], ...],
    message_id: str,
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    listing = await audit.ListEntries(
        audit_pb2.ListEntriesRequest(message_id=message_id, event_kind="submitted", page_size=5),
        metadata=metadata,
        timeout=CALL_TIMEOUT_S,
    )
    removed: set[str] = set()
    transformed: set[str] = set()
    for entry in listing.entries:
        removed.update(entry.removed_paths)
        transformed.update(entry.transformed_paths)
    return tuple(sorted(removed)), tuple(sorted(transformed))


async def run_identity_scenario(a: Site, b: Site) -> IdentityOutcome:
    """``a``'s consulate asks ``b``, whose registry holds the seeded documents."""
    agreement_id = agreement_id_for(a.state, b.state)
    asks = [
        ("the specimen passport", claim_for(SPECIMEN, b.state), "MATCH"),
        (
            "the same passport's MRZ alone",
            identity_pb2.IdentityClaim(
                document_type=identity_pb2.DOCUMENT_TYPE_PASSPORT, mrz=specimen_mrz(b.state)
            ),
            "MATCH",
        ),
        (
            "names written without diacritics",
            claim_for(WITH_DIACRITICS, b.state, given_names=["JUERGEN"], family_names=["MUELLER"]),
            "MATCH",
        ),
        (
            "another given name",
            claim_for(WITH_DIACRITICS, b.state, given_names=["Jörg"]),
            "PARTIAL",
        ),
    ]
    now = time.time()
    query = bearer(a.token(["identity:query"], now=now))
    auditor = bearer(a.token(["audit:read"], now=now))
    confirmations: list[Confirmation] = []
    async with secure_channel(a.local_target, a.client_identity()) as channel:
        stub = identity_pb2_grpc.IdentityServiceStub(channel)
        audit = audit_pb2_grpc.AuditServiceStub(channel)
        for label, claim, expected in asks:
            request = identity_pb2.ConfirmIdentityRequest(
                partner_state=b.state, agreement_id=agreement_id, purpose=PURPOSE, claim=claim
            )
            try:
                answer = await stub.ConfirmIdentity(request, metadata=query, timeout=CALL_TIMEOUT_S)
            except grpc.aio.AioRpcError as e:
                confirmations.append(
                    Confirmation(
                        label, describe_claim(claim), expected, e.code().name, "", (), "", (), ()
                    )
                )
                continue
            removed, transformed = await _policy_effect(audit, auditor, answer.message_id)
            confirmations.append(
                Confirmation(
                    label=label,
                    claimed=describe_claim(claim),
                    expected=expected,
                    outcome=result_name(answer.result),
                    message_id=answer.message_id,
                    flags=tuple((flag.field, flag.matched) for flag in answer.fields),
                    document_status=identity_pb2.DocumentStatus.Name(
                        answer.document_status
                    ).removeprefix("DOCUMENT_STATUS_"),
                    removed=removed,
                    transformed=transformed,
                )
            )
        refused = "OK (not refused!)"
        try:
            await stub.ConfirmIdentity(
                identity_pb2.ConfirmIdentityRequest(
                    partner_state=b.state,
                    agreement_id=agreement_id,
                    purpose=REFUSED_PURPOSE,
                    claim=claim_for(SPECIMEN, b.state),
                ),
                metadata=query,
                timeout=CALL_TIMEOUT_S,
            )
        except grpc.aio.AioRpcError as e:
            refused = f"{e.code().name}: {e.details()}"
    return IdentityOutcome(confirmations=tuple(confirmations), refused_purpose=refused)
