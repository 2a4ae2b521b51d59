"""What ``pouch console --check`` asks beyond the file: can the console reach its
gateway and its identity provider, as it will once it serves?

* the gateway's local API, over mutual TLS with the console's own certificate: gRPC
  health (reachable with the certificate alone), so a wrong CA, a certificate the
  gateway does not take, or a stopped gateway shows here and not at an officer's first
  page;
* the provider's discovery document, over TLS with ``[oidc] ca``: it must name the
  issuer configured, and offer the code flow with PKCE S256.

Each finding is one line naming what was checked and, on failure, what to do.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc

from console.auth import provider_tls
from console.config import ConsoleSettings
from console.gateway_calls import GatewayConnection

TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Finding:
    ok: bool
    check: str
    detail: str

    def line(self) -> str:
        return f"{'OK  ' if self.ok else 'FAIL'} {self.check}: {self.detail}"


async def _gateway(settings: ConsoleSettings) -> Finding:
    """Over the same connection the console's pages use."""
    connection = GatewayConnection(settings.gateway)
    check = f"gateway {settings.gateway.target}"
    try:
        answer = await health_pb2_grpc.HealthStub(connection.channel).Check(
            health_pb2.HealthCheckRequest(), timeout=TIMEOUT_S
        )
    except grpc.aio.AioRpcError as e:
        return Finding(
            False,
            check,
            f"{e.code().name}: check gateway.target, gateway.ca and that the gateway "
            "takes gateway.certificate (issued by the state's CA, not revoked)",
        )
    finally:
        await connection.close()
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
    return Finding(answer.status == health_pb2.HealthCheckResponse.SERVING, check, status)


async def _provider(settings: ConsoleSettings) -> Finding:
    issuer = settings.oidc.issuer
    check = f"identity provider {issuer}"
    try:
        # The TLS the sign-in uses: the provider's CA, the console's certificate.
        async with httpx.AsyncClient(verify=provider_tls(settings), timeout=TIMEOUT_S) as client:
            answer = await client.get(f"{issuer}/.well-known/openid-configuration")
        answer.raise_for_status()
        document = answer.json()
    except (httpx.HTTPError, ValueError) as e:
        return Finding(
            False,
            check,
            f"discovery unreadable ({type(e).__name__}): check oidc.issuer and oidc.ca",
        )
    if not isinstance(document, dict) or document.get("issuer") != issuer:
        return Finding(False, check, "its discovery names another issuer than oidc.issuer")
    if "S256" not in (document.get("code_challenge_methods_supported") or []):
        return Finding(False, check, "it does not offer PKCE with S256")
    if "code" not in (document.get("response_types_supported") or []):
        return Finding(False, check, "it does not offer the authorization code flow")
    return Finding(True, check, "discovery names this issuer, the code flow and PKCE S256")


def preflight(settings: ConsoleSettings) -> list[Finding]:
    async def both() -> list[Finding]:
        return list(await asyncio.gather(_gateway(settings), _provider(settings)))

    return asyncio.run(both())
