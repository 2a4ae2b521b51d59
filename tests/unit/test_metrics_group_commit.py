"""The group committer's counters, as Prometheus scrapes them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Connection

from gateway.metrics import GatewayMetrics, GroupCommitCollector
from gateway.store.engine import create_engine
from gateway.store.group_commit import GroupCommit


@pytest.fixture
def group(tmp_path: Path) -> Iterator[GroupCommit]:
    engine = create_engine(f"sqlite:///{tmp_path / 'pouch.db'}")
    committer = GroupCommit(engine, commit_delay_s=0.5)
    try:
        yield committer
    finally:
        committer.close()
        engine.dispose()


def _nothing(conn: Connection) -> None:
    return None


def test_a_scrape_shows_the_batches_units_and_delays_taken_so_far(group: GroupCommit) -> None:
    metrics = GatewayMetrics()
    metrics.registry.register(GroupCommitCollector(group.stats))
    value = metrics.registry.get_sample_value

    assert value("pouch_group_commit_batches_total") == 0
    assert value("pouch_group_commit_units_total") == 0
    for _ in range(3):
        group.run(_nothing)

    # One writer at a time: three batches of one, none of them delayed.
    assert value("pouch_group_commit_batches_total") == 3
    assert value("pouch_group_commit_units_total") == 3
    assert value("pouch_group_commit_delayed_batches_total") == 0
