"""The agreement stage of every exchange: which agreement governs, in which direction.

:meth:`AgreementGate.in_force` (or :meth:`AgreementGate.prepare`, below) is the only
way exchange code obtains an agreement.
It asks the registry (signatures, validity window, declared status), then the
lifecycle store (a suspension or termination either party declared since the file
was signed, which takes effect at once), and returns a frozen
:class:`AgreementInForce` holding the compiled policy of each direction and the
agreement's hashing key. A missing hashing key refuses the agreement rather than
hashing with something else.

An exchange that records itself in a group-commit unit takes the agreement with
:meth:`AgreementGate.prepare` and reads the lifecycle in that unit with
:meth:`AgreementGate.confirm_within`: the check and the record of the exchange are then
one transaction, and a suspension that committed first refuses it.

The receiving side additionally holds the envelope to the agreement:
:meth:`AgreementInForce.require_envelope` refuses a partner holding another text
(the digest named in the envelope is pinned), and an envelope without the ML-DSA-44
signature an agreement with hybrid message signatures asks for; and
:meth:`AgreementGate.require_same_hash_key` refuses a partner showing another
hashing-key fingerprint (which holds the agreement out of force from then on, see
:mod:`gateway.agreements.hash_key`). What we send and receipt under a hybrid agreement
is signed hybrid (:attr:`AgreementInForce.hybrid_signatures`).
"""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import Connection

from gateway.agreements.hash_key import hash_key_fingerprint
from gateway.agreements.registry import AgreementRegistry, LoadedAgreement
from gateway.envelope.header import EnvelopeHeader, utc_millis
from gateway.envelope.verify import VerifiedEnvelope
from gateway.errors import AgreementRejected
from gateway.policy.catalogue import ExchangeType
from gateway.policy.compiled import CompiledPolicy
from gateway.policy.evaluate import MinimisedPayload
from gateway.policy.rules import PolicySection
from gateway.store.lifecycle import AgreementLifecycleStore, LifecycleRecord
from gateway.store.quota import QuotaLedger
from pouch.v1 import common_pb2

MIN_HASH_KEY_BYTES = 32
_HEX = re.compile(r"^[0-9a-fA-F]+$")


@dataclass(frozen=True)
class AgreementInForce:
    """An agreement in force between this gateway's state and one partner."""

    loaded: LoadedAgreement[PolicySection]
    own_state: str
    partner_state: str
    outbound: CompiledPolicy
    inbound: CompiledPolicy
    hash_key: bytes = field(repr=False)

    @property
    def hash_key_fingerprint(self) -> str:
        """What this side shows the partner of its hashing key for this text."""
        return hash_key_fingerprint(self.hash_key, self.digest)

    @property
    def id(self) -> str:
        return self.loaded.id

    @property
    def version(self) -> int:
        return self.loaded.version

    @property
    def digest(self) -> str:
        return self.loaded.digest

    @property
    def retention_days(self) -> int:
        return self.loaded.agreement.retention_days

    @property
    def hybrid_signatures(self) -> bool:
        """Whether envelopes and receipts under it are signed ES256 and ML-DSA-44."""
        return self.loaded.agreement.hybrid_signatures

    def daily_quota(
        self, policy: CompiledPolicy, exchange_type: ExchangeType, purpose: str
    ) -> int | None:
        """The agreed daily allowance for ``purpose`` in ``policy``'s direction, if any."""
        exchange = policy.exchange(exchange_type)
        return None if exchange is None else exchange.quota_per_day.get(purpose)

    def new_header(
        self,
        *,
        exchange_type: common_pb2.ExchangeType.ValueType,
        purpose: str,
        created_at: datetime,
        payload_type: str,
    ) -> EnvelopeHeader:
        """The header of a new message from this state to the partner under this text."""
        return EnvelopeHeader(
            message_id=str(uuid.uuid4()),
            agreement_id=self.id,
            agreement_version=self.version,
            agreement_digest=self.digest,
            exchange_type=exchange_type,
            purpose=purpose,
            sender_state=self.own_state,
            recipient_state=self.partner_state,
            created_at=utc_millis(created_at),
            payload_type=payload_type,
        )

    def require_envelope(self, verified: VerifiedEnvelope) -> None:
        """Refuse a partner's envelope made under another version or text of this
        agreement (``AGREEMENT_DIGEST_MISMATCH``), or, under hybrid message signatures,
        one without a verified ML-DSA-44 signature (``ENVELOPE_PQ_SIGNATURE``)."""
        header = verified.header
        self.require_digest(header.agreement_version, header.agreement_digest)
        if self.hybrid_signatures:
            verified.require_hybrid()

    def require_digest(self, version: int, digest: str) -> None:
        """Refuse a message made under another version or text of this agreement."""
        if version != self.version or digest != self.digest:
            raise AgreementRejected(
                f"agreement {self.id!r}: the partner holds another version or text than "
                f"this gateway (version {self.version}, {self.digest})",
                reason="AGREEMENT_DIGEST_MISMATCH",
            )


def load_hash_key(directory: Path, agreement_id: str) -> bytes:
    path = directory / f"{agreement_id}.key"
    try:
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as e:
        raise AgreementRejected(
            f"agreement {agreement_id!r}: no hashing key is configured", reason="HASH_KEY_MISSING"
        ) from e
    if not _HEX.match(text) or len(text) % 2 or len(text) < 2 * MIN_HASH_KEY_BYTES:
        raise AgreementRejected(
            f"agreement {agreement_id!r}: the hashing key must be at least "
            f"{MIN_HASH_KEY_BYTES} bytes written as hex",
            reason="HASH_KEY_MISSING",
        )
    return bytes.fromhex(text)


class AgreementGate:
    """Registry + lifecycle + keys: whether, and how, an exchange may happen."""

    def __init__(
        self,
        registry: AgreementRegistry[PolicySection],
        lifecycle: AgreementLifecycleStore,
        quota: QuotaLedger,
        *,
        own_state: str,
        hash_keys_dir: Path,
        clock_tolerance: timedelta = timedelta(0),
    ) -> None:
        """``clock_tolerance`` is how far ahead a partner's clock may run (the envelope
        clock window): a version it switched to that far ahead of ours is received."""
        self.registry = registry
        self._clock_tolerance = clock_tolerance
        self.lifecycle = lifecycle
        self._quota = quota
        self._own_state = own_state
        self._hash_keys_dir = hash_keys_dir
        self._compiled: dict[tuple[str, str], CompiledPolicy] = {}
        self._keys: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def _policy(self, loaded: LoadedAgreement[PolicySection], direction: str) -> CompiledPolicy:
        key = (loaded.digest, direction)
        with self._lock:
            policy = self._compiled.get(key)
            if policy is None:
                policy = CompiledPolicy.compile(loaded.exchanges, direction)
                self._compiled[key] = policy
        return policy

    def _hash_key(self, agreement_id: str) -> bytes:
        with self._lock:
            key = self._keys.get(agreement_id)
        if key is None:
            key = load_hash_key(self._hash_keys_dir, agreement_id)
            with self._lock:
                self._keys[agreement_id] = key
        return key

    def in_force(self, agreement_id: str, partner_state: str) -> AgreementInForce:
        """The agreement, or :class:`AgreementRejected` with the reason it may not be used."""
        agreement = self.prepare(agreement_id, partner_state)
        _refuse_ended(agreement, self.lifecycle.status_of(agreement.id, agreement.version))
        return agreement

    def prepare(self, agreement_id: str, partner_state: str) -> AgreementInForce:
        """:meth:`in_force` but for the lifecycle, which the caller must then read with
        :meth:`confirm_within` in the write unit that records the exchange (before its
        other writes). Between the two nothing may be stored or sent."""
        return self._in_force(self.registry.active_for(agreement_id, partner_state))

    def receiving(self, verified: VerifiedEnvelope, partner_state: str) -> AgreementInForce:
        """:meth:`prepare` for a partner's message: the version its envelope names (in
        force, or superseded by a later version while the message was in flight, see
        :meth:`~gateway.agreements.registry.AgreementRegistry.named_for`), held to the
        envelope by :meth:`AgreementInForce.require_envelope`."""
        header = verified.header
        agreement = self._named(header.agreement_id, header.agreement_version, partner_state)
        agreement.require_envelope(verified)
        return agreement

    def _named(self, agreement_id: str, version: int, partner_state: str) -> AgreementInForce:
        return self._in_force(
            self.registry.named_for(
                agreement_id, version, partner_state, clock_tolerance=self._clock_tolerance
            )
        )

    def _in_force(self, loaded: LoadedAgreement[PolicySection]) -> AgreementInForce:
        partner_state = loaded.agreement.partner_of(self._own_state)
        return AgreementInForce(
            loaded=loaded,
            own_state=self._own_state,
            partner_state=partner_state,
            outbound=self._policy(loaded, f"{self._own_state}->{partner_state}"),
            inbound=self._policy(loaded, f"{partner_state}->{self._own_state}"),
            hash_key=self._hash_key(loaded.id),
        )

    def require_same_hash_key(
        self,
        partner_state: str,
        named: tuple[str, int, str],
        stated: str,
        *,
        partner_knows: bool = False,
    ) -> AgreementInForce:
        """The agreement ``named`` (id, version, digest, as the partner holds it), once
        ``stated`` (the partner's fingerprint) equals ours. Another text is refused first
        (``AGREEMENT_DIGEST_MISMATCH``: its fingerprint could not be equal); another
        fingerprint is recorded, so the agreement leaves force here, and refused with
        ``HASH_KEY_MISMATCH``."""
        agreement_id, version, digest = named
        agreement = self._named(agreement_id, version, partner_state)
        agreement.require_digest(version, digest)
        self.registry.hash_keys.compare(
            agreement.id,
            agreement.version,
            agreement.digest,
            partner_state,
            own=agreement.hash_key_fingerprint,
            stated=stated,
            partner_knows=partner_knows,
        )
        return agreement

    def fingerprint_of(self, loaded: LoadedAgreement[PolicySection]) -> str | None:
        """Our hashing-key fingerprint for ``loaded``, in force or not; ``None`` without
        a usable key."""
        try:
            key = self._hash_key(loaded.id)
        except AgreementRejected:
            return None
        return hash_key_fingerprint(key, loaded.digest)

    def confirm_within(self, conn: Connection, agreement: AgreementInForce) -> None:
        """The lifecycle stage of :meth:`prepare`, in the caller's write transaction."""
        _refuse_ended(
            agreement, self.lifecycle.status_within(conn, agreement.id, agreement.version)
        )

    def commit_exchange(
        self,
        conn: Connection,
        exchange: ExchangeUnit,
        *,
        record: Callable[[], bool],
        evidence: Callable[[bool], None],
    ) -> bool:
        """The write unit every exchange is committed in, in the caller's transaction
        ``conn``: the agreement confirmed still in force (:meth:`confirm_within`), the
        exchange recorded (``record`` is False for one already held: a duplicate takes
        nothing), one unit of the purpose's daily quota taken for a new one (none when
        ``exchange.minimised`` is ``None``), and its evidence (``evidence`` is told whether
        it was new). All of it commits together, or none of it; True if it was new."""
        self.confirm_within(conn, exchange.agreement)
        fresh = record()
        if fresh and exchange.minimised is not None:
            self._take_quota(conn, exchange.agreement, exchange.minimised, what=exchange.what)
        evidence(fresh)
        return fresh

    def _take_quota(
        self,
        conn: Connection,
        agreement: AgreementInForce,
        minimised: MinimisedPayload,
        *,
        what: str,
    ) -> None:
        """One unit of the agreed daily allowance for ``minimised``'s purpose, in its
        direction, in the caller's write transaction; :class:`QuotaRejected` if it is used
        up, nothing if the agreement sets none. ``what`` names the unit in the refusal."""
        outbound = minimised.direction == agreement.outbound.direction
        policy = agreement.outbound if outbound else agreement.inbound
        self._quota.take_within(
            conn,
            agreement.id,
            minimised.direction,
            minimised.purpose,
            limit=agreement.daily_quota(policy, minimised.exchange_type, minimised.purpose),
            what=what,
        )


@dataclass(frozen=True)
class ExchangeUnit:
    """What :meth:`AgreementGate.commit_exchange` commits an exchange under: the
    agreement, the minimised payload whose purpose's quota it takes (``None``: it takes
    none), and the name of the unit in a quota refusal."""

    agreement: AgreementInForce
    minimised: MinimisedPayload | None
    what: str


def _refuse_ended(agreement: AgreementInForce, record: LifecycleRecord | None) -> None:
    if record is not None:
        raise AgreementRejected(
            f"agreement {agreement.id!r} version {agreement.version} was {record.status} "
            f"by {record.changed_by_state}",
            reason=str(record.status).upper(),
        )
