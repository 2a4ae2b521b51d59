"""The registry adapter that calls the registry's ``RegistryService`` over gRPC.

The channel is mutual TLS with the identity the gateway presents to its registry.
A plaintext channel exists only for a registry on the same host, and only when it is
asked for by name (``insecure_loopback=True``); any other target without an identity
is refused at construction, so a typo cannot send personal data in clear.

Status codes are read as follows. ``INVALID_ARGUMENT``, ``FAILED_PRECONDITION``,
``ALREADY_EXISTS``, ``NOT_FOUND`` and ``OUT_OF_RANGE`` say the registry refused this
update and retrying will not change that: a rejection with reason
``REGISTRY_<CODE>``. Every other failure (unreachable, deadline, authentication,
unimplemented, internal) decided nothing and is :class:`RegistryUnavailable`.

Updates go in ``ApplyCivilUpdates`` calls of up to 64, in order (the adapter is a
:class:`~adapters.base.BatchRegistryAdapter`); a registry without that method, or one
refusing a batch's shape, is given them one ``ApplyCivilUpdate`` call each.

Identity lookups (:class:`~adapters.base.IdentitySource`) take the time the partner
left for the answer: a registry past it is :class:`RegistryDeadlineExceeded`.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc
import grpc.aio

from adapters.base import (
    APPLIED,
    InboundUpdate,
    RegistryDeadlineExceeded,
    RegistryOutcome,
    RegistryUnavailable,
)
from adapters.settings import LOOPBACK_HOSTS, target_host
from gateway.connect import ClientIdentity, secure_channel
from gateway.errors import SEND_SINGLY, PartnerRefused, from_call
from pouch.v1 import registry_pb2, registry_pb2_grpc, representation_pb2

_REFUSALS = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.OUT_OF_RANGE,
    }
)


MAX_UPDATES_PER_CALL = 64
"""Updates per ``ApplyCivilUpdates`` call, at most."""


def _request(item: InboundUpdate) -> registry_pb2.ApplyCivilUpdateRequest:
    return registry_pb2.ApplyCivilUpdateRequest(
        message_id=item.message_id,
        sender_state=item.sender_state,
        agreement_id=item.agreement_id,
        purpose=item.purpose,
        update=item.update,
    )


class GrpcRegistryAdapter:
    """Calls ``RegistryService`` of the registry at ``target``: updates and lookups."""

    def __init__(
        self,
        target: str,
        identity: ClientIdentity | None,
        timeout_s: float,
        *,
        insecure_loopback: bool = False,
    ) -> None:
        host = target_host(target)
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        if identity is not None and insecure_loopback:
            raise ValueError("give either a TLS identity or insecure_loopback, not both")
        if identity is None and not insecure_loopback:
            raise ValueError("a registry channel needs a TLS identity")
        if identity is None and host not in LOOPBACK_HOSTS:
            raise ValueError(
                f"refusing a plaintext channel to {host}: only 127.0.0.1 or localhost may "
                "be reached without TLS"
            )
        self._target = target
        self._identity = identity
        self._timeout_s = timeout_s
        self._channel: grpc.aio.Channel | None = None
        self._stub: registry_pb2_grpc.RegistryServiceAsyncStub | None = None
        self._singly = False  # the registry has no ApplyCivilUpdates

    def _registry(self) -> registry_pb2_grpc.RegistryServiceAsyncStub:
        # A grpc.aio channel belongs to the event loop it was made on: make it on first use.
        if self._stub is None:
            if self._identity is None:
                self._channel = grpc.aio.insecure_channel(self._target)
            else:
                self._channel = secure_channel(self._target, self._identity)
            self._stub = registry_pb2_grpc.RegistryServiceStub(self._channel)
        return self._stub

    async def apply(self, item: InboundUpdate) -> RegistryOutcome:
        try:
            response = await self._registry().ApplyCivilUpdate(
                _request(item), timeout=self._timeout_s
            )
        except grpc.aio.AioRpcError as e:
            who = f"registry at {self._target}"
            failure = from_call(e, who=who, prefix="REGISTRY", refusals=_REFUSALS)
            if isinstance(failure, PartnerRefused):
                return RegistryOutcome.rejected(failure.reason)
            raise RegistryUnavailable(f"{who} did not answer ({e.code().name})") from e
        return _outcome(response)

    async def apply_many(self, items: Sequence[InboundUpdate]) -> list[RegistryOutcome]:
        """``ApplyCivilUpdates`` calls of up to 64 updates, in order; a registry without
        the method (or refusing the batch's shape) is given them one call each, in order."""
        outcomes: list[RegistryOutcome] = []
        for start in range(0, len(items), MAX_UPDATES_PER_CALL):
            chunk = items[start : start + MAX_UPDATES_PER_CALL]
            if len(chunk) == 1 or self._singly:
                outcomes += [await self.apply(item) for item in chunk]
                continue
            request = registry_pb2.ApplyCivilUpdatesRequest(updates=[_request(i) for i in chunk])
            try:
                response = await self._registry().ApplyCivilUpdates(
                    request, timeout=self._timeout_s
                )
            except grpc.aio.AioRpcError as e:
                if e.code() not in SEND_SINGLY:
                    raise RegistryUnavailable(
                        f"registry at {self._target} did not answer ({e.code().name})"
                    ) from e
                self._singly = e.code() == grpc.StatusCode.UNIMPLEMENTED
                outcomes += [await self.apply(item) for item in chunk]
                continue
            if len(response.results) != len(chunk):
                raise RegistryUnavailable(
                    f"registry at {self._target} answered {len(response.results)} of "
                    f"{len(chunk)} updates"
                )
            outcomes += [_outcome(result) for result in response.results]
        return outcomes

    async def lookup_identity(
        self, query: registry_pb2.LookupIdentityRequest, *, timeout_s: float
    ) -> Sequence[registry_pb2.IdentityRecord]:
        if timeout_s <= 0:
            raise RegistryDeadlineExceeded("no time was left to ask the registry")
        try:
            response = await self._registry().LookupIdentity(
                query, timeout=min(timeout_s, self._timeout_s)
            )
        except grpc.aio.AioRpcError as e:
            if e.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise RegistryDeadlineExceeded(
                    f"registry at {self._target} did not answer in time"
                ) from e
            raise RegistryUnavailable(
                f"registry at {self._target} did not answer the lookup ({e.code().name})"
            ) from e
        return list(response.records)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close(None)
        self._channel = None
        self._stub = None

    async def notify_case_event(
        self, event_kind: str, case: representation_pb2.RepresentationCase
    ) -> None:
        request = registry_pb2.NotifyCaseEventRequest(event_kind=event_kind, case=case)
        try:
            await self._registry().NotifyCaseEvent(request, timeout=self._timeout_s)
        except grpc.aio.AioRpcError as e:
            raise RegistryUnavailable(
                f"registry at {self._target} did not take the case event ({e.code().name})"
            ) from e


def _outcome(response: registry_pb2.ApplyCivilUpdateResponse) -> RegistryOutcome:
    if response.outcome in (
        registry_pb2.APPLY_OUTCOME_APPLIED,
        registry_pb2.APPLY_OUTCOME_DUPLICATE,
    ):
        return APPLIED
    if response.outcome == registry_pb2.APPLY_OUTCOME_REJECTED:
        return RegistryOutcome.rejected(response.reason_code)
    # An unspecified outcome is not a decision; the update goes back to be tried again.
    raise RegistryUnavailable("registry answered without an outcome")
