"""``AuditService`` on the local API (scope ``audit:read``).

Auditors list and filter entries, fetch a checkpoint with its cosignatures, and
inclusion and consistency proofs. A partner state's auditor (a token carrying
``pouch_partner_state``) sees only entries under agreements with that state, and
proofs only for those entries. Everything returned is evidence: decision records,
hashes and signatures, never personal data.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import grpc.aio
from google.protobuf.timestamp_pb2 import Timestamp

from gateway.audit.bundle import iter_bundle
from gateway.audit.checkpoints_store import CheckpointStore
from gateway.audit.entry import EventKind
from gateway.audit.log import AuditLog, AuditRecord
from gateway.envelope.names import EXCHANGE_NAMES, EXCHANGE_TYPES
from gateway.errors import FieldViolation, NotFound, PermissionRejected, ValidationRejected
from gateway.server import page_tokens
from gateway.server.caller import current_principal
from pouch.v1 import audit_pb2, audit_pb2_grpc, common_pb2

MAX_PAGE = 1000
_EVENT_KINDS = frozenset(kind.value for kind in EventKind)


def _moment(stamp: Timestamp) -> datetime | None:
    if stamp.seconds == 0 and stamp.nanos == 0:
        return None
    return stamp.ToDatetime(tzinfo=UTC)


def _entry(record: AuditRecord) -> audit_pb2.AuditEntry:
    document = record.document()
    time = Timestamp()
    time.FromDatetime(record.time)
    return audit_pb2.AuditEntry(
        index=record.idx,
        time=time,
        event_kind=str(record.event_kind),
        message_id=record.message_id or "",
        agreement=common_pb2.AgreementRef(
            id=record.agreement_id or "", version=record.agreement_version or 0
        ),
        exchange_type=EXCHANGE_TYPES.get(
            record.exchange_type or "", common_pb2.EXCHANGE_TYPE_UNSPECIFIED
        ),
        purpose=record.purpose or "",
        peer_state=record.peer_state or "",
        principal=record.principal or "",
        payload_digest=document.get("payload_digest") or "",
        decision=str(record.decision),
        reason_code=record.reason_code or "",
        removed_paths=document.get("removed_paths", []),
        transformed_paths=document.get("transformed_paths", []),
        canonical=record.canonical,
    )


class AuditService(audit_pb2_grpc.AuditServiceServicer):
    def __init__(
        self,
        *,
        audit_log: AuditLog,
        checkpoints: CheckpointStore,
        agreements_with: Callable[[str], frozenset[str]],
        bundle_keys: Callable[[], tuple[list[str], dict[str, list[str]]]],
        publish: Callable[[], Awaitable[tuple[int, bool]]],
        state: str,
        witness_keys: Callable[[], dict[str, list[str]]] = dict,
    ) -> None:
        self._publish = publish
        self._witness_keys = witness_keys
        self._log = audit_log
        self._checkpoints = checkpoints
        self._agreements_with = agreements_with
        self._bundle_keys = bundle_keys
        self._state = state

    def _visible_agreements(self) -> frozenset[str] | None:
        """None: everything; otherwise only entries under these agreements."""
        partner = current_principal().partner_state
        return None if partner is None else self._agreements_with(partner)

    def _require_visible(self, idx: int) -> None:
        visible = self._visible_agreements()
        if visible is None:
            return
        record = self._log.entry(idx)
        if record is None or record.agreement_id not in visible:
            raise NotFound("no audit entry with that index is visible to this auditor")

    async def ListEntries(
        self, request: audit_pb2.ListEntriesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> audit_pb2.ListEntriesResponse:
        if request.page_size > MAX_PAGE:
            raise ValidationRejected([FieldViolation("page_size", f"at most {MAX_PAGE}")])
        after = page_tokens.read_index("audit.entries", request.page_token)
        if request.event_kind and request.event_kind not in _EVENT_KINDS:
            raise ValidationRejected(
                [FieldViolation("event_kind", "must be one of the audit log's event kinds")]
            )
        size = request.page_size or 100
        records = await asyncio.to_thread(
            self._log.entries,
            since=_moment(request.since),
            until=_moment(request.until),
            agreement_id=request.agreement_id or None,
            exchange_type=EXCHANGE_NAMES.get(request.exchange_type),
            peer_state=request.peer_state or None,
            event_kind=request.event_kind or None,
            message_id=request.message_id or None,
            agreement_ids=self._visible_agreements(),
            after_idx=after,
            limit=size,
        )
        return audit_pb2.ListEntriesResponse(
            entries=[_entry(r) for r in records],
            next_page_token=(
                page_tokens.issue("audit.entries", str(records[-1].idx))
                if len(records) == size
                else ""
            ),
        )

    async def GetEntry(
        self, request: audit_pb2.GetEntryRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> audit_pb2.GetEntryResponse:
        def lookup() -> audit_pb2.GetEntryResponse:
            self._require_visible(request.index)
            record = self._log.entry(request.index)
            if record is None:
                raise NotFound("no audit entry with that index")
            return audit_pb2.GetEntryResponse(entry=_entry(record))

        return await asyncio.to_thread(lookup)

    async def GetCheckpoint(
        self, request: audit_pb2.GetCheckpointRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> audit_pb2.GetCheckpointResponse:
        def lookup() -> audit_pb2.GetCheckpointResponse:
            stored = (
                self._checkpoints.get(request.tree_size)
                if request.tree_size
                else self._checkpoints.latest(published_only=True)
            )
            if stored is None:
                raise NotFound("no checkpoint of that size")
            lines = self._checkpoints.cosignatures(stored.tree_size).values()
            note = stored.note + "".join(
                line if line.endswith("\n") else f"{line}\n" for line in sorted(lines)
            )
            return audit_pb2.GetCheckpointResponse(
                signed_checkpoint=note, published=stored.published
            )

        return await asyncio.to_thread(lookup)

    async def GetInclusionProof(
        self,
        request: audit_pb2.GetInclusionProofRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> audit_pb2.GetInclusionProofResponse:
        def proof() -> list[bytes]:
            size = request.tree_size or self._log.size()
            if not request.index < size <= self._log.size():
                raise ValidationRejected(
                    [FieldViolation("index", "must be below tree_size, within the log")]
                )
            self._require_visible(request.index)
            return self._log.inclusion_proof(request.index, size)

        return audit_pb2.GetInclusionProofResponse(hashes=await asyncio.to_thread(proof))

    async def GetConsistencyProof(
        self,
        request: audit_pb2.GetConsistencyProofRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> audit_pb2.GetConsistencyProofResponse:
        def proof() -> list[bytes]:
            if not 0 < request.first_size <= request.second_size <= self._log.size():
                raise ValidationRejected(
                    [FieldViolation("first_size", "0 < first_size <= second_size <= log size")]
                )
            return self._log.consistency_proof(request.first_size, request.second_size)

        return audit_pb2.GetConsistencyProofResponse(hashes=await asyncio.to_thread(proof))

    async def PublishCheckpoint(
        self,
        request: audit_pb2.PublishCheckpointRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> audit_pb2.PublishCheckpointResponse:
        size, published = await self._publish()
        return audit_pb2.PublishCheckpointResponse(tree_size=size, published=published)

    def _earlier_sizes(self, since_tree_size: int) -> list[int]:
        """The checkpoint the auditor last saw, to prove consistency from: none when it
        is the latest published one (nothing grew since)."""
        if since_tree_size == 0:
            return []
        latest = self._checkpoints.latest(published_only=True)
        if latest is None or since_tree_size > latest.tree_size:
            raise ValidationRejected(
                [
                    FieldViolation(
                        "since_tree_size", "must not exceed the latest published checkpoint"
                    )
                ]
            )
        return [] if since_tree_size == latest.tree_size else [since_tree_size]

    async def ExportBundle(
        self, request: audit_pb2.ExportBundleRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[audit_pb2.ExportBundleResponse]:
        visible = self._visible_agreements()
        if visible is not None and request.agreement_id and request.agreement_id not in visible:
            raise PermissionRejected("that agreement is not visible to this auditor")
        log_vkeys, cosigners = self._bundle_keys()
        earlier = await asyncio.to_thread(self._earlier_sizes, request.since_tree_size)
        chunks = iter_bundle(
            self._log,
            self._checkpoints,
            state=self._state,
            log_vkeys=log_vkeys,
            cosigner_vkeys=cosigners,
            witness_vkeys=self._witness_keys(),
            since=_moment(request.since),
            until=_moment(request.until),
            agreement_id=request.agreement_id or None,
            agreement_ids=visible,
            earlier_sizes=earlier,
        )
        sentinel = object()
        while (chunk := await asyncio.to_thread(next, chunks, sentinel)) is not sentinel:
            assert isinstance(chunk, bytes)
            yield audit_pb2.ExportBundleResponse(chunk=chunk)
