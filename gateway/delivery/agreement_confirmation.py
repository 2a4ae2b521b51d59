"""Confirming an agreement's hashing key with the partner, before anything crosses under it.

Guarantees:

- :meth:`AgreementConfirmation.ensure` returns only once the partner showed the same
  hashing-key fingerprint for the agreement text (``ConfirmAgreement``), or when the
  partner's release has no such method (``UNIMPLEMENTED``, remembered and logged once:
  its receiver then cannot check either). A partner refusing our fingerprint, or
  answering with another, records the mismatch here: the agreement leaves force on this
  side (:mod:`gateway.agreements.hash_key`) and :class:`HashKeyMismatch` is raised. A
  partner that cannot be asked raises ``PartnerUnavailable`` (``HASH_KEY_UNCONFIRMED``):
  the caller sends nothing and tries again later.
- :meth:`AgreementConfirmation.answer` is the callee's side: it compares the caller's
  fingerprint with ours and records the result; a mismatch is refused with
  ``HASH_KEY_MISMATCH``, so both sides hold the agreement out of force after one call.
- :meth:`AgreementConfirmation.check_stated` checks the fingerprint a partner states
  with a delivery or a query, before any stage stores or answers it; a message under
  an agreement we hold that states none is refused (``HASH_KEY_NOT_STATED``), and
  :meth:`AgreementConfirmation.stated` gives ours for every message we send.
- A mismatch found here first (in what a partner stated with a message or a notice) is
  told to the partner with a ``ConfirmAgreement`` call of our own, so that it too holds
  the agreement out of force, not only the side that noticed.

Usage (the dispatcher, before it sends under an agreement)::

    await confirmation.ensure(agreement_id, partner_state)
    request = peer_pb2.DeliverRequest(
        envelope=envelope, hash_key_fingerprints=confirmation.stated([agreement_id])
    )
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping

import grpc
import grpc.aio

from gateway.agreements.gate import AgreementGate, AgreementInForce
from gateway.agreements.hash_key import HASH_KEY_MISMATCH, HashKeyMismatch, Mismatch
from gateway.delivery.partners import PartnerChannels
from gateway.errors import (
    AgreementRejected,
    NotFound,
    PartnerUnavailable,
    from_call,
    unexpected_summary,
)
from pouch.v1 import common_pb2, peer_pb2

log = logging.getLogger(__name__)


class AgreementConfirmation:
    """Both halves of ``ConfirmAgreement`` for one gateway."""

    def __init__(
        self, *, gate: AgreementGate, channels: PartnerChannels, call_timeout_s: float
    ) -> None:
        self._gate = gate
        self._channels = channels
        self._timeout = call_timeout_s
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._fingerprints: dict[str, str] = {}
        self._cannot_confirm: set[str] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        gate.registry.hash_keys.listen(self._found)

    def attach(self) -> None:
        """Remember the running loop, so a mismatch found on a worker thread is told."""
        self._loop = asyncio.get_running_loop()

    def stated(self, agreement_ids: Iterable[str]) -> dict[str, str]:
        """Our fingerprints for ``agreement_ids``: every message states one, since a
        receiver refuses a message under an agreement whose fingerprint is not stated."""
        stated: dict[str, str] = {}
        for agreement_id in agreement_ids:
            fingerprint = self._fingerprints.get(agreement_id) or self._own(agreement_id)
            if fingerprint is not None:
                stated[agreement_id] = fingerprint
        return stated

    def _own(self, agreement_id: str) -> str | None:
        """Our fingerprint for an agreement not confirmed yet (the partner was not asked)."""
        try:
            return self._gate.fingerprint_of(self._gate.registry.get(agreement_id))
        except (AgreementRejected, NotFound):
            return None

    async def ensure(self, agreement_id: str, partner_state: str) -> None:
        """See the module docstring; :class:`AgreementRejected` if not in force."""
        self.attach()
        agreement = await asyncio.to_thread(self._gate.in_force, agreement_id, partner_state)
        self._fingerprints[agreement.id] = agreement.hash_key_fingerprint
        hash_keys = self._gate.registry.hash_keys
        if hash_keys.confirmed(agreement.id, agreement.digest):
            return
        if partner_state in self._cannot_confirm:
            return
        key = (agreement.id, partner_state)
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            if not hash_keys.confirmed(agreement.id, agreement.digest):
                await self._ask(agreement)

    async def _ask(self, agreement: AgreementInForce) -> None:
        partner = agreement.partner_state
        try:
            answer = await self._channels.peer(partner).ConfirmAgreement(
                _request(agreement), timeout=self._timeout
            )
        except grpc.aio.AioRpcError as e:
            reason = from_call(e, who=f"partner {partner}").reason
            if reason == f"PARTNER_{HASH_KEY_MISMATCH}":
                self._gate.registry.hash_keys.record_mismatch(_mismatch(agreement, True))
                raise self._gate.registry.hash_keys.refusal(agreement.id, agreement.version) from e
            if e.code() == grpc.StatusCode.UNIMPLEMENTED:
                self._cannot_confirm.add(partner)
                log.warning(
                    "partner %s cannot confirm hashing keys (no ConfirmAgreement); its "
                    "gateway does not check them either",
                    partner,
                )
                return
            raise PartnerUnavailable(
                f"partner {partner} did not confirm the hashing key of agreement "
                f"{agreement.id!r}: {reason}",
                reason="HASH_KEY_UNCONFIRMED",
            ) from e
        self._gate.registry.hash_keys.compare(
            agreement.id,
            agreement.version,
            agreement.digest,
            partner,
            own=agreement.hash_key_fingerprint,
            stated=answer.hash_key_fingerprint,
            partner_knows=False,
        )

    def answer(
        self, partner_state: str, request: peer_pb2.ConfirmAgreementRequest
    ) -> peer_pb2.ConfirmAgreementResponse:
        """Blocking: the callee's half; :class:`HashKeyMismatch` on another fingerprint."""
        ref = request.agreement
        # The caller learns of a mismatch from this refusal: nothing to tell it.
        agreement = self._gate.require_same_hash_key(
            partner_state,
            (ref.id, ref.version, ref.digest),
            request.hash_key_fingerprint,
            partner_knows=True,
        )
        return peer_pb2.ConfirmAgreementResponse(
            hash_key_fingerprint=agreement.hash_key_fingerprint
        )

    def check_stated(
        self, partner_state: str, named: common_pb2.AgreementRef, stated: Mapping[str, str]
    ) -> None:
        """The fingerprint a partner stated with a message, which it must state.

        Rules fail closed: a message under an agreement whose hashing key nobody showed
        to be ours is refused (``HASH_KEY_NOT_STATED``), as one under another key is.
        """
        fingerprint = stated.get(named.id)
        if fingerprint is None:
            try:
                self._gate.registry.get(named.id)
            except NotFound:
                return  # no such agreement here: its own stage refuses it by that name
            raise AgreementRejected(
                "the message states no hashing-key fingerprint for its agreement",
                reason="HASH_KEY_NOT_STATED",
            )
        self._gate.require_same_hash_key(
            partner_state,
            (named.id, named.version, named.digest),
            self._as_named_version(named, fingerprint),
        )

    def _as_named_version(self, named: common_pb2.AgreementRef, stated: str) -> str:
        """A batch may carry messages under two versions of one agreement (the earlier
        still in flight when the later took over) with one fingerprint for the id. The
        hashing key is the agreement's, whatever the version: a fingerprint equal to ours
        for another loaded version proves the same key, so it stands for ours of the
        named one. Anything else is compared as stated."""
        versions = [a for a in self._gate.registry.list() if a.id == named.id]
        own = {a.digest: self._gate.fingerprint_of(a) for a in versions}
        named_own = own.get(named.digest)
        if named_own is None or stated == named_own:
            return stated
        others = {fingerprint for digest, fingerprint in own.items() if digest != named.digest}
        return named_own if stated in others else stated

    def _found(self, mismatch: Mismatch) -> None:
        """Listener of the standing: tell the partner a mismatch it may not know of."""
        loop = self._loop
        if mismatch.partner_knows or loop is None:
            return
        loop.call_soon_threadsafe(self._start_telling, mismatch)

    def _start_telling(self, mismatch: Mismatch) -> None:
        task = asyncio.get_running_loop().create_task(self._tell(mismatch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _tell(self, mismatch: Mismatch) -> None:
        try:
            loaded = self._gate.registry.get(mismatch.agreement_id)
            own = self._gate.fingerprint_of(loaded)
            if own is None or loaded.digest != mismatch.digest:
                return
            request = peer_pb2.ConfirmAgreementRequest(
                agreement=common_pb2.AgreementRef(
                    id=loaded.id, version=loaded.version, digest=loaded.digest
                ),
                hash_key_fingerprint=own,
            )
            await self._channels.peer(mismatch.partner_state).ConfirmAgreement(
                request, timeout=self._timeout
            )
        except grpc.aio.AioRpcError as e:
            # HASH_KEY_MISMATCH is the expected answer: the partner now holds it too.
            reason = from_call(e, who=f"partner {mismatch.partner_state}").reason
            if reason != f"PARTNER_{HASH_KEY_MISMATCH}":
                log.warning(
                    "could not tell %s of the hashing-key mismatch on %s: %s",
                    mismatch.partner_state,
                    mismatch.agreement_id,
                    reason,
                )
        except AgreementRejected as e:
            log.warning("hashing-key mismatch on %s not told: %s", mismatch.agreement_id, e.reason)
        except Exception as e:  # a bug in telling must not go unseen, nor stop anything
            log.error("telling a hashing-key mismatch failed: %s", unexpected_summary(e))


def _request(agreement: AgreementInForce) -> peer_pb2.ConfirmAgreementRequest:
    return peer_pb2.ConfirmAgreementRequest(
        agreement=common_pb2.AgreementRef(
            id=agreement.id, version=agreement.version, digest=agreement.digest
        ),
        hash_key_fingerprint=agreement.hash_key_fingerprint,
    )


def _mismatch(agreement: AgreementInForce, partner_knows: bool) -> Mismatch:
    return Mismatch(
        agreement.id,
        agreement.version,
        agreement.digest,
        agreement.partner_state,
        partner_knows=partner_knows,
    )


__all__ = ["AgreementConfirmation", "HashKeyMismatch"]
