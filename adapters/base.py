"""The contract between the gateway's inbox and a national registry.

The gateway hands every inbound civil-record update to one :class:`RegistryAdapter`
as an :class:`InboundUpdate` and turns the answer into the signed receipt:

* a :class:`RegistryOutcome` is the registry's business decision: applied (a
  duplicate counts as applied) or rejected with a stable reason code;
* :class:`RegistryUnavailable` means nothing was decided (registry down, timeout,
  unreadable answer) and the gateway must hand the same update over again later.

Adapters are idempotent per ``message_id``: after a crash the gateway may hand over
an update it already handed over, and the receiving side de-duplicates by that id.

Adapters whose registry decides asynchronously (SQL table, spool) answer "handed
over", which is ``RegistryOutcome(applied=True)``; an adapter that can report the
registry's later decisions implements :class:`DecisionSource`.

Identity confirmations are synchronous: an adapter whose registry can be asked while
the partner waits implements :class:`IdentitySource`. It returns the registry's
records to the gateway only; the gateway computes the answer and never forwards them.
A registry that does not answer within the time left raises
:class:`RegistryDeadlineExceeded`, never an empty answer (which would read as
"no such document").
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Protocol, runtime_checkable

from gateway.errors import DeadlineExceeded, Unavailable
from gateway.store.tables import AGREEMENT_ID_LENGTH, MESSAGE_ID_LENGTH, PURPOSE_LENGTH
from pouch.v1 import civil_pb2, registry_pb2, representation_pb2

# Message ids end up in file names (spool) and keys; only these characters may.
_MESSAGE_ID = re.compile(rf"^[A-Za-z0-9][A-Za-z0-9._-]{{0,{MESSAGE_ID_LENGTH - 1}}}$")
_STATE = re.compile(r"^[A-Z]{2}$")
_REASON_CODE = re.compile(r"^[A-Z][A-Z0-9_]{0,63}$")

GENERIC_REJECTION: Final = "REGISTRY_REJECTED"
"""The reason given when a registry rejects without a usable reason code of its own."""


class RegistryUnavailable(Unavailable):
    """The registry could not be reached or gave no decision; hand the update over later."""

    reason = "REGISTRY_UNAVAILABLE"


class RegistryDeadlineExceeded(DeadlineExceeded):
    """The registry did not answer an identity lookup within the time the partner allows."""

    reason = "REGISTRY_DEADLINE_EXCEEDED"


@dataclass(frozen=True)
class InboundUpdate:
    """A civil-record update the gateway has verified, stored in its inbox and may hand over."""

    message_id: str
    sender_state: str
    agreement_id: str
    purpose: str
    update: civil_pb2.CivilRecordUpdate

    def __post_init__(self) -> None:
        if not _MESSAGE_ID.fullmatch(self.message_id):
            raise ValueError(
                f"message_id must be 1 to {MESSAGE_ID_LENGTH} letters, digits, '.', '_' "
                "or '-', starting with a letter or digit"
            )
        if not _STATE.fullmatch(self.sender_state):
            raise ValueError("sender_state must be a two-letter upper-case state code")
        if not 0 < len(self.agreement_id) <= AGREEMENT_ID_LENGTH:
            raise ValueError(f"agreement_id must be 1 to {AGREEMENT_ID_LENGTH} characters")
        if not 0 < len(self.purpose) <= PURPOSE_LENGTH:
            raise ValueError(f"purpose must be 1 to {PURPOSE_LENGTH} characters")


def is_reason_code(value: str) -> bool:
    """A stable reason code: upper-case letters, digits and '_', at most 64 characters."""
    return _REASON_CODE.fullmatch(value) is not None


@dataclass(frozen=True)
class RegistryOutcome:
    """The registry's business decision on one update.

    ``reason_code`` is empty exactly when ``applied``; a rejection's code is stable and
    never carries personal data, since it travels to the partner in a signed receipt.
    """

    applied: bool
    reason_code: str

    def __post_init__(self) -> None:
        if self.applied and self.reason_code:
            raise ValueError("an applied outcome carries no reason code")
        if not self.applied and not is_reason_code(self.reason_code):
            raise ValueError(
                "a rejection needs a reason code of upper-case letters, digits and '_'"
            )

    @classmethod
    def rejected(cls, reason_code: str) -> RegistryOutcome:
        """A rejection; a code the registry made up outside the pattern becomes generic."""
        return cls(False, reason_code if is_reason_code(reason_code) else GENERIC_REJECTION)


APPLIED: Final = RegistryOutcome(applied=True, reason_code="")
"""Applied, already applied, or (for an asynchronous registry) handed over."""


@dataclass(frozen=True)
class RegistryDecision:
    """A decision an asynchronous registry took after the update was handed over."""

    message_id: str
    outcome: RegistryOutcome


class RegistryAdapter(Protocol):
    """How the gateway hands an inbound update to its national registry."""

    async def apply(self, item: InboundUpdate) -> RegistryOutcome:
        """Hand ``item`` over; raise :class:`RegistryUnavailable` when nothing was decided."""
        ...

    async def close(self) -> None:
        """Release connections; the adapter is not used afterwards."""
        ...


@runtime_checkable
class BatchRegistryAdapter(RegistryAdapter, Protocol):
    """A registry adapter that can hand over several updates, in order, in one go."""

    async def apply_many(self, items: Sequence[InboundUpdate]) -> list[RegistryOutcome]:
        """Hand ``items`` over in their order; one outcome each, in that order. Raise
        :class:`RegistryUnavailable` when the outcome of any of them is not known (the
        gateway hands them all over again; the registry applies each id once)."""
        ...


class DecisionSource(Protocol):
    """An adapter whose registry decides later, and that reports those decisions."""

    async def poll_outcomes(self, limit: int = 100) -> Sequence[RegistryDecision]:
        """Decisions not yet acknowledged, oldest first; reading them changes nothing."""
        ...

    async def acknowledge_outcomes(self, message_ids: Sequence[str]) -> None:
        """Mark decisions as recorded by the gateway, so they are not reported again."""
        ...


@runtime_checkable
class IdentitySource(Protocol):
    """An adapter whose registry answers identity lookups while the partner waits."""

    async def lookup_identity(
        self, query: registry_pb2.LookupIdentityRequest, *, timeout_s: float
    ) -> Sequence[registry_pb2.IdentityRecord]:
        """The records that fit ``query``; :class:`RegistryDeadlineExceeded` past the time,
        :class:`RegistryUnavailable` when the registry could not be asked."""
        ...


@runtime_checkable
class CaseEventSink(Protocol):
    """An adapter that tells the registry or case system of representation-case events.

    The gateway hands over each event received from the partner, and each missed
    deadline, until this returns; :class:`RegistryUnavailable` means try again later.
    Sinks are idempotent per ``(case id, event_kind, case.updated_at)``: after a crash an
    event may be handed over twice.
    """

    async def notify_case_event(
        self, event_kind: str, case: representation_pb2.RepresentationCase
    ) -> None: ...
