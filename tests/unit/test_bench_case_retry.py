"""The case benchmark makes a transition again while the gateway answers UNAVAILABLE."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import grpc.aio
import pytest

from bench.case_load import _transition
from pouch.v1 import representation_pb2, representation_pb2_grpc

METADATA = (("authorization", "Bearer test"),)


class _Busy:
    """``TransitionCase`` answering ``refusals`` calls with ``code``, then the case moved."""

    def __init__(self, refusals: int, code: grpc.StatusCode) -> None:
        self.calls = 0
        self._refusals = refusals
        self._code = code

    async def transition(
        self,
        request: representation_pb2.TransitionCaseRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> representation_pb2.TransitionCaseResponse:
        self.calls += 1
        if self.calls <= self._refusals:
            await context.abort(self._code, "database busy")
        return representation_pb2.TransitionCaseResponse()

    def handler(self) -> grpc.GenericRpcHandler[Any, Any]:
        return grpc.method_handlers_generic_handler(
            "pouch.v1.RepresentationService",
            {
                "TransitionCase": grpc.unary_unary_rpc_method_handler(
                    self.transition,
                    request_deserializer=representation_pb2.TransitionCaseRequest.FromString,
                    response_serializer=representation_pb2.TransitionCaseResponse.SerializeToString,
                )
            },
        )


async def _call_against(servicer: _Busy) -> int:
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((servicer.handler(),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = representation_pb2_grpc.RepresentationServiceStub(channel)
            request = representation_pb2.TransitionCaseRequest(
                case_id="c-1", target_state=representation_pb2.CASE_STATE_ACCEPTED
            )
            return await _transition(stub, request, METADATA)
    finally:
        await server.stop(None)


def test_unavailable_answers_are_retried_and_counted() -> None:
    servicer = _Busy(2, grpc.StatusCode.UNAVAILABLE)

    assert asyncio.run(_call_against(servicer)) == 2
    assert servicer.calls == 3


def test_a_refusal_is_not_retried() -> None:
    servicer = _Busy(1, grpc.StatusCode.FAILED_PRECONDITION)

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        asyncio.run(_call_against(servicer))
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert servicer.calls == 1
