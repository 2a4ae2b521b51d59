"""Checkpoints: signed by us, cosigned by each partner, and the partner's witness side.

:class:`CheckpointPublisher` (our log) signs a checkpoint of the current tree when
it has grown, on a timer and on demand, and offers it to every partner state we hold
an agreement with, with a consistency proof from the last checkpoint that partner
cosigned. A checkpoint counts as published once every such partner's cosignature
is verified and stored.

:class:`CheckpointWitness` (a partner's log) is the peer API's ``CosignCheckpoint``:
it verifies the partner's signature and the consistency with the last checkpoint of
that partner we cosigned, refuses (and audits the refusal of) anything else, and
moves its record forward only from exactly the checkpoint it checked, so concurrent
requests cannot roll it back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from datetime import datetime

import grpc
import grpc.aio

from gateway.audit.checkpoint import Checkpoint, CheckpointSigner, audit_origin, partner_log_key
from gateway.audit.checkpoints_store import CheckpointStore, WitnessStore
from gateway.audit.cosignature import CosignatureSigner, partner_cosigner, verify_cosignature
from gateway.audit.entry import Decision, EventKind
from gateway.audit.log import AuditLog
from gateway.audit.recorder import AuditRecorder
from gateway.audit.witness import CheckpointRefused, cosign
from gateway.delivery.partners import PartnerChannels
from gateway.errors import PouchError, StorageUnavailable
from gateway.pki.bundle import TrustBundle
from pouch.v1 import peer_pb2

log = logging.getLogger(__name__)

WITNESS_ATTEMPTS = 3


class CheckpointPublisher:
    def __init__(
        self,
        *,
        audit_log: AuditLog,
        store: CheckpointStore,
        signer: CheckpointSigner,
        witnesses: Callable[[], Mapping[str, TrustBundle]],
        channels: PartnerChannels,
        call_timeout_s: float,
    ) -> None:
        self._log = audit_log
        self._store = store
        self._signer = signer
        self._witnesses = witnesses
        self._channels = channels
        self._timeout = call_timeout_s

    def sign_current(self) -> int:
        """Sign a checkpoint of the current tree if none exists for its size; its size."""
        size = self._log.size()
        if size == 0:
            return 0
        if self._store.get(size) is None:
            checkpoint = Checkpoint(
                origin=self._signer.origin, size=size, root_hash=self._log.root(size)
            )
            self._store.record_checkpoint(size, checkpoint.root_hash, self._signer.sign(checkpoint))
        return size

    async def publish_now(self) -> tuple[int, bool]:
        """On demand: the size of the checkpoint signed now, and whether it is published."""
        published = await self.publish_once()
        size = await asyncio.to_thread(self._log.size)
        return size, published

    async def publish_once(self) -> bool:
        """Sign and offer the current checkpoint; True if it is published."""
        size = await asyncio.to_thread(self.sign_current)
        if size == 0:
            return False
        stored = await asyncio.to_thread(self._store.get, size)
        if stored is None:
            return False
        if stored.published:
            return True
        witnesses = self._witnesses()
        have = await asyncio.to_thread(self._store.cosignatures, size)
        for state, bundle in sorted(witnesses.items()):
            if state not in have:
                await self._ask(state, bundle, size, stored.note, stored.root_hash)
        have = await asyncio.to_thread(self._store.cosignatures, size)
        if witnesses and all(state in have for state in witnesses):
            await asyncio.to_thread(self._store.mark_published, size)
            return True
        return False

    async def _ask(
        self, state: str, bundle: TrustBundle, size: int, note: str, root: bytes
    ) -> None:
        last = await asyncio.to_thread(self._store.last_cosigned_by, state)
        proof: list[bytes] = []
        if last is not None and 0 < last.tree_size < size:
            proof = await asyncio.to_thread(self._log.consistency_proof, last.tree_size, size)
        try:
            answer = await self._channels.peer(state).CosignCheckpoint(
                peer_pb2.CosignCheckpointRequest(signed_checkpoint=note, consistency_proof=proof),
                timeout=self._timeout,
            )
        except grpc.aio.AioRpcError as e:
            log.warning("checkpoint %d not cosigned by %s: %s", size, state, e.code().name)
            return
        checkpoint = Checkpoint(origin=self._signer.origin, size=size, root_hash=root)
        try:
            verify_cosignature(checkpoint, answer.cosignature, partner_cosigner(bundle))
        except PouchError as e:
            log.warning("cosignature of checkpoint %d by %s refused: %s", size, state, e.reason)
            return
        await asyncio.to_thread(self._store.add_cosignature, size, state, answer.cosignature)

    async def run(self, stopping: asyncio.Event, interval_s: float) -> None:
        while not stopping.is_set():
            try:
                await self.publish_once()
            except PouchError as e:
                log.warning("checkpoint round failed: %s", e.reason)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), interval_s)


class CheckpointWitness:
    def __init__(
        self,
        *,
        store: WitnessStore,
        signer: CosignatureSigner,
        partners: Mapping[str, TrustBundle],
        audit: AuditRecorder,
        clock: Callable[[], datetime],
    ) -> None:
        self._store = store
        self._signer = signer
        self._partners = dict(partners)
        self._audit = audit
        self._clock = clock

    def cosign(self, peer_state: str, note: str, proof: list[bytes]) -> str:
        """Blocking: the cosignature line, or :class:`CheckpointRefused` (audited)."""
        bundle = self._partners[peer_state]
        for _ in range(WITNESS_ATTEMPTS):
            last = self._store.last_seen(peer_state)
            try:
                cosigned = cosign(
                    note,
                    proof,
                    origin=audit_origin(peer_state),
                    log_key=partner_log_key(bundle),
                    last_seen=(last.tree_size, last.root_hash) if last else None,
                    own_key=self._signer,
                    now=self._clock(),
                )
            except CheckpointRefused as e:
                self._audit.record(
                    EventKind.CHECKPOINT_REFUSED,
                    Decision.REFUSED,
                    peer_state=peer_state,
                    reason_code=e.reason,
                )
                e.audited = True
                raise
            if last is not None and cosigned.checkpoint.size == last.tree_size:
                return cosigned.cosignature_line  # the same checkpoint offered again
            if self._store.advance_seen(
                peer_state,
                from_size=last.tree_size if last else None,
                size=cosigned.checkpoint.size,
                root_hash=cosigned.checkpoint.root_hash,
                note=cosigned.note_text,
            ):
                return cosigned.cosignature_line
        raise StorageUnavailable("checkpoints arrived concurrently; try again", retry_after_s=1.0)
