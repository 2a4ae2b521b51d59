"""A partner's contact is what its gateway's answers show, whatever they say.

A real grpc.aio server on loopback plays the partner; the channel carries the same
interceptor :class:`~gateway.delivery.partners.PartnerChannels` puts on every partner
channel.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

import grpc
import grpc.aio
import pytest
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from gateway.delivery.partner_contact import PartnerContacts
from gateway.metrics import GatewayMetrics
from pouch.v1 import peer_pb2, peer_pb2_grpc

NOON = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


class Partner(peer_pb2_grpc.PeerServiceServicer):
    def __init__(self, answer: str) -> None:
        self.answer = answer

    async def Ping(
        self, request: peer_pb2.PingRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> peer_pb2.PingResponse:
        if self.answer == "refuse":
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "not you")
        if self.answer == "busy":  # a Pouch gateway's own UNAVAILABLE carries details
            info = any_pb2.Any()
            info.Pack(error_details_pb2.ErrorInfo(reason="STORAGE_BUSY", domain="pouch.gateway"))
            status = status_pb2.Status(code=code_pb2.UNAVAILABLE, message="busy", details=[info])
            wire = rpc_status.to_status(status)
            await context.abort(wire.code, wire.details, wire.trailing_metadata)
        return peer_pb2.PingResponse(nonce=request.nonce, gateway_state="BE")


async def _ping_through(contacts: PartnerContacts, answer: str | None) -> grpc.StatusCode:
    """Ping a partner answering ``answer`` (``None``: its port is bound, nobody answers)."""
    server = grpc.aio.server()
    peer_pb2_grpc.add_PeerServiceServicer_to_server(
        Partner(answer or "ok"),  # type: ignore[abstract]
        server,
    )
    port = server.add_insecure_port("127.0.0.1:0")
    if answer is not None:
        await server.start()
    channel = grpc.aio.insecure_channel(
        f"127.0.0.1:{port}", interceptors=[contacts.interceptor("BE")]
    )
    try:
        await peer_pb2_grpc.PeerServiceStub(channel).Ping(peer_pb2.PingRequest(), timeout=2)
        return grpc.StatusCode.OK
    except grpc.aio.AioRpcError as e:
        return e.code()
    finally:
        await channel.close(None)
        await server.stop(None)


def run(call: Callable[[], Coroutine[Any, Any, grpc.StatusCode]]) -> grpc.StatusCode:
    return asyncio.run(call())


def gauge(metrics: GatewayMetrics, name: str) -> float | None:
    return metrics.registry.get_sample_value(name, {"partner": "BE"})


@pytest.mark.parametrize(
    ("answer", "code"),
    [
        ("ok", grpc.StatusCode.OK),
        ("refuse", grpc.StatusCode.PERMISSION_DENIED),
        ("busy", grpc.StatusCode.UNAVAILABLE),
    ],
)
def test_any_answer_of_the_partners_gateway_is_contact(answer: str, code: grpc.StatusCode) -> None:
    metrics = GatewayMetrics()
    contacts = PartnerContacts(metrics, clock=lambda: NOON)
    assert contacts.snapshot(["BE"])[0].reachable is None
    assert run(lambda: _ping_through(contacts, answer)) == code
    (be,) = contacts.snapshot(["BE"])
    assert (be.reachable, be.last_contact) == (True, NOON)
    assert gauge(metrics, "pouch_partner_reachable") == 1
    assert gauge(metrics, "pouch_partner_last_contact_seconds") == NOON.timestamp()


def test_a_partner_nobody_answers_for_is_unreachable_and_keeps_its_last_contact() -> None:
    metrics = GatewayMetrics()
    contacts = PartnerContacts(metrics, clock=lambda: NOON)
    assert run(lambda: _ping_through(contacts, "ok")) == grpc.StatusCode.OK
    unanswered = run(lambda: _ping_through(contacts, None))
    assert unanswered in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    (be,) = contacts.snapshot(["BE"])
    assert (be.reachable, be.last_contact) == (False, NOON)
    assert gauge(metrics, "pouch_partner_reachable") == 0
    assert gauge(metrics, "pouch_partner_last_contact_seconds") == NOON.timestamp()
