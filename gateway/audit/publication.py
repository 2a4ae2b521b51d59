"""Checkpoints: signed by us, cosigned by each partner, and the partner's witness side.

:class:`CheckpointPublisher` (our log) signs a checkpoint of the current tree when
it has grown, on a timer and on demand, and offers it to every partner state we hold
an agreement with, with a consistency proof from the last checkpoint that partner
cosigned. A checkpoint counts as published once every such partner's cosignature
is verified and stored. Before offering anything (at start, then each round) it asks
each partner for the last checkpoint of our log it cosigned: a log shorter than that,
or with another root at its size, is a rollback (a replaced database, an old backup),
and nothing is signed or offered (:class:`~gateway.audit.cosigning.AuditLogRollback`).
A partner that fails or refuses is asked again with the ``[delivery]`` backoff until
its deadline (:class:`~gateway.audit.cosigning.CosigningWatch`).

Each external witness (``[[audit.witnesses]]``, :mod:`gateway.audit.external_witness`)
is offered the checkpoint over c2sp.org/tlog-witness ``add-checkpoint``, with the old
size it last cosigned and the consistency proof from it; told another size (409), the
publisher offers once more from that size. Its cosignature lines are verified with its
configured keys and kept beside the partners'; it is watched and retried the same way,
under its name. A checkpoint is published only once every partner and every external
witness cosigned it.

:class:`CheckpointWitness` (a partner's log) answers the peer API's
``CosignCheckpoint`` and the HTTP ``add-checkpoint`` of c2sp.org/tlog-witness
(:mod:`gateway.server.witness_http`), one decision and one record per partner log for
both: it verifies the partner's signature and the consistency with the last checkpoint
of that partner we cosigned, refuses (and audits and logs the refusal of) anything
else, and moves its record forward only from exactly the checkpoint it checked, so
concurrent requests cannot roll it back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime

import grpc
import grpc.aio

from gateway.audit.checkpoint import Checkpoint, audit_origin
from gateway.audit.checkpoints_store import Checkpoint as StoredCheckpoint
from gateway.audit.checkpoints_store import CheckpointStore, SeenCheckpoint, WitnessStore
from gateway.audit.cosignature import CosignatureSigner, partner_cosigners, verify_cosignatures
from gateway.audit.cosigning import AUDIT_LOG_ROLLBACK, AuditLogRollback, CosigningWatch
from gateway.audit.entry import Decision, EventKind
from gateway.audit.external_witness import WitnessClient, WitnessUnreachable
from gateway.audit.log import AuditLog
from gateway.audit.log_signing import CheckpointSigner, partner_log_keys
from gateway.audit.recorder import AuditRecorder
from gateway.audit.witness import CheckpointRefused, cosign
from gateway.audit.witness_protocol import AddCheckpoint, parse_size_body
from gateway.delivery.partners import PartnerChannels
from gateway.errors import PartnerRefused, PouchError, StorageUnavailable, from_call
from gateway.pki.bundle import TrustBundle
from gateway.pki.bundle_chain import PartnerBundles
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
        watch: CosigningWatch,
        external: Sequence[WitnessClient] = (),
    ) -> None:
        self._log = audit_log
        self._store = store
        self._signer = signer
        self._witnesses = witnesses
        self._channels = channels
        self._watch = watch
        self._retry = watch.retry
        self._external = tuple(external)

    def sign_current(self) -> int:
        """Sign a checkpoint of the current tree if none exists for its size; its size."""
        size = self._log.size()
        if size == 0:
            return 0
        if self._store.get(size) is None:
            checkpoint = Checkpoint(
                origin=self._signer.origin, size=size, root_hash=self._log.root(size)
            )
            note = self._signer.sign(checkpoint, self._retry.clock())
            self._store.record_checkpoint(size, checkpoint.root_hash, note)
        return size

    async def publish_now(self) -> tuple[int, bool]:
        """On demand, every partner asked now: the size of the checkpoint signed now, and
        whether it is published; :class:`AuditLogRollback` if our log is not the one a
        partner witnessed."""
        published = await self.publish_once(everyone=True)
        size = await asyncio.to_thread(self._log.size)
        return size, published

    async def publish_once(self, *, everyone: bool = False) -> bool:
        """Check each due partner (all, if ``everyone``) still holds our log to be what it
        cosigned, then sign and offer the current checkpoint; True if it is published."""
        witnesses = self._witnesses()
        size = await asyncio.to_thread(self._log.size)
        now = self._retry.clock()
        due = {
            state: bundle
            for state, bundle in sorted(witnesses.items())
            if everyone or self._watch.due(state, now, size)
        }
        rolled_back: AuditLogRollback | None = None
        reachable: dict[str, TrustBundle] = {}
        for state, bundle in due.items():
            try:
                await self._check_not_rolled_back(state, size)
            except AuditLogRollback as e:
                self._watch.rolled_back(state, now, e)
                rolled_back = rolled_back or e
            except grpc.aio.AioRpcError as e:
                self._watch.failed(state, now, size, from_call(e, who=state).reason, refused=False)
            else:
                reachable[state] = bundle
        if rolled_back is not None:
            raise rolled_back
        if size == 0:
            return False
        await asyncio.to_thread(self.sign_current)
        stored = await asyncio.to_thread(self._store.get, size)
        if stored is None:
            return False
        if not stored.published:
            have = await asyncio.to_thread(self._store.cosignatures, size)
            for state, bundle in reachable.items():
                if state in have:
                    self._watch.succeeded(state)
                    continue
                failure = await self._ask(state, bundle, size, stored.note, stored.root_hash)
                if failure is None:
                    self._watch.succeeded(state)
                else:
                    reason, refused = failure
                    self._watch.failed(state, self._retry.clock(), size, reason, refused=refused)
        else:
            for state in reachable:
                self._watch.succeeded(state)
        await self._offer_external(stored, everyone=everyone)
        if stored.published:
            return True
        have = await asyncio.to_thread(self._store.cosignatures, size)
        external = await asyncio.to_thread(self._store.witness_cosignatures, size)
        if (
            witnesses
            and all(state in have for state in witnesses)
            and all(client.witness.name in external for client in self._external)
        ):
            await asyncio.to_thread(self._store.mark_published, size)
            return True
        return False

    async def _offer_external(self, stored: StoredCheckpoint, *, everyone: bool) -> None:
        """Offer checkpoint ``stored`` to each due external witness that has not cosigned it."""
        if not self._external:
            return
        have = await asyncio.to_thread(self._store.witness_cosignatures, stored.tree_size)
        now = self._retry.clock()
        for client in self._external:
            name = client.witness.name
            if name in have:
                self._watch.succeeded(name)
                continue
            if not (everyone or self._watch.due(name, now, stored.tree_size)):
                continue
            failure = await self._ask_external(client, stored)
            if failure is None:
                self._watch.succeeded(name)
            else:
                reason, refused = failure
                self._watch.failed(
                    name, self._retry.clock(), stored.tree_size, reason, refused=refused
                )

    async def _ask_external(
        self, client: WitnessClient, stored: StoredCheckpoint
    ) -> tuple[str, bool] | None:
        """``None`` once the witness's cosignature is kept, else the reason and whether
        it refused. A 409 tells the size it last cosigned: offered again once from it."""
        size, name = stored.tree_size, client.witness.name
        last = await asyncio.to_thread(self._store.last_cosigned_by_witness, name)
        old = 0 if last is None else last.tree_size
        for _ in range(2):
            proof: list[bytes] = []
            if 0 < old < size:
                proof = await asyncio.to_thread(self._log.consistency_proof, old, size)
            try:
                answer = await client.add_checkpoint(AddCheckpoint(old, tuple(proof), stored.note))
            except WitnessUnreachable as e:
                return e.reason, False
            if answer.status != 409:
                break
            try:
                told = parse_size_body(answer.body)
            except ValueError:
                return "WITNESS_ANSWER_MALFORMED", True
            if told > size:
                log.error(
                    "witness %s cosigned a checkpoint of %d entries of this log, which holds "
                    "%d: the database was replaced or restored from an old backup, or the "
                    "witness is wrong",
                    name,
                    told,
                    size,
                )
                return AUDIT_LOG_ROLLBACK, True
            old = told
        if answer.status != 200:
            return f"WITNESS_HTTP_{answer.status}", 400 <= answer.status < 500
        checkpoint = Checkpoint(origin=self._signer.origin, size=size, root_hash=stored.root_hash)
        try:
            text = answer.body.decode("utf-8")
            cosignatures = verify_cosignatures(checkpoint, text, client.witness.cosigners)
        except UnicodeDecodeError:
            return "COSIGNATURE_MALFORMED", True
        except PouchError as e:
            return f"COSIGNATURE_{e.reason}", True
        lines = "".join(c.line for c in cosignatures)
        await asyncio.to_thread(self._store.add_witness_cosignature, size, name, lines)
        return None

    async def aclose(self) -> None:
        """Close the connections to external witnesses."""
        for client in self._external:
            await client.aclose()

    async def _check_not_rolled_back(self, state: str, size: int) -> None:
        """:class:`AuditLogRollback` if ``state`` cosigned a checkpoint our log does not
        extend (larger than our log, or another root at its size)."""
        try:
            seen = await self._channels.peer(state).GetCosignedCheckpoint(
                peer_pb2.GetCosignedCheckpointRequest(), timeout=self._retry.call_timeout_s
            )
        except grpc.aio.AioRpcError as e:
            if e.code() == grpc.StatusCode.UNIMPLEMENTED:
                return  # a partner's release without it: its witness still refuses a rollback
            raise
        if seen.tree_size == 0:
            return
        if seen.tree_size > size:
            raise AuditLogRollback(state, size, seen.tree_size)
        root = await asyncio.to_thread(self._log.root, seen.tree_size)
        if root != seen.root_hash:
            raise AuditLogRollback(state, size, seen.tree_size)

    async def _ask(
        self, state: str, bundle: TrustBundle, size: int, note: str, root: bytes
    ) -> tuple[str, bool] | None:
        """Offer checkpoint ``size`` to ``state``; ``None`` once its cosignature is kept,
        else the reason and whether the partner refused (rather than failed)."""
        last = await asyncio.to_thread(self._store.last_cosigned_by, state)
        proof: list[bytes] = []
        if last is not None and 0 < last.tree_size < size:
            proof = await asyncio.to_thread(self._log.consistency_proof, last.tree_size, size)
        try:
            answer = await self._channels.peer(state).CosignCheckpoint(
                peer_pb2.CosignCheckpointRequest(signed_checkpoint=note, consistency_proof=proof),
                timeout=self._retry.call_timeout_s,
            )
        except grpc.aio.AioRpcError as e:
            failure = from_call(e, who=f"partner {state}")
            return failure.reason, isinstance(failure, PartnerRefused)
        checkpoint = Checkpoint(origin=self._signer.origin, size=size, root_hash=root)
        try:
            cosignatures = verify_cosignatures(
                checkpoint, answer.cosignature, partner_cosigners(bundle)
            )
        except PouchError as e:
            return f"COSIGNATURE_{e.reason}", True
        lines = "".join(c.line for c in cosignatures)
        await asyncio.to_thread(self._store.add_cosignature, size, state, lines)
        return None

    async def run(self, stopping: asyncio.Event, interval_s: float) -> None:
        """Publish every ``interval_s``, sooner when a partner's retry falls due."""
        while not stopping.is_set():
            try:
                await self.publish_once()
            except AuditLogRollback:
                pass  # logged and shown once, when found, by the watch
            except PouchError as e:
                log.warning("checkpoint round failed: %s", e.reason)
            wait = self._watch.seconds_to_next(self._retry.clock())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    stopping.wait(), interval_s if wait is None else min(interval_s, wait)
                )


class CheckpointWitness:
    def __init__(
        self,
        *,
        store: WitnessStore,
        signers: Sequence[CosignatureSigner],
        partners: Mapping[str, TrustBundle],
        audit: AuditRecorder,
        clock: Callable[[], datetime],
    ) -> None:
        self._store = store
        self._signers = tuple(signers)
        # Live when it is the channels' PartnerBundles: a partner's announced bundle (a
        # new log key) counts at once.
        self._partners: Mapping[str, TrustBundle] = (
            partners if isinstance(partners, PartnerBundles) else dict(partners)
        )
        self._audit = audit
        self._clock = clock

    @property
    def partner_states(self) -> tuple[str, ...]:
        """The partners whose logs we witness."""
        return tuple(sorted(self._partners))

    def state_of_origin(self, origin: str) -> str | None:
        """The partner whose log has ``origin``, or ``None`` if we witness no such log."""
        for state in self._partners:
            if audit_origin(state) == origin:
                return state
        return None

    def last_cosigned(self, peer_state: str) -> SeenCheckpoint | None:
        """Blocking: the last checkpoint of ``peer_state``'s log we cosigned."""
        if peer_state not in self._partners:
            return None
        return self._store.last_seen(peer_state)

    def cosign(
        self, peer_state: str, note: str, proof: list[bytes], *, old_size: int | None = None
    ) -> str:
        """Blocking: our cosignature lines (Ed25519, then ML-DSA-44), or
        :class:`CheckpointRefused` (audited). ``old_size`` is what an ``add-checkpoint``
        client says we last cosigned (:func:`~gateway.audit.witness.cosign` checks it)."""
        bundle = self._partners[peer_state]
        for _ in range(WITNESS_ATTEMPTS):
            last = self._store.last_seen(peer_state)
            try:
                cosigned = cosign(
                    note,
                    proof,
                    origin=audit_origin(peer_state),
                    log_keys=partner_log_keys(bundle),
                    last_seen=(last.tree_size, last.root_hash) if last else None,
                    own_keys=self._signers,
                    now=self._clock(),
                    old_size=old_size,
                )
            except CheckpointRefused as e:
                log.warning(
                    "refusing to cosign a checkpoint of %s's audit log: %s: %s",
                    peer_state,
                    e.reason,
                    e.message,
                )
                self._audit.record(
                    EventKind.CHECKPOINT_REFUSED,
                    Decision.REFUSED,
                    peer_state=peer_state,
                    reason_code=e.reason,
                )
                e.audited = True
                raise
            if last is not None and cosigned.checkpoint.size == last.tree_size:
                return cosigned.lines  # the same checkpoint offered again
            if self._store.advance_seen(
                peer_state,
                from_size=last.tree_size if last else None,
                size=cosigned.checkpoint.size,
                root_hash=cosigned.checkpoint.root_hash,
                note=cosigned.note_text,
            ):
                return cosigned.lines
        raise StorageUnavailable("checkpoints arrived concurrently; try again", retry_after_s=1.0)
