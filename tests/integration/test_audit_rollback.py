"""A gateway whose database was replaced finds its audit log rolled back, and says so.

AT and BE run in this process over real TLS. AT's log is cosigned by BE; then AT is
stopped, its SQLite file moved away and a fresh database initialised with the same
keys (``pouch db init``), as a typo in ``database_url`` or an old backup would do.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import grpc
import pytest

from gateway.cli.db import init_database
from gateway.config import load_settings
from gateway.server.app import Gateway
from pouch.v1 import audit_pb2, common_pb2, peer_pb2
from pouch_devtools.demo.deployment import Site, agreement_id_for, prepare_sites
from tests.integration.conftest import error_reason
from tests.integration.exchange_fixtures import (
    FAST_DELIVERY,
    LocalCaller,
    PeerCaller,
    death_update,
    running_gateways,
    submission,
)
from tests.integration.test_audit_trail import Auditor

AT_BE = agreement_id_for("AT", "BE")
TIMEOUT_S = 30.0
T = TypeVar("T")


def eventually(probe: Callable[[], T | None], *, what: str, within_s: float = 15.0) -> T:
    deadline = time.monotonic() + within_s
    while (found := probe()) is None:
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within_s:.0f} s: {what}")
        time.sleep(0.1)
    return found


def publish(site: Site) -> audit_pb2.PublishCheckpointResponse:
    with Auditor(site, scopes=("admin",)) as operator:
        answer: audit_pb2.PublishCheckpointResponse = operator.stub.PublishCheckpoint(
            audit_pb2.PublishCheckpointRequest(), metadata=operator.metadata, timeout=TIMEOUT_S
        )
        return answer


def cosigned_by_be(be: Gateway) -> int:
    assert be.exchanges is not None
    seen = be.exchanges.witness.last_cosigned("AT")
    return 0 if seen is None else seen.tree_size


def rollback_gauge(gateway: Gateway) -> float | None:
    return gateway.metrics.registry.get_sample_value("pouch_audit_log_rollback", {"partner": "BE"})


def replace_database(site: Site, aside: Path) -> None:
    """Move the gateway's SQLite file away and initialise an empty one in its place."""
    (database,) = [p for p in site.root.rglob("pouch.db") if p.is_file()]
    aside.mkdir(parents=True)
    for path in database.parent.glob("pouch.db*"):
        path.rename(aside / path.name)
    init_database(load_settings(site.config_path))


def test_a_replaced_database_is_an_audit_log_rollback_refused_on_both_sides(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    sites = prepare_sites(
        tmp_path,
        ["AT", "BE"],
        now=datetime.now(UTC),
        agreements=[("AT", "BE")],
        delivery=FAST_DELIVERY,
        checkpoint_interval_s=0.5,
    )
    at = sites["AT"]
    spool = tmp_path / "spool"
    with running_gateways(sites, ["BE"], spool_root=spool) as partner:
        be = partner.gateway("BE")
        # The database BE witnessed: an exchange, then a published checkpoint.
        with running_gateways(sites, ["AT"], spool_root=spool) as first:
            with LocalCaller(at, ["civil:submit"]) as clerk:
                message_id = clerk.submit(
                    submission(
                        death_update(datetime.now(UTC).date()),
                        agreement_id=AT_BE,
                        recipient_state="BE",
                    )
                )
                assert clerk.wait_until_final(message_id).state == (
                    common_pb2.DELIVERY_STATE_APPLIED
                )
            answer = publish(at)
            assert answer.published
            assert rollback_gauge(first.gateway("AT")) == 0
        witnessed = cosigned_by_be(be)
        assert witnessed >= answer.tree_size > 0

        replace_database(at, tmp_path / "old-database")
        with running_gateways(sites, ["AT"], spool_root=spool) as second:
            gateway = second.gateway("AT")
            eventually(
                lambda: rollback_gauge(gateway) == 1 or None,
                what="AT shows pouch_audit_log_rollback for BE",
            )
            with pytest.raises(grpc.RpcError) as refused:
                publish(at)
            assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert error_reason(refused.value) == "AUDIT_LOG_ROLLBACK"
            assert "database was replaced or restored from an old backup" in str(
                refused.value.details()
            )
            # Nothing was offered to BE: what it witnessed stands.
            assert cosigned_by_be(be) == witnessed
            lines = [
                r.getMessage() for r in caplog.records if "AUDIT_LOG_ROLLBACK" in r.getMessage()
            ]
            assert any(f"cosigned a checkpoint of {witnessed}" in line for line in lines), lines

            # Should the new log be offered anyway, BE refuses it by name and says why.
            assert gateway.exchanges is not None
            size = gateway.exchanges.publisher.sign_current()
            stored = gateway.exchanges.checkpoints.get(size)
            assert stored is not None
            with PeerCaller(at, sites["BE"]) as as_at, pytest.raises(grpc.RpcError) as offered:
                as_at.stub.CosignCheckpoint(
                    peer_pb2.CosignCheckpointRequest(signed_checkpoint=stored.note),
                    timeout=TIMEOUT_S,
                )
    assert offered.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(offered.value) in {"CHECKPOINT_ROLLBACK", "CHECKPOINT_INCONSISTENT"}
    refusals = [
        r.getMessage()
        for r in caplog.records
        if r.getMessage().startswith("refusing to cosign a checkpoint of AT's audit log")
    ]
    assert refusals and error_reason(offered.value) in refusals[-1], refusals
