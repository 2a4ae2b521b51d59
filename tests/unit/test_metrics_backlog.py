"""The backlog gauges: every configured partner and stage, the ages, and a failed read."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import generate_latest

from gateway.errors import StorageUnavailable
from gateway.metrics import BacklogCollector, GatewayMetrics
from gateway.store.backlog import StageBacklog

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def _watched(outbox: list[StageBacklog] | Exception, inbox: list[StageBacklog]) -> GatewayMetrics:
    def read_outbox() -> list[StageBacklog]:
        if isinstance(outbox, Exception):
            raise outbox
        return outbox

    metrics = GatewayMetrics()
    metrics.registry.register(
        BacklogCollector(read_outbox, lambda: inbox, ["DE", "BE"], lambda: NOW)
    )
    return metrics


def test_every_partner_gets_every_stage_and_the_oldest_message_s_age() -> None:
    metrics = _watched(
        [StageBacklog("DE", "dead", 3, NOW - timedelta(hours=2))],
        [
            StageBacklog("BE", "acknowledgement_impossible", 1, NOW - timedelta(days=40)),
            StageBacklog("LU", "handover", 2, NOW - timedelta(seconds=5)),  # a former partner
        ],
    )
    value = metrics.registry.get_sample_value

    assert value("pouch_backlog_readable") == 1
    assert value("pouch_outbox_backlog_messages", {"partner": "DE", "stage": "dead"}) == 3
    assert value("pouch_outbox_backlog_oldest_seconds", {"partner": "DE", "stage": "dead"}) == 7200
    for partner in ("DE", "BE"):
        for stage in ("pending", "in_flight"):
            labels = {"partner": partner, "stage": stage}
            assert value("pouch_outbox_backlog_messages", labels) == 0
            assert value("pouch_outbox_backlog_oldest_seconds", labels) == 0
        for stage in ("handover", "registry_answer", "acknowledgement"):
            assert value("pouch_inbox_backlog_messages", {"partner": partner, "stage": stage}) == 0
    impossible = {"partner": "BE", "stage": "acknowledgement_impossible"}
    assert value("pouch_inbox_backlog_messages", impossible) == 1
    assert value("pouch_inbox_backlog_oldest_seconds", impossible) == 40 * 86400
    former = {"partner": "LU", "stage": "handover"}
    assert value("pouch_inbox_backlog_messages", former) == 2
    assert value("pouch_inbox_backlog_oldest_seconds", former) == 5
    # The former partner shows only where it still holds something.
    assert (
        value("pouch_inbox_backlog_messages", {"partner": "LU", "stage": "registry_answer"}) is None
    )


def test_an_unreadable_database_leaves_the_other_metrics_scrapable(
    caplog: pytest.LogCaptureFixture,
) -> None:
    metrics = _watched(StorageUnavailable("the database at 10.0.0.5 refused: passport X"), [])
    metrics.deliveries.labels("DE", "delivered").inc()

    with caplog.at_level(logging.WARNING, logger="gateway.metrics"):
        text = generate_latest(metrics.registry).decode()

    assert "pouch_backlog_readable 0.0" in text
    assert 'pouch_deliveries_total{partner="DE",result="delivered"} 1.0' in text
    assert "pouch_outbox_backlog_messages{" not in text
    assert "pouch_inbox_backlog_messages{" not in text
    assert "the backlog could not be read: StorageUnavailable" in caplog.text
    assert "passport" not in caplog.text and "10.0.0.5" not in caplog.text
