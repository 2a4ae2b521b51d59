"""The auditor's view: entries, one entry's decision record, checkpoints, evidence.

An entry's page checks the entry's inclusion proof and the checkpoint's signature in
the auditor's browser (``static/evidence_check.js``, Web Crypto), against the log key
pinned from the state's trust bundle file when the console started. The proof and the
checkpoint come from the gateway through this console; the key never does, so a
gateway (or a console) that altered its log cannot make the page say "verified".

A partner state's auditor signs in with a token restricted to that partnership
(``pouch_partner_state``): the gateway answers only what concerns it, whatever the
URL asks for, and an entry outside it is "not found".
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from datetime import UTC, datetime, time
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from console.gateway_calls import GatewayRefusal
from console.web import console_of, officer_of, render
from console.wire import EXCHANGE_TYPES
from gateway.audit.checkpoint import Checkpoint, MalformedCheckpoint
from gateway.audit.entry import Decision, EventKind
from gateway.audit.note import MalformedNote, Note, parse_note
from gateway.pki.note_keys import SIGNATURE_SIZE
from pouch.v1 import audit_pb2

AUDIT_SCOPE = "audit:read"
PAGE = 50
EVENT_KINDS = tuple(kind.value for kind in EventKind)
DECISIONS = tuple(decision.value for decision in Decision)


def _day(value: str, *, end: bool) -> Timestamp | None:
    try:
        day = datetime.strptime(value, "%Y-%m-%d").date()
    except ValueError:
        return None
    moment = datetime.combine(day, time.max if end else time.min, tzinfo=UTC)
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def entry_row(entry: audit_pb2.AuditEntry) -> dict[str, Any]:
    return {
        "index": entry.index,
        "time": entry.time.ToDatetime(tzinfo=UTC),
        "event_kind": entry.event_kind,
        "message_id": entry.message_id,
        "agreement": entry.agreement.id,
        "agreement_version": entry.agreement.version,
        "exchange_type": EXCHANGE_TYPES.code(entry.exchange_type),
        "purpose": entry.purpose,
        "partner": entry.peer_state,
        "principal": entry.principal,
        "decision": entry.decision,
        "reason_code": entry.reason_code,
        "payload_digest": entry.payload_digest,
        "removed_paths": list(entry.removed_paths),
        "transformed_paths": list(entry.transformed_paths),
    }


async def entries(request: Request) -> Response:
    officer = officer_of(request, AUDIT_SCOPE)
    console = console_of(request)
    query = request.query_params
    filters = {
        key: query.get(key, "")
        for key in (
            "since",
            "until",
            "event",
            "exchange",
            "agreement",
            "purpose",
            "partner",
            "decision",
            "page",
        )
    }
    listing = audit_pb2.ListEntriesRequest(page_size=PAGE, page_token=filters["page"])
    since = _day(filters["since"], end=False)
    until = _day(filters["until"], end=True)
    if since is not None:
        listing.since.CopyFrom(since)
    if until is not None:
        listing.until.CopyFrom(until)
    if filters["event"] in EVENT_KINDS:
        listing.event_kind = filters["event"]
    listing.exchange_type = EXCHANGE_TYPES.value(filters["exchange"])
    if filters["agreement"]:
        listing.agreement_id = filters["agreement"]
    if filters["partner"]:
        listing.peer_state = filters["partner"].upper()
    answer = await console.gateway.call(
        console.gateway.audit().ListEntries, listing, officer.access_token
    )
    rows = [entry_row(e) for e in answer.entries]
    if filters["purpose"]:
        rows = [r for r in rows if r["purpose"] == filters["purpose"]]
    if filters["decision"]:
        rows = [r for r in rows if r["decision"] == filters["decision"]]
    next_query = None
    if answer.next_page_token:
        kept = {k: v for k, v in filters.items() if v and k != "page"}
        next_query = {**kept, "page": answer.next_page_token}
    return render(
        request,
        "audit.html",
        rows=rows,
        filters=filters,
        event_kinds=EVENT_KINDS,
        exchange_types=EXCHANGE_TYPES.all,
        decisions=DECISIONS,
        next_query=next_query,
    )


async def _entry(request: Request) -> audit_pb2.AuditEntry:
    officer = officer_of(request, AUDIT_SCOPE)
    console = console_of(request)
    answer = await console.gateway.call(
        console.gateway.audit().GetEntry,
        audit_pb2.GetEntryRequest(index=request.path_params["index"]),
        officer.access_token,
    )
    entry: audit_pb2.AuditEntry = answer.entry
    return entry


async def entry_page(request: Request) -> Response:
    entry = await _entry(request)
    console = console_of(request)
    return render(
        request,
        "audit_entry.html",
        entry=entry_row(entry),
        log_vkeys=list(console.log_keys),
        log_origin=console.log_origin,
    )


def opened(note: str) -> tuple[Checkpoint, Note]:
    """The checkpoint and signature lines of the gateway's note, read as the gateway
    writes them; its signatures are the browser's to check."""
    try:
        parsed = parse_note(note)
        return Checkpoint.parse(parsed.text), parsed
    except (MalformedNote, MalformedCheckpoint):
        raise GatewayRefusal(
            status="FAILED_PRECONDITION",
            reason="CHECKPOINT_MALFORMED",
            message="the gateway's checkpoint is not a signed checkpoint note",
        ) from None


async def _checkpoint(request: Request, size: int = 0) -> tuple[str, bool]:
    officer = officer_of(request, AUDIT_SCOPE)
    console = console_of(request)
    answer = await console.gateway.call(
        console.gateway.audit().GetCheckpoint,
        audit_pb2.GetCheckpointRequest(tree_size=size),
        officer.access_token,
    )
    return answer.signed_checkpoint, answer.published


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


async def proof_json(request: Request) -> Response:
    """What the browser checks: the leaf, its proof and the checkpoint it leads to."""
    officer = officer_of(request, AUDIT_SCOPE)
    console = console_of(request)
    entry = await _entry(request)
    note, _published = await _checkpoint(request)
    size = opened(note)[0].size
    if entry.index >= size:
        return JSONResponse(
            {"error": "ENTRY_NOT_YET_CHECKPOINTED", "index": entry.index, "tree_size": size},
            status_code=409,
        )
    proof = await console.gateway.call(
        console.gateway.audit().GetInclusionProof,
        audit_pb2.GetInclusionProofRequest(index=entry.index, tree_size=size),
        officer.access_token,
    )
    return JSONResponse(
        {
            "index": entry.index,
            "tree_size": size,
            "leaf": _b64(entry.canonical),
            "hashes": [_b64(h) for h in proof.hashes],
            "checkpoint": note,
        }
    )


async def consistency_json(request: Request) -> Response:
    officer = officer_of(request, AUDIT_SCOPE)
    console = console_of(request)
    try:
        first = int(request.query_params.get("first", ""))
        second = int(request.query_params.get("second", ""))
    except ValueError:
        return JSONResponse({"error": "SIZES_INVALID"}, status_code=400)
    (first_note, _), (second_note, _), proof = await asyncio.gather(
        _checkpoint(request, first),
        _checkpoint(request, second),
        console.gateway.call(
            console.gateway.audit().GetConsistencyProof,
            audit_pb2.GetConsistencyProofRequest(first_size=first, second_size=second),
            officer.access_token,
        ),
    )
    return JSONResponse(
        {
            "first_size": first,
            "second_size": second,
            "first_checkpoint": first_note,
            "second_checkpoint": second_note,
            "hashes": [_b64(h) for h in proof.hashes],
        }
    )


# What a signature line is, by the length of its signature: a note signature, an
# Ed25519 cosignature (timestamp and signature), or an ML-DSA-44 one.
_SIGNATURE_KINDS = {SIGNATURE_SIZE: "Ed25519", 8 + SIGNATURE_SIZE: "Ed25519 cosignature"}


def signature_lines(note: Note) -> list[dict[str, str]]:
    """Who signed a note: each signature line's name, key id and kind, as written."""
    return [
        {
            "name": line.key_name,
            "key_id": f"{line.key_id:08x}",
            "kind": _SIGNATURE_KINDS.get(len(line.signature), "ML-DSA-44"),
        }
        for line in note.signatures
    ]


async def checkpoints(request: Request) -> Response:
    officer_of(request, AUDIT_SCOPE)
    note, published = await _checkpoint(request)
    checkpoint, parsed = opened(note)
    return render(
        request,
        "checkpoints.html",
        note=note,
        published=published,
        tree_size=checkpoint.size,
        signatures=signature_lines(parsed),
        log_vkeys=list(console_of(request).log_keys),
        log_origin=console_of(request).log_origin,
    )


async def export(request: Request) -> Response:
    officer = officer_of(request, AUDIT_SCOPE)
    console = console_of(request)
    stream = console.gateway.stream(
        console.gateway.audit().ExportBundle, audit_pb2.ExportBundleRequest(), officer.access_token
    )
    first = await anext(stream, None)  # a refusal shows as a page, not a broken download

    async def chunks() -> AsyncIterator[bytes]:
        if first is not None:
            yield first.chunk
        async for answer in stream:
            yield answer.chunk

    state = console.settings.console.state.lower()
    return StreamingResponse(
        chunks(),
        media_type="application/json",
        headers={"content-disposition": f'attachment; filename="audit-bundle-{state}.json"'},
    )


routes = [
    Route("/audit", entries),
    Route("/audit/checkpoints", checkpoints),
    Route("/audit/consistency.json", consistency_json),
    Route("/audit/export", export),
    Route("/audit/entries/{index:int}", entry_page),
    Route("/audit/entries/{index:int}/proof.json", proof_json),
]
