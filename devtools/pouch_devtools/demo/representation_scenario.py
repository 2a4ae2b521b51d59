"""The representation part of ``pouch demo``: one shared case, from request to completion.

The requesting state has no mission in the country where its national lost their
documents; it asks the representing state's mission there for help. The
representing state's consulate acknowledges, accepts, starts, writes a note, claims
its costs and completes; the requester acknowledges the costs. Each step is a call
to the acting state's own gateway, which signs it and sends it to the partner; the
scenario then waits until both gateways hold the same case (state, notes, cost claims)
and reads, from each state's reference registry, the case events its gateway handed
to its consular system.

A step that fails stops the case there: later steps would only fail for that reason.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import TypeVar

import grpc
import grpc.aio

from gateway.connect import bearer, secure_channel
from pouch.v1 import (
    audit_pb2,
    audit_pb2_grpc,
    common_pb2,
    representation_pb2,
    representation_pb2_grpc,
)
from pouch_devtools.demo.agreements import REPRESENTATION_PURPOSE
from pouch_devtools.demo.case_copies import (
    CaseView,
    case_differences,
    describe_claims,
    state_name,
    view_of,
)
from pouch_devtools.demo.deployment import Site, agreement_id_for

CALL_TIMEOUT_S = 10.0
SETTLE_TIMEOUT_S = 60.0
HANDOVER_TIMEOUT_S = 15.0
MISSION_COUNTRY = "CV"
COST_CURRENCY = "EUR"
COST_AMOUNT_MINOR = 12_000

Response = TypeVar("Response")
Metadata = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class CaseAction:
    """One call made on the case, by one of the two consulates."""

    actor: str
    target: str
    call: str
    expected: str
    outcome: str


@dataclass(frozen=True)
class RepresentationOutcome:
    case_id: str
    actions: tuple[CaseAction, ...]
    views: tuple[CaseView, ...]
    differences: tuple[str, ...]
    events: tuple[tuple[str, tuple[str, ...]], ...]  # state, event kinds its registry received
    removed: tuple[str, ...]
    transformed: tuple[str, ...]

    @property
    def in_step(self) -> bool:
        return len(self.views) == 2 and not self.differences


def assistance_request(
    requester: str, representing: str
) -> representation_pb2.RequestAssistanceRequest:
    """A fictitious national of ``requester`` who lost their documents abroad."""
    return representation_pb2.RequestAssistanceRequest(
        client_reference="demo-case-1",
        representing_state=representing,
        mission_country=MISSION_COUNTRY,
        agreement_id=agreement_id_for(requester, representing),
        purpose=REPRESENTATION_PURPOSE,
        kind=representation_pb2.ASSISTANCE_KIND_LOST_DOCUMENTS,
        person=representation_pb2.AssistedPerson(
            name=common_pb2.PersonName(given_names=["Claire"], family_names=["Example"]),
            date_of_birth=common_pb2.CivilDate(year=1988, month=6, day=2),
            nationality=requester,
            location=common_pb2.Place(country_code=MISSION_COUNTRY, locality="Praia"),
            contact="+238 000 00 00 (hotel reception)",
        ),
        summary="Passport and identity card lost; needs an emergency travel document to return.",
    )


async def _settled(
    stub: representation_pb2_grpc.RepresentationServiceAsyncStub,
    metadata: Metadata,
    case_id: str,
    done: Callable[[representation_pb2.RepresentationCase], bool],
) -> representation_pb2.RepresentationCase | None:
    """The case once ``done`` holds for it on this gateway, or None at the deadline."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            answer = await stub.GetCase(
                representation_pb2.GetCaseRequest(case_id=case_id),
                metadata=metadata,
                timeout=CALL_TIMEOUT_S,
            )
        except grpc.aio.AioRpcError as e:
            if e.code() != grpc.StatusCode.NOT_FOUND:  # not arrived yet: wait
                raise
        else:
            if done(answer.case):
                return answer.case
        await asyncio.sleep(0.1)
    return None


def _registry_case_events(site: Site, case_id: str) -> tuple[str, ...]:
    try:
        with sqlite3.connect(f"file:{site.registry_db}?mode=ro", uri=True) as db:
            rows = db.execute(
                "SELECT event_kind FROM case_events WHERE case_id = ? ORDER BY id", (case_id,)
            ).fetchall()
    except sqlite3.Error:
        return ()
    return tuple(str(kind) for (kind,) in rows)


async def _handed_over(site: Site, case_id: str, last: str) -> tuple[str, ...]:
    """The case events ``site``'s registry received, once the partner's ``last`` is among
    them: the gateway hands events over after it shows them, so the registry may lag."""
    deadline = time.monotonic() + HANDOVER_TIMEOUT_S
    events = _registry_case_events(site, case_id) if case_id else ()
    while case_id and last not in events and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        events = _registry_case_events(site, case_id)
    return events


async def _request_policy_effect(
    site: Site, metadata: Metadata
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    async with secure_channel(site.local_target, site.client_identity()) as channel:
        listing = await audit_pb2_grpc.AuditServiceStub(channel).ListEntries(
            audit_pb2.ListEntriesRequest(
                event_kind="submitted",
                exchange_type=common_pb2.EXCHANGE_TYPE_REPRESENTATION,
                page_size=50,
            ),
            metadata=metadata,
            timeout=CALL_TIMEOUT_S,
        )
    removed = {path for entry in listing.entries for path in entry.removed_paths}
    transformed = {path for entry in listing.entries for path in entry.transformed_paths}
    return tuple(sorted(removed)), tuple(sorted(transformed))


class _CaseRun:
    """The two consulates' tokens and the actions taken so far."""

    def __init__(self, requester: Site, representing: Site) -> None:
        now = time.time()
        self.requester = requester
        self.representing = representing
        self.request_md = bearer(requester.token(["representation:request"], now=now))
        self.act_md = bearer(representing.token(["representation:act"], now=now))
        self.audit_md = bearer(requester.token(["audit:read"], now=now))
        self.actions: list[CaseAction] = []

    def record(self, site: Site, call: str, expected: str, outcome: str) -> bool:
        role, scope = (
            ("requesting", "representation:request")
            if site is self.requester
            else ("representing", "representation:act")
        )
        self.actions.append(
            CaseAction(
                f"{site.state} consulate ({role}, {scope})",
                f"{site.state} local API",
                call,
                expected,
                outcome,
            )
        )
        return outcome.startswith(expected)

    async def step(
        self,
        site: Site,
        call: str,
        expected: str,
        send: Callable[[], Awaitable[Response]],
        describe: Callable[[Response], str],
    ) -> Response | None:
        """Make one call; its response if it behaved as expected, else None."""
        try:
            response = await send()
        except grpc.aio.AioRpcError as e:
            self.record(site, call, expected, f"{e.code().name}: {e.details()}")
            return None
        return response if self.record(site, call, expected, describe(response)) else None


async def run_representation_scenario(requester: Site, representing: Site) -> RepresentationOutcome:
    """``requester``'s national is assisted by ``representing``'s mission, to the end."""
    run = _CaseRun(requester, representing)
    views: list[CaseView] = []
    async with (
        secure_channel(requester.local_target, requester.client_identity()) as req_channel,
        secure_channel(representing.local_target, representing.client_identity()) as rep_channel,
    ):
        req = representation_pb2_grpc.RepresentationServiceStub(req_channel)
        rep = representation_pb2_grpc.RepresentationServiceStub(rep_channel)
        case_id = await _life_of_the_case(run, req, rep)
        if case_id:
            for site, stub, metadata in (
                (requester, req, run.request_md),
                (representing, rep, run.act_md),
            ):
                # Wait for the finished case; if it never comes, show the copy as it is.
                case = await _settled(stub, metadata, case_id, _finished)
                if case is None:
                    case = await _settled(stub, metadata, case_id, lambda _: True)
                if case is not None:
                    views.append(view_of(site.state, case))
    differences = (
        case_differences(views[0], views[1])
        if len(views) == 2
        else ["a gateway does not show the case"]
    )
    removed, transformed = await _request_policy_effect(requester, run.audit_md)
    return RepresentationOutcome(
        case_id=case_id,
        actions=tuple(run.actions),
        views=tuple(views),
        differences=tuple(differences),
        events=(
            (requester.state, await _handed_over(requester, case_id, "completed")),
            (representing.state, await _handed_over(representing, case_id, "costs_acknowledged")),
        ),
        removed=removed,
        transformed=transformed,
    )


def _finished(case: representation_pb2.RepresentationCase) -> bool:
    return (
        case.state == representation_pb2.CASE_STATE_COMPLETED
        and len(case.cost_claims) > 0
        and all(claim.acknowledged for claim in case.cost_claims)
    )


async def _life_of_the_case(
    run: _CaseRun,
    req: representation_pb2_grpc.RepresentationServiceAsyncStub,
    rep: representation_pb2_grpc.RepresentationServiceAsyncStub,
) -> str:
    """Request, act, claim, acknowledge; the case id, or "" if there is no case."""
    requester, representing = run.requester, run.representing
    created = await run.step(
        requester,
        "RepresentationService/RequestAssistance (lost documents)",
        "SUBMITTED",
        partial(
            req.RequestAssistance,
            assistance_request(requester.state, representing.state),
            metadata=run.request_md,
            timeout=CALL_TIMEOUT_S,
        ),
        lambda r: (
            f"{state_name(r.case.state)}: case {r.case.case_id[:8]}… for "
            f"{representing.state}'s mission in {r.case.mission_country}"
        ),
    )
    if created is None:
        return ""
    case_id = created.case.case_id
    arrived = await _settled(rep, run.act_md, case_id, lambda _: True)
    if not run.record(
        representing,
        "GetCase: the request has arrived",
        "SUBMITTED",
        state_name(arrived.state) if arrived else "NOT_FOUND (not delivered in time)",
    ):
        return case_id
    if not await _act(run, rep, case_id):
        return case_id
    claimed = await run.step(
        representing,
        "ClaimCosts",
        "OK",
        partial(
            rep.ClaimCosts,
            representation_pb2.ClaimCostsRequest(
                case_id=case_id,
                currency=COST_CURRENCY,
                amount_minor=COST_AMOUNT_MINOR,
                description="EMERGENCY_TRAVEL_DOCUMENT_FEE",
            ),
            metadata=run.act_md,
            timeout=CALL_TIMEOUT_S,
        ),
        lambda r: f"OK: {describe_claims(((r.claim.currency, r.claim.amount_minor, False),))}",
    )
    if claimed is None or not await _move(
        run, rep, case_id, representation_pb2.CASE_STATE_COMPLETED
    ):
        return case_id
    claim_id = claimed.claim.claim_id
    seen = await _settled(
        req,
        run.request_md,
        case_id,
        lambda c: any(claim.claim_id == claim_id for claim in c.cost_claims),
    )
    if not run.record(
        requester,
        "GetCase: the cost claim has arrived",
        "OK",
        f"OK: {state_name(seen.state)}" if seen else "NOT_FOUND (not delivered in time)",
    ):
        return case_id
    await run.step(
        requester,
        "AcknowledgeCosts",
        "OK",
        partial(
            req.AcknowledgeCosts,
            representation_pb2.AcknowledgeCostsRequest(case_id=case_id, claim_id=claim_id),
            metadata=run.request_md,
            timeout=CALL_TIMEOUT_S,
        ),
        lambda r: "OK: acknowledged" if r.claim.acknowledged else "not acknowledged",
    )
    return case_id


async def _act(
    run: _CaseRun, rep: representation_pb2_grpc.RepresentationServiceAsyncStub, case_id: str
) -> bool:
    """The representing consulate takes the case on and reports; False at a failed step."""
    for target in (
        representation_pb2.CASE_STATE_ACKNOWLEDGED,
        representation_pb2.CASE_STATE_ACCEPTED,
        representation_pb2.CASE_STATE_IN_PROGRESS,
    ):
        if not await _move(run, rep, case_id, target):
            return False
    note = await run.step(
        run.representing,
        "AddNote",
        "OK",
        partial(
            rep.AddNote,
            representation_pb2.AddNoteRequest(
                case_id=case_id,
                text="Met at the mission; loss reported to the police; travel document issued.",
            ),
            metadata=run.act_md,
            timeout=CALL_TIMEOUT_S,
        ),
        lambda r: f"OK: note by {r.note.author_state}",
    )
    return note is not None


async def _move(
    run: _CaseRun,
    rep: representation_pb2_grpc.RepresentationServiceAsyncStub,
    case_id: str,
    target: representation_pb2.CaseState.ValueType,
) -> bool:
    moved = await run.step(
        run.representing,
        f"TransitionCase -> {state_name(target)}",
        state_name(target),
        partial(
            rep.TransitionCase,
            representation_pb2.TransitionCaseRequest(case_id=case_id, target_state=target),
            metadata=run.act_md,
            timeout=CALL_TIMEOUT_S,
        ),
        lambda r: state_name(r.case.state),
    )
    return moved is not None
