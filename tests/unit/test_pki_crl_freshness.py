"""A CRL is honoured up to nextUpdate plus the grace, and refused after, by the clock given."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.pki import StateDirectory, init_state, load_certificate, refresh_crl
from gateway.pki.crl import CrlOwner, CrlStale, CrlWatcher, Freshness

NOW = datetime(2025, 1, 15, 12, 0, tzinfo=UTC)
GRACE = timedelta(hours=1)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def fr_dir(tmp_path: Path) -> StateDirectory:
    directory = init_state(
        "FR",
        tmp_path / "fr",
        dns_names=["gw.fr.example"],
        ip_addresses=[],
        peer_endpoint="gw.fr.example:8443",
        crl_location=None,
        now=NOW,
    )
    refresh_crl(directory.root, now=NOW, next_update_days=1)
    return directory


def watcher(directory: StateDirectory, clock: Clock) -> CrlWatcher:
    ca = load_certificate(directory.ca_cert)
    return CrlWatcher(directory.crl, ca, CrlOwner("partner", "FR"), grace=GRACE, clock=clock)


def test_crl_past_next_update_and_grace_is_refused(fr_dir: StateDirectory) -> None:
    clock = Clock(NOW + timedelta(days=1) + GRACE - timedelta(seconds=1))
    crl = watcher(fr_dir, clock)
    assert crl.freshness() is Freshness.IN_GRACE
    assert not crl.in_force().is_revoked(99)

    clock.now += timedelta(seconds=1)
    with pytest.raises(CrlStale) as refused:
        crl.in_force()
    assert refused.value.reason == "CRL_STALE"
    assert "partner CRL of FR" in refused.value.message


def test_fresh_crl_on_disk_ends_the_refusal_without_a_new_watcher(fr_dir: StateDirectory) -> None:
    clock = Clock(NOW + timedelta(days=3))
    crl = watcher(fr_dir, clock)
    assert crl.freshness() is Freshness.STALE
    with pytest.raises(CrlStale):
        crl.in_force()

    refresh_crl(fr_dir.root, now=clock.now, next_update_days=1)
    assert crl.freshness() is Freshness.FRESH
    assert not crl.in_force().is_revoked(99)


def test_negative_grace_is_refused(fr_dir: StateDirectory) -> None:
    ca = load_certificate(fr_dir.ca_cert)
    with pytest.raises(ValueError, match="grace"):
        CrlWatcher(fr_dir.crl, ca, grace=-GRACE)


def test_a_reloaded_crl_is_one_event_line_naming_whose_it_is(
    fr_dir: StateDirectory, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock(NOW)
    crl = watcher(fr_dir, clock)
    assert not crl.current().is_revoked(99)
    caplog.set_level("INFO", logger="pouch.events")
    refresh_crl(fr_dir.root, now=NOW + timedelta(seconds=5), next_update_days=1)
    os.utime(fr_dir.crl, ns=(time.time_ns(), time.time_ns() + 10_000_000))
    assert not crl.current().is_revoked(99)
    lines = [r for r in caplog.records if r.name == "pouch.events"]
    assert [r.getMessage() for r in lines] == ["crl_reloaded"]
    fields = lines[0].__dict__["pouch_event"]
    assert (fields["partner"], fields["by"]) == ("FR", "partner")
