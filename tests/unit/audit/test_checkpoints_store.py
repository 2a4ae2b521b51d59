"""Stored checkpoints and cosignatures, and the partner checkpoints we witnessed.

Each test runs once on SQLite and once on PostgreSQL, through the store's fixtures.
"""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor
from threading import Barrier

import pytest
from sqlalchemy import Engine

from gateway.audit.checkpoints_store import (
    CheckpointStore,
    ForkedCheckpoint,
    SeenCheckpoint,
    WitnessStore,
)
from gateway.audit.merkle import leaf_hash
from gateway.store.engine import create_engine
from tests.unit.store import conftest as store_fixtures
from tests.unit.store.conftest import START, FakeClock

# The store's fixtures: each test runs on a fresh SQLite file and a fresh PostgreSQL schema.
database_url = store_fixtures.database_url
engine = store_fixtures.engine
migrated_engine = store_fixtures.migrated_engine


def _root(size: int) -> bytes:
    return leaf_hash(f"root of {size}".encode())


def _note(size: int) -> str:
    return f"example.org/pouch/FR\n{size}\n{_root(size).hex()}\n\n— FR signature-{size}\n"


@pytest.fixture
def checkpoints(migrated_engine: Engine) -> CheckpointStore:
    return CheckpointStore(migrated_engine, clock=FakeClock(START))


@pytest.fixture
def witness(migrated_engine: Engine) -> WitnessStore:
    return WitnessStore(migrated_engine, clock=FakeClock(START))


def test_a_checkpoint_is_kept_once_and_read_back(checkpoints: CheckpointStore) -> None:
    assert checkpoints.latest() is None
    assert checkpoints.record_checkpoint(5, _root(5), _note(5)) is True
    assert checkpoints.record_checkpoint(5, _root(5), _note(5)) is False
    assert checkpoints.record_checkpoint(9, _root(9), _note(9)) is True

    kept = checkpoints.get(5)
    assert kept is not None
    assert (kept.tree_size, kept.root_hash, kept.note) == (5, _root(5), _note(5))
    assert (kept.created_at, kept.published) == (START, False)
    latest = checkpoints.latest()
    assert latest is not None
    assert latest.tree_size == 9
    assert checkpoints.get(6) is None


def test_a_second_root_for_one_tree_size_is_a_fork(checkpoints: CheckpointStore) -> None:
    checkpoints.record_checkpoint(5, _root(5), _note(5))
    with pytest.raises(ForkedCheckpoint):
        checkpoints.record_checkpoint(5, _root(6), _note(6))
    kept = checkpoints.get(5)
    assert kept is not None
    assert kept.root_hash == _root(5)


def test_cosignatures_are_kept_once_per_witness(checkpoints: CheckpointStore) -> None:
    checkpoints.record_checkpoint(5, _root(5), _note(5))

    assert checkpoints.add_cosignature(5, "DE", "— DE cosig-1") is True
    assert checkpoints.add_cosignature(5, "DE", "— DE cosig-2") is False
    assert checkpoints.add_cosignature(5, "IT", "— IT cosig") is True

    assert checkpoints.cosignatures(5) == {"DE": "— DE cosig-1", "IT": "— IT cosig"}
    assert checkpoints.cosignatures(6) == {}
    with pytest.raises(ValueError):
        checkpoints.add_cosignature(6, "DE", "— DE cosig")
    with pytest.raises(ValueError):
        checkpoints.add_cosignature(5, "de", "— DE cosig")


def test_a_checkpoint_without_a_cosignature_is_never_published(
    checkpoints: CheckpointStore,
) -> None:
    checkpoints.record_checkpoint(5, _root(5), _note(5))
    checkpoints.record_checkpoint(9, _root(9), _note(9))

    with pytest.raises(ValueError, match="cosignature"):
        checkpoints.mark_published(5)
    with pytest.raises(ValueError):
        checkpoints.mark_published(7)
    checkpoints.add_cosignature(5, "DE", "— DE cosig")
    assert checkpoints.mark_published(5) is True
    assert checkpoints.mark_published(5) is False

    published = checkpoints.latest(published_only=True)
    assert published is not None
    assert (published.tree_size, published.published) == (5, True)
    latest = checkpoints.latest()
    assert latest is not None
    assert latest.tree_size == 9


def test_last_cosigned_by_names_the_largest_checkpoint_of_that_witness(
    checkpoints: CheckpointStore,
) -> None:
    for size in (3, 5, 9):
        checkpoints.record_checkpoint(size, _root(size), _note(size))
    checkpoints.add_cosignature(3, "DE", "— DE 3")
    checkpoints.add_cosignature(5, "DE", "— DE 5")
    checkpoints.add_cosignature(9, "IT", "— IT 9")

    assert checkpoints.last_cosigned_by("DE") == (5, _root(5))
    assert checkpoints.last_cosigned_by("IT") == (9, _root(9))
    assert checkpoints.last_cosigned_by("AT") is None


def test_a_witnessed_checkpoint_only_moves_to_a_larger_tree(witness: WitnessStore) -> None:
    assert witness.last_seen("DE") is None
    assert witness.record_seen("DE", 10, _root(10), _note(10)) is True
    assert witness.record_seen("DE", 7, _root(7), _note(7)) is False
    assert witness.record_seen("DE", 10, _root(11), _note(11)) is False
    assert witness.last_seen("DE") == SeenCheckpoint(10, _root(10), _note(10))
    assert witness.record_seen("DE", 12, _root(12), _note(12)) is True
    assert witness.last_seen("DE") == SeenCheckpoint(12, _root(12), _note(12))
    assert witness.last_seen("IT") is None


def test_advancing_from_a_checkpoint_another_request_replaced_fails(
    witness: WitnessStore,
) -> None:
    assert witness.advance_seen("DE", from_size=None, size=10, root_hash=_root(10), note="n")
    assert not witness.advance_seen("DE", from_size=None, size=11, root_hash=_root(11), note="n")
    # Two cosign requests both proved consistent with checkpoint 10: only one may move on.
    assert witness.advance_seen("DE", from_size=10, size=15, root_hash=_root(15), note="n")
    assert not witness.advance_seen("DE", from_size=10, size=20, root_hash=_root(20), note="n")
    seen = witness.last_seen("DE")
    assert seen is not None
    assert seen.tree_size == 15
    with pytest.raises(ValueError):
        witness.advance_seen("DE", from_size=15, size=15, root_hash=_root(15), note="n")


def test_concurrent_cosign_requests_never_move_the_witnessed_checkpoint_backwards(
    database_url: str, witness: WitnessStore
) -> None:
    sizes = list(range(1, 25))
    random.Random(7).shuffle(sizes)
    starting_line = Barrier(4)

    def record(share: list[int]) -> None:
        engine = create_engine(database_url)
        try:
            replica = WitnessStore(engine, clock=FakeClock(START))
            starting_line.wait(timeout=10)
            for size in share:
                replica.record_seen("DE", size, _root(size), _note(size))
        finally:
            engine.dispose()

    with ThreadPoolExecutor(max_workers=4) as pool:
        for future in [pool.submit(record, sizes[i::4]) for i in range(4)]:
            future.result(timeout=60)

    assert witness.last_seen("DE") == SeenCheckpoint(24, _root(24), _note(24))


def test_malformed_checkpoints_are_refused(
    checkpoints: CheckpointStore, witness: WitnessStore
) -> None:
    with pytest.raises(ValueError):
        checkpoints.record_checkpoint(-1, _root(1), _note(1))
    with pytest.raises(ValueError):
        checkpoints.record_checkpoint(1, b"short", _note(1))
    with pytest.raises(ValueError):
        checkpoints.record_checkpoint(1, _root(1), "")
    with pytest.raises(ValueError):
        witness.record_seen("Germany", 1, _root(1), _note(1))
