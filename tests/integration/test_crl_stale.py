"""A CRL past its nextUpdate and the grace admits nobody of its CA, until a fresh one.

Each test runs its own AT gateway (BE its partner) over real TLS, and moves a CRL in
time by issuing it with the CA's own functions at another moment: a CRL issued ten
days ago with the usual seven days of validity is three days past its nextUpdate, well
beyond the default grace of 24 hours. The gateway keeps running throughout: the fresh
CRL is picked up from the file, as ``pouch pki revoke`` output would be.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest

from gateway.config import load_settings
from gateway.pki.crl import NEXT_UPDATE_DAYS, RevocationList, refresh_crl
from gateway.pki.keys import load_certificate
from gateway.server.app import Gateway
from pouch.v1 import gateway_pb2, gateway_pb2_grpc, peer_pb2, peer_pb2_grpc
from pouch_devtools.demo.deployment import Site, prepare_sites
from tests.integration.conftest import (
    GatewayThread,
    assert_safe_message,
    channel_to,
    error_reason,
)

TIMEOUT = 10.0
STALE_SINCE = timedelta(days=NEXT_UPDATE_DAYS + 3)
"""Issued this long ago, a CRL is three days past nextUpdate: beyond the 24 h grace."""
IN_GRACE_SINCE = timedelta(days=NEXT_UPDATE_DAYS, hours=1)
"""Issued this long ago, a CRL is one hour past nextUpdate: inside the grace."""


@dataclass(frozen=True)
class Running:
    at: Site
    be: Site
    gateway: Gateway

    @property
    def partner_crl(self) -> Path:
        """AT's copy of BE's CRL, the file its gateway watches."""
        return self.at.root / "partners" / "BE" / "crl.pem"


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Running]:
    sites = prepare_sites(tmp_path, ["AT", "BE"], now=datetime.now(UTC))
    gateway = Gateway(load_settings(sites["AT"].config_path))
    with GatewayThread(gateway):
        yield Running(sites["AT"], sites["BE"], gateway)


def reissue_partner_crl(running: Running, *, issued_ago: timedelta) -> None:
    """BE re-signs its CRL as of ``issued_ago`` and AT puts the copy in place atomically."""
    refresh_crl(running.be.pki.root, now=datetime.now(UTC) - issued_ago)
    staging = running.partner_crl.with_suffix(".new")
    shutil.copyfile(running.be.pki.crl, staging)
    staging.replace(running.partner_crl)


def reissue_own_crl(running: Running, *, issued_ago: timedelta) -> None:
    refresh_crl(running.at.pki.root, now=datetime.now(UTC) - issued_ago)


def ping_as_be(running: Running) -> str:
    target = f"127.0.0.1:{running.gateway.peer_port}"
    with channel_to(
        target,
        trusted_ca=running.at.pki.ca_cert.read_bytes(),
        chain=running.be.pki.gateway_cert.read_bytes(),
        key=running.be.pki.gateway_key.read_bytes(),
    ) as channel:
        answer = peer_pb2_grpc.PeerServiceStub(channel).Ping(
            peer_pb2.PingRequest(nonce="n-1"), timeout=TIMEOUT
        )
    return answer.caller_state


def info_as_operator(running: Running) -> str:
    site = running.at
    metadata = (("authorization", f"Bearer {site.token(['admin'], now=time.time())}"),)
    with channel_to(
        site.local_target,
        trusted_ca=site.pki.ca_cert.read_bytes(),
        chain=site.pki.client_cert("operator").read_bytes(),
        key=site.pki.client_key("operator").read_bytes(),
    ) as channel:
        answer = gateway_pb2_grpc.GatewayServiceStub(channel).GetGatewayInfo(
            gateway_pb2.GetGatewayInfoRequest(), metadata=metadata, timeout=TIMEOUT
        )
    return answer.state


def assert_refused_crl_stale(call: object) -> None:
    assert callable(call)
    with pytest.raises(grpc.RpcError) as refused:
        call()
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert error_reason(refused.value) == "CRL_STALE"
    assert_safe_message(refused.value)


def crl_warnings(caplog: pytest.LogCaptureFixture, words: str) -> int:
    return sum(
        1
        for r in caplog.records
        if r.name == "gateway.pki.crl" and r.levelno == logging.WARNING and words in r.message
    )


def test_partner_with_stale_crl_is_refused_until_a_fresh_crl_is_loaded(
    running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.pki.crl")
    assert ping_as_be(running) == "BE"

    reissue_partner_crl(running, issued_ago=STALE_SINCE)
    assert_refused_crl_stale(lambda: ping_as_be(running))
    assert_refused_crl_stale(lambda: ping_as_be(running))
    assert crl_warnings(caplog, "partner CRL of BE passed its nextUpdate") == 1

    reissue_partner_crl(running, issued_ago=timedelta(0))
    assert ping_as_be(running) == "BE"
    assert crl_warnings(caplog, "a fresh partner CRL of BE is in force") == 1


def test_local_caller_with_stale_own_crl_is_refused_until_a_fresh_crl_is_loaded(
    running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.pki.crl")
    assert info_as_operator(running) == "AT"

    reissue_own_crl(running, issued_ago=STALE_SINCE)
    assert_refused_crl_stale(lambda: info_as_operator(running))
    assert_refused_crl_stale(lambda: info_as_operator(running))
    assert crl_warnings(caplog, "own CRL of AT passed its nextUpdate") == 1

    reissue_own_crl(running, issued_ago=timedelta(0))
    assert info_as_operator(running) == "AT"
    assert crl_warnings(caplog, "a fresh own CRL of AT is in force") == 1


def test_partner_crl_in_grace_is_honoured_with_one_warning(
    running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.pki.crl")
    reissue_partner_crl(running, issued_ago=IN_GRACE_SINCE)
    assert ping_as_be(running) == "BE"
    assert ping_as_be(running) == "BE"
    assert crl_warnings(caplog, "stays in force until") == 1


def test_each_crl_next_update_is_a_metric_by_role_and_state(running: Running) -> None:
    reissue_partner_crl(running, issued_ago=STALE_SINCE)

    def next_update(path: Path, ca: Path) -> float:
        return RevocationList.load(path, load_certificate(ca)).next_update.timestamp()

    registry = running.gateway.metrics.registry
    name = "pouch_crl_next_update_timestamp_seconds"
    partner = registry.get_sample_value(name, {"role": "partner", "state": "BE"})
    own = registry.get_sample_value(name, {"role": "own", "state": "AT"})
    assert partner == next_update(running.partner_crl, running.be.pki.ca_cert)
    assert partner < time.time()
    assert own == next_update(running.at.pki.crl, running.at.pki.ca_cert)
    assert own > time.time()
