"""Operators see what waits for a partner: the backlog gauges of real gateways.

AT's partner BE is down at first: an update submitted to AT waits in its outbox and the
scrape shows it, with its age. Once BE is up the update is delivered, applied and
acknowledged, and both gateways' gauges fall back to zero.
"""

from __future__ import annotations

import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pouch.v1 import common_pb2
from pouch_devtools.demo.deployment import Site, agreement_id_for, prepare_sites
from tests.integration.exchange_fixtures import (
    FAST_DELIVERY,
    LocalCaller,
    death_update,
    running_gateways,
    submission,
)

WITHIN_S = 15.0


def _scrape(site: Site) -> dict[tuple[str, str, str], float]:
    """The backlog and group-commit samples of ``site``'s gateway: (name, partner, stage)
    to value."""
    url = f"http://127.0.0.1:{site.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    samples: dict[tuple[str, str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if "backlog" in sample.name or sample.name.startswith("pouch_group_commit_"):
                labels = sample.labels
                key = (sample.name, labels.get("partner", ""), labels.get("stage", ""))
                samples[key] = sample.value
    return samples


def _waiting(samples: dict[tuple[str, str, str], float], store: str, partner: str) -> float:
    name = f"pouch_{store}_backlog_messages"
    return sum(v for (n, p, _), v in samples.items() if n == name and p == partner)


@pytest.fixture
def sites(tmp_path: Path) -> dict[str, Site]:
    return prepare_sites(
        tmp_path,
        ["AT", "BE"],
        now=datetime.now(UTC),
        agreements=[("AT", "BE")],
        delivery=FAST_DELIVERY,
    )


def test_an_update_waiting_for_a_partner_shows_in_the_backlog_until_it_is_acknowledged(
    sites: dict[str, Site], tmp_path: Path
) -> None:
    at, be = sites["AT"], sites["BE"]
    with (
        running_gateways(sites, ["AT"], spool_root=tmp_path / "spool"),
        LocalCaller(at, ["civil:submit"]) as clerk,
    ):
        message_id = clerk.submit(
            submission(
                death_update(datetime.now(UTC).date()),
                agreement_id=agreement_id_for("AT", "BE"),
                recipient_state="BE",
            )
        )
        time.sleep(1.0)  # BE is down: the dispatcher retries and the message waits
        down = _scrape(at)
        assert down[("pouch_backlog_readable", "", "")] == 1
        assert _waiting(down, "outbox", "BE") == 1
        assert down[("pouch_outbox_backlog_messages", "BE", "dead")] == 0
        stage = next(
            s for (n, p, s), v in down.items() if n.endswith("outbox_backlog_messages") and v
        )
        assert stage in ("pending", "in_flight")
        assert down[("pouch_outbox_backlog_oldest_seconds", "BE", stage)] >= 1.0

        with running_gateways(sites, ["BE"], spool_root=tmp_path / "spool"):
            final = clerk.wait_until_final(message_id, within_s=WITHIN_S)
            assert final.state == common_pb2.DELIVERY_STATE_APPLIED
            deadline = time.monotonic() + WITHIN_S
            while True:  # BE's acknowledgement travels back on its own loop
                at_now, be_now = _scrape(at), _scrape(be)
                if _waiting(be_now, "inbox", "AT") == 0 or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            assert _waiting(at_now, "outbox", "BE") == 0
            assert _waiting(be_now, "inbox", "AT") == 0
            assert be_now[("pouch_inbox_backlog_oldest_seconds", "AT", "acknowledgement")] == 0
            # Every write of it went through each gateway's committer, one at a time.
            for samples in (at_now, be_now):
                batches = samples[("pouch_group_commit_batches_total", "", "")]
                assert samples[("pouch_group_commit_units_total", "", "")] >= batches >= 1
                assert samples[("pouch_group_commit_delayed_batches_total", "", "")] == 0
