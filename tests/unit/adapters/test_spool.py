"""The spool adapter: whole files or none, one per message id, nothing left behind."""

from __future__ import annotations

import asyncio
import json
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from adapters.base import APPLIED, InboundUpdate, RegistryUnavailable
from adapters.spool import SpoolAdapter
from pouch.v1 import civil_pb2, common_pb2

DAY_ONE = datetime(2025, 1, 2, 23, 59, 30, tzinfo=UTC)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def _update(message_id: str, locality: str = "Lyon") -> InboundUpdate:
    return InboundUpdate(
        message_id=message_id,
        sender_state="FR",
        agreement_id="FR-DE/civil-records",
        purpose="civil-status-update",
        update=civil_pb2.CivilRecordUpdate(
            event_type=civil_pb2.CIVIL_EVENT_TYPE_MARRIAGE,
            event_place=common_pb2.Place(country_code="FR", locality=locality),
        ),
    )


def _all_files(root: Path) -> list[Path]:
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())


def test_update_lands_as_one_whole_json_line_per_message(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    adapter = SpoolAdapter(spool, clock=Clock(DAY_ONE))
    assert asyncio.run(adapter.apply(_update("m-1"))) == APPLIED
    assert _all_files(spool) == [Path("20250102/m-1.jsonl")]
    text = (spool / "20250102" / "m-1.jsonl").read_text(encoding="utf-8")
    assert text.endswith("\n") and text.count("\n") == 1
    record = json.loads(text)
    assert record["message_id"] == "m-1"
    assert record["received_at"] == "2025-01-02T23:59:30+00:00"
    assert record["update"]["event_place"] == {"country_code": "FR", "locality": "Lyon"}


def test_spool_files_are_readable_by_their_owner_only(tmp_path: Path) -> None:
    adapter = SpoolAdapter(tmp_path / "spool", clock=Clock(DAY_ONE))
    asyncio.run(adapter.apply(_update("m-2")))
    path = adapter.path_for("m-2")
    assert path is not None
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_same_message_handed_over_again_changes_nothing_even_a_day_later(
    tmp_path: Path,
) -> None:
    spool = tmp_path / "spool"
    clock = Clock(DAY_ONE)
    adapter = SpoolAdapter(spool, clock=clock)
    asyncio.run(adapter.apply(_update("m-3")))
    before = (spool / "20250102" / "m-3.jsonl").read_bytes()
    clock.now += timedelta(minutes=1)
    # After a crash the gateway hands the same message over again, to a new adapter.
    again = SpoolAdapter(spool, clock=clock)
    assert asyncio.run(again.apply(_update("m-3", locality="Paris"))) == APPLIED
    assert _all_files(spool) == [Path("20250102/m-3.jsonl")]
    assert (spool / "20250102" / "m-3.jsonl").read_bytes() == before


def test_many_concurrent_hand_overs_leave_no_temporary_files(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    adapter = SpoolAdapter(spool, clock=Clock(DAY_ONE))

    async def scenario() -> None:
        items = [_update(f"m-{i % 10}") for i in range(40)]
        outcomes = await asyncio.gather(*(adapter.apply(item) for item in items))
        assert set(outcomes) == {APPLIED}

    asyncio.run(scenario())
    assert _all_files(spool) == sorted(Path(f"20250102/m-{i}.jsonl") for i in range(10))


def test_spool_that_cannot_be_written_is_unavailable(tmp_path: Path) -> None:
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("a file where the spool should be")
    adapter = SpoolAdapter(blocked, clock=Clock(DAY_ONE))
    with pytest.raises(RegistryUnavailable, match="spool"):
        asyncio.run(adapter.apply(_update("m-4")))
    assert _all_files(tmp_path) == [Path("not-a-directory")]
