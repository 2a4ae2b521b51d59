"""Real gateways on loopback for the integration tests.

``deployment`` makes three partnered states (AT, BE, CH) and one stranger (FR) whose
CA nobody trusts; ``gateway_at`` runs AT's gateway in this process on its own event
loop thread, so tests call it over real TLS sockets with ordinary blocking stubs.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from gateway.config import load_settings
from gateway.pki.authority import IssuedCertificate, StateAuthority
from gateway.pki.directory import StateDirectory
from gateway.pki.keys import certificate_pem, private_key_pem
from gateway.pki.layout import init_state
from gateway.server.app import Gateway
from pouch_devtools.demo.deployment import Site, prepare_sites

if TYPE_CHECKING:  # the fixtures module builds on this one: imported where used
    from tests.integration.exchange_fixtures import PeerCaller, RunningGateways


@dataclass(frozen=True)
class Deployment:
    sites: dict[str, Site]
    stranger: StateDirectory
    root: Path

    def authority(self, state: str) -> StateAuthority:
        if state == "FR":
            return StateAuthority.load(self.stranger.root)
        return StateAuthority.load(self.sites[state].pki.root)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Deployment:
    """Sites of AT, BE, CH and the stranger FR, shared by a module's tests (made once:
    about 0.6 s with ``gateway_at``, for each test if it were per test).

    Sharing is safe: the PKIs and configurations are read; a test that needs a
    certificate to expire, be revoked or claim another state issues a fresh one for
    itself, so revoking it touches no other test's identity.
    """
    root = tmp_path_factory.mktemp("deployment")
    now = datetime.now(UTC)
    sites = prepare_sites(root, ["AT", "BE", "CH"], now=now)
    stranger = init_state(
        "FR",
        root / "FR" / "pki",
        dns_names=["localhost"],
        ip_addresses=["127.0.0.1"],
        peer_endpoint="127.0.0.1:1",
        crl_location=None,
        now=now,
    )
    return Deployment(sites=sites, stranger=stranger, root=root)


class GatewayThread:
    """A gateway served from its own event loop on a background thread."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> Gateway:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.gateway.start(), self.loop).result(timeout=30)
        return self.gateway

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.gateway.stop(0.5), self.loop).result(timeout=30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


@pytest.fixture(scope="module")
def gateway_at(deployment: Deployment) -> Iterator[Gateway]:
    """AT's gateway, shared by a module's tests (made once with ``deployment``: about
    0.6 s to set up, plus its stop, for each test if it were per test).

    Sharing is safe: the TLS and token tests assert only on the answer to their own
    call; the metrics test asserts that the series its own calls touched are present,
    never on a count; revocations name certificates issued for that test.
    """
    settings = load_settings(deployment.sites["AT"].config_path)
    with GatewayThread(Gateway(settings)) as gateway:
        yield gateway


def channel_to(
    target: str, *, trusted_ca: bytes, chain: bytes | None, key: bytes | None
) -> grpc.Channel:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=trusted_ca, private_key=key, certificate_chain=chain
    )
    return grpc.secure_channel(target, credentials)


def issued_identity(issued: IssuedCertificate) -> tuple[bytes, bytes]:
    """(certificate chain PEM, private key PEM) of a freshly issued certificate."""
    assert issued.private_key is not None
    return certificate_pem(issued.certificate), private_key_pem(issued.private_key)


def error_reason(error: grpc.RpcError) -> str:
    """The stable reason code in the ``google.rpc.ErrorInfo`` detail of a refusal."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None, "refusal carries no google.rpc.Status"
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            assert info.domain == "pouch.gateway"
            return info.reason
    raise AssertionError("refusal carries no ErrorInfo")


FORBIDDEN_IN_MESSAGES = ("Traceback", "BEGIN", "PRIVATE KEY", 'File "', "eyJ")


def assert_safe_message(error: grpc.RpcError) -> None:
    """No stack trace, key material or token in what a refused caller is told."""
    text = f"{error.details()}"
    for marker in FORBIDDEN_IN_MESSAGES:
        assert marker not in text, f"{marker!r} leaked into {text!r}"


# For modules that define ``be_only``: BE's gateway running alone in this process.


@pytest.fixture
def be(be_only: RunningGateways) -> Gateway:
    return be_only.gateway("BE")


@pytest.fixture
def as_at(be_only: RunningGateways) -> Iterator[PeerCaller]:
    """AT's gateway identity calling BE's peer API."""
    from tests.integration.exchange_fixtures import PeerCaller

    with PeerCaller(be_only.sites["AT"], be_only.sites["BE"]) as caller:
        yield caller
