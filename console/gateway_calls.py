"""The console's one connection to its state's gateway, and what a refusal says.

Every call carries the signed-in officer's own access token. The token is bound to
the console's client certificate (RFC 8705), so the gateway sees the officer as the
acting principal and the console as the client: the console has no identity of its
own with scopes, and a call without an officer is never made.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
import grpc.aio
from google.protobuf.message import Message

from console.config import GatewaySection
from gateway.connect import ClientIdentity, bearer, secure_channel
from gateway.errors import status_details
from pouch.v1 import (
    agreement_pb2_grpc,
    audit_pb2_grpc,
    gateway_pb2_grpc,
    representation_pb2_grpc,
)

Resp = TypeVar("Resp", bound=Message)

_UNREACHED = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


@dataclass(frozen=True)
class Violation:
    field: str
    description: str


class GatewayRefusal(Exception):
    """The gateway refused or could not be reached; the page shows these words."""

    def __init__(
        self,
        *,
        status: str,
        reason: str,
        message: str,
        violations: tuple[Violation, ...] = (),
        unreached: bool = False,
    ) -> None:
        super().__init__(status, reason)
        self.status = status
        self.reason = reason
        self.message = message
        self.violations = violations
        self.unreached = unreached

    def __str__(self) -> str:
        return f"{self.status} {self.reason}".strip()


class GatewayConnection:
    """One mutual-TLS channel to the local API, shared by every officer's calls."""

    def __init__(self, section: GatewaySection) -> None:
        self._identity = ClientIdentity.from_files(
            trusted_ca=section.ca, certificate=section.certificate, private_key=section.key
        )
        self._target = section.target
        self._timeout_s = section.timeout_seconds
        self._channel: grpc.aio.Channel | None = None

    @property
    def channel(self) -> grpc.aio.Channel:
        if self._channel is None:
            self._channel = secure_channel(self._target, self._identity)
        return self._channel

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close(None)
            self._channel = None

    def representation(self) -> representation_pb2_grpc.RepresentationServiceStub:
        return representation_pb2_grpc.RepresentationServiceStub(self.channel)

    def audit(self) -> audit_pb2_grpc.AuditServiceStub:
        return audit_pb2_grpc.AuditServiceStub(self.channel)

    def gateway(self) -> gateway_pb2_grpc.GatewayServiceStub:
        return gateway_pb2_grpc.GatewayServiceStub(self.channel)

    def agreements(self) -> agreement_pb2_grpc.AgreementServiceStub:
        return agreement_pb2_grpc.AgreementServiceStub(self.channel)

    async def call(self, method: Callable[..., Any], request: Message, token: str) -> Any:
        """``method(request)`` as the officer whose ``token`` is given."""
        try:
            return await method(request, metadata=bearer(token), timeout=self._timeout_s)
        except grpc.aio.AioRpcError as e:
            raise refusal_of(e) from None

    async def stream(
        self, method: Callable[..., Any], request: Message, token: str
    ) -> AsyncIterator[Any]:
        """The answers of a server-streaming call, until it ends or the caller stops."""
        call = method(request, metadata=bearer(token))
        try:
            async for answer in call:
                yield answer
        except grpc.aio.AioRpcError as e:
            raise refusal_of(e) from None
        finally:
            call.cancel()


def refusal_of(error: grpc.aio.AioRpcError) -> GatewayRefusal:
    code = error.code()
    details = status_details(error)
    return GatewayRefusal(
        status=code.name,
        reason=details.reason,
        message=error.details() or "",
        violations=tuple(Violation(v.field, v.rule) for v in details.violations),
        unreached=code in _UNREACHED,
    )
