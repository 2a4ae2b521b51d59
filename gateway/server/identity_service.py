"""``IdentityService`` on the local API: one synchronous confirmation per call.

The caller's own deadline bounds the wait for the partner: the gateway asks the
partner for no longer than the caller will wait, nor longer than the agreement allows.
"""

from __future__ import annotations

from typing import Any

import grpc.aio

from gateway.exchanges.identity import IdentityRequester
from gateway.server.caller import current_principal
from pouch.v1 import identity_pb2, identity_pb2_grpc


class IdentityService(identity_pb2_grpc.IdentityServiceServicer):
    def __init__(self, requester: IdentityRequester) -> None:
        self._requester = requester

    async def ConfirmIdentity(
        self,
        request: identity_pb2.ConfirmIdentityRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> identity_pb2.ConfirmIdentityResponse:
        return await self._requester.confirm(
            current_principal(), request, time_left_s=context.time_remaining()
        )
