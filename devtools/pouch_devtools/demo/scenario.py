"""What ``pouch demo`` shows: two states' gateways talking over mutual TLS.

Each step is a real call over loopback TLS to a real ``pouch serve`` process; the
outcome printed is what the gateway answered, including its refusals.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.connect import ClientIdentity, bearer, secure_channel
from pouch.v1 import gateway_pb2, gateway_pb2_grpc, peer_pb2, peer_pb2_grpc
from pouch_devtools.demo.deployment import Site

CALL_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Step:
    """One call of the scenario and what came back."""

    caller: str
    target: str
    call: str
    expected: str
    outcome: str

    @property
    def as_expected(self) -> bool:
        return self.outcome.startswith(self.expected)


async def _status_of(call: object) -> str:
    try:
        await call  # type: ignore[misc]
    except grpc.aio.AioRpcError as e:
        return e.code().name
    return "OK"


async def run_scenario(a: Site, b: Site) -> list[Step]:
    steps: list[Step] = []
    now = time.time()

    for site in (a, b):
        async with secure_channel(site.local_target, site.client_identity()) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            answer = await health.Check(health_pb2.HealthCheckRequest(), timeout=CALL_TIMEOUT_S)
            steps.append(
                Step(
                    f"{site.state} operator",
                    f"{site.state} local API",
                    "grpc.health.v1.Health/Check",
                    "SERVING",
                    health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status),
                )
            )

    async with secure_channel(a.local_target, a.client_identity()) as channel:
        info_stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        info = await info_stub.GetGatewayInfo(
            gateway_pb2.GetGatewayInfoRequest(),
            metadata=bearer(a.token(["admin"], now=now)),
            timeout=CALL_TIMEOUT_S,
        )
        partners = ", ".join(f"{p.state} ({p.bundle_digest[:19]}…)" for p in info.partners)
        steps.append(
            Step(
                f"{a.state} operator (admin)",
                f"{a.state} local API",
                "GatewayService/GetGatewayInfo",
                "OK",
                f"OK: gateway {info.state}, partners {partners}, schema {info.schema_revision}",
            )
        )
        refused = info_stub.GetGatewayInfo(
            gateway_pb2.GetGatewayInfoRequest(),
            metadata=bearer(a.token(["civil:submit"], now=now)),
            timeout=CALL_TIMEOUT_S,
        )
        steps.append(
            Step(
                f"{a.state} registry (civil:submit only)",
                f"{a.state} local API",
                "GatewayService/GetGatewayInfo",
                "PERMISSION_DENIED",
                await _status_of(refused),
            )
        )

    async with secure_channel(b.peer_target, a.gateway_identity(trusting=b)) as channel:
        nonce = uuid.uuid4().hex
        pong = await peer_pb2_grpc.PeerServiceStub(channel).Ping(
            peer_pb2.PingRequest(nonce=nonce), timeout=CALL_TIMEOUT_S
        )
        steps.append(
            Step(
                f"{a.state} gateway",
                f"{b.state} peer API",
                "PeerService/Ping",
                "OK",
                f"OK: {pong.gateway_state} recognised the caller as {pong.caller_state}"
                + ("" if pong.nonce == nonce else " (nonce mismatch!)"),
            )
        )

    # B's operator certificate is not trusted by A's local API: refused in the handshake.
    foreign = ClientIdentity(
        trusted_ca=a.pki.ca_cert.read_bytes(),
        certificate_chain=b.pki.client_cert("operator").read_bytes(),
        private_key=b.pki.client_key("operator").read_bytes(),
    )
    async with secure_channel(a.local_target, foreign) as channel:
        call = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=CALL_TIMEOUT_S
        )
        steps.append(
            Step(
                f"{b.state} operator",
                f"{a.state} local API",
                "grpc.health.v1.Health/Check",
                "UNAVAILABLE",
                await _status_of(call),
            )
        )
    return steps
