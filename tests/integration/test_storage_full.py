"""A full disk under a running gateway: named to the caller, seen by health, logged, survived.

The disk is full for real. AT's SQLite database lives on a tmpfs of its own
(``mount -t tmpfs -o size=...``, which needs root), and a file written until the kernel
answers ENOSPC fills what is left; deleting that file clears the fault. Where mounting is
not allowed the test is skipped: the committer's side of the same path (a driver error
with ``SQLITE_FULL``, then the probe) is covered by ``tests/unit/store/test_storage_faults.py``.

AT runs in this process over real TLS; its partner BE is not running, so what AT
acknowledged stays in its outbox for the test to count.
"""

from __future__ import annotations

import errno
import logging
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import func, select

from gateway.server.app import WRITE_SERVICES, Gateway
from gateway.store.tables import outbox
from pouch.v1 import civil_pb2
from pouch_devtools.demo.deployment import Site, agreement_id_for, prepare_sites
from tests.integration.conftest import assert_safe_message, channel_to, error_reason
from tests.integration.exchange_fixtures import (
    FAST_DELIVERY,
    LocalCaller,
    Traceable,
    death_update,
    running_gateways,
    submission,
)

DISK_BYTES = 8 * 1024 * 1024
AGREEMENT = agreement_id_for("AT", "BE")
MARKS = Traceable()
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A file system of :data:`DISK_BYTES` mounted for this test alone."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_BYTES}", "pouch-test", str(mount_point)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip("a tmpfs cannot be mounted here (root is needed); no disk to fill")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "--lazy", str(mount_point)], check=False)


def _fill(disk: Path) -> Path:
    """Write a file on ``disk`` until no byte more fits."""
    filler = disk / "filler"
    page = b"\xa5" * 4096
    with filler.open("wb", buffering=0) as f:
        while True:
            try:
                f.write(page)
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise
                return filler


def _until(condition: Callable[[], bool], what: str, within_s: float = 15.0) -> None:
    deadline = time.monotonic() + within_s
    while not condition():
        assert time.monotonic() < deadline, f"never {what}"
        time.sleep(0.05)


class _Health:
    def __init__(self, site: Site) -> None:
        self._channel = channel_to(
            site.local_target,
            trusted_ca=site.pki.ca_cert.read_bytes(),
            chain=site.pki.client_cert("operator").read_bytes(),
            key=site.pki.client_key("operator").read_bytes(),
        )
        self._stub = health_pb2_grpc.HealthStub(self._channel)

    def of(self, service: str) -> int:
        request = health_pb2.HealthCheckRequest(service=service)
        return int(self._stub.Check(request, timeout=5).status)

    def all_are(self, status: int) -> bool:
        return all(self.of(service) == status for service in WRITE_SERVICES)

    def close(self) -> None:
        self._channel.close()


def _outbox_size(gateway: Gateway) -> int:
    with gateway.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(outbox)).scalar_one())


def _sample(gateway: Gateway, name: str, reason: str) -> float | None:
    return gateway.metrics.registry.get_sample_value(name, {"reason": reason})


def _fault_lines(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "gateway.store.faults"]


def test_a_full_disk_is_named_reported_unhealthy_and_recovered_without_losing_a_write(
    small_disk: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.store.faults")
    sites = prepare_sites(
        tmp_path / "sites",
        ["AT", "BE"],
        now=datetime.now(UTC),
        agreements=[("AT", "BE")],
        delivery=FAST_DELIVERY,
        database_urls={"AT": f"sqlite:///{small_disk / 'pouch.db'}"},
    )
    today = date.today()

    def request(name: str) -> civil_pb2.SubmitUpdateRequest:
        update = death_update(today, marks=MARKS, family_name=f"Wouters-{name}")
        return submission(update, agreement_id=AGREEMENT, recipient_state="BE")

    with (
        running_gateways(sites, ["AT"], spool_root=tmp_path / "spool") as running,
        LocalCaller(sites["AT"], ["civil:submit"]) as caller,
    ):
        gateway = running.gateway("AT")
        health = _Health(sites["AT"])
        try:
            acknowledged = [caller.submit(request("before"))]
            assert health.all_are(SERVING)

            filler = _fill(small_disk)
            refusals: list[grpc.RpcError] = []
            for attempt in range(200):
                try:
                    acknowledged.append(caller.submit(request(f"full-{attempt}")))
                except grpc.RpcError as e:
                    refusals.append(e)
                    if len(refusals) == 3:
                        break
            assert len(refusals) == 3, "the disk never filled"
            for refusal in refusals:
                assert refusal.code() == grpc.StatusCode.UNAVAILABLE
                assert error_reason(refusal) == "STORAGE_FULL"
                assert_safe_message(refusal)
            _until(lambda: health.all_are(NOT_SERVING), "reported NOT_SERVING")
            assert _sample(gateway, "pouch_storage_fault", "STORAGE_FULL") == 1

            filler.unlink()
            _until(lambda: health.all_are(SERVING), "SERVING again once the disk had room")
            acknowledged.append(caller.submit(request("after")))

            for message_id in acknowledged:
                assert caller.status(message_id).message_id == message_id
            assert _outbox_size(gateway) == len(acknowledged)  # nothing refused was kept
            assert _sample(gateway, "pouch_storage_faults_total", "STORAGE_FULL") == 1
            assert _sample(gateway, "pouch_storage_fault", "STORAGE_FULL") == 0
            refused_writes = _sample(gateway, "pouch_storage_refused_writes_total", "STORAGE_FULL")
            assert refused_writes is not None and refused_writes >= len(refusals)
        finally:
            health.close()

    lines = _fault_lines(caplog)
    assert lines[0] == (
        logging.WARNING,
        "storage fault STORAGE_FULL: writes are refused until the database takes one again",
    )
    ended = [text for level, text in lines if level == logging.INFO]
    assert len(ended) == 1
    assert ended[0].startswith("storage fault STORAGE_FULL ended after ")
    assert ended[0].endswith(f"{int(refused_writes)} writes were refused meanwhile")
    assert MARKS.act_reference not in caplog.text
    assert "Wouters" not in caplog.text
