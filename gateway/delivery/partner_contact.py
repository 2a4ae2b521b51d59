"""What real traffic shows of each partner: when a call last reached its gateway, and
whether the last call did.

Every call to a partner (deliveries, acknowledgements, queries, agreement
confirmations, cosigning, the doctor's pings) goes through a
:class:`~gateway.delivery.partners.PartnerChannels` channel, which carries this
recorder's interceptor; nothing else has to remember to report. A call reached the
partner when its gateway answered, whatever the answer: a refusal is an answer.
``UNAVAILABLE`` or ``DEADLINE_EXCEEDED`` without a Pouch status detail is the transport
saying it did not (connection refused, TLS failed, no answer in time); a Pouch gateway's
own ``UNAVAILABLE`` (its database is busy) carries ``google.rpc`` details and counts as
reached. A call the caller cancelled says nothing either way.

The gauges ``pouch_partner_last_contact_seconds`` and ``pouch_partner_reachable`` follow
each record; :meth:`PartnerContacts.snapshot` gives ``pouch doctor`` the same view.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import grpc
import grpc.aio

from gateway.metrics import GatewayMetrics

_NOT_REACHED = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
_STATUS_DETAILS = "grpc-status-details-bin"


@dataclass(frozen=True)
class PartnerContact:
    """A partner's last contact (``None``: no call reached it since start) and whether
    the last call reached it (``None``: no call yet)."""

    state: str
    last_contact: datetime | None
    reachable: bool | None


class PartnerContacts:
    """Thread-safe record of each partner's contact, mirrored in the gauges."""

    def __init__(
        self,
        metrics: GatewayMetrics | None = None,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._metrics = metrics
        self._clock = clock
        self._lock = threading.Lock()
        self._last: dict[str, datetime] = {}
        self._reachable: dict[str, bool] = {}

    def record(self, state: str, *, reached: bool) -> None:
        now = self._clock()
        with self._lock:
            self._reachable[state] = reached
            if reached:
                self._last[state] = now
        if self._metrics is not None:
            self._metrics.partner_reachable.labels(state).set(1 if reached else 0)
            if reached:
                self._metrics.partner_last_contact.labels(state).set(now.timestamp())

    def snapshot(self, states: Iterable[str]) -> tuple[PartnerContact, ...]:
        with self._lock:
            return tuple(
                PartnerContact(state, self._last.get(state), self._reachable.get(state))
                for state in sorted(states)
            )

    def interceptor(self, state: str) -> grpc.aio.ClientInterceptor:
        """The interceptor that records every unary call on ``state``'s channel."""
        return cast(grpc.aio.ClientInterceptor, _ContactInterceptor(self, state))


class _ContactInterceptor(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[type-arg]
    def __init__(self, contacts: PartnerContacts, state: str) -> None:
        self._contacts = contacts
        self._state = state

    async def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Any],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        call = await continuation(client_call_details, request)
        code = await call.code()
        if code != grpc.StatusCode.CANCELLED:
            reached = code not in _NOT_REACHED or await _pouch_answered(call)
            self._contacts.record(self._state, reached=reached)
        return call


async def _pouch_answered(call: Any) -> bool:
    trailing = await call.trailing_metadata()
    return any(key == _STATUS_DETAILS for key, _ in trailing or ())
