"""The registry adapter that drops each update as a file into a spool directory.

Layout: ``<directory>/<YYYYMMDD>/<message_id>.jsonl`` (the UTC day the gateway handed
the update over), one JSON line holding ``message_id``, ``sender_state``,
``agreement_id``, ``purpose``, ``received_at`` and ``update`` (protobuf JSON, proto
field names). Files are readable by their owner only.

Guarantees:

* A registry never sees a partial file: the line is written to a temporary file whose
  name starts with ``.`` and does not end in ``.jsonl``, flushed to disk, renamed into
  place with :func:`os.replace`, and the directory is flushed too, so after a crash the
  file is either whole or absent.
* Handing over a message id that already has a file under any day is a no-op. A
  registry that moves processed files away must still de-duplicate by message id.

The registry decides later, so :meth:`SpoolAdapter.apply` answers "handed over"
(``RegistryOutcome(applied=True)``). A file-system failure (disk full, permissions)
raises :class:`RegistryUnavailable`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from google.protobuf.json_format import MessageToDict

from adapters.base import APPLIED, InboundUpdate, RegistryOutcome, RegistryUnavailable
from pouch.v1 import representation_pb2

SUFFIX = ".jsonl"
_DAY = re.compile(r"^[0-9]{8}$")
_CASE_FILE = re.compile(r"case-[0-9a-f-]{36}-[a-z_]{1,32}-[0-9T]{21}")


def _utc_now() -> datetime:
    return datetime.now(UTC)


class SpoolAdapter:
    """Writes updates as files under ``directory`` for the registry to collect."""

    def __init__(self, directory: Path, *, clock: Callable[[], datetime] = _utc_now) -> None:
        self._directory = Path(directory)
        self._clock = clock
        # Within one process, two hand-overs of one id must not both miss the other's file.
        self._lock = threading.Lock()

    async def apply(self, item: InboundUpdate) -> RegistryOutcome:
        try:
            await asyncio.to_thread(self._write_once, item)
        except OSError as e:
            raise RegistryUnavailable(f"spool directory not writable ({type(e).__name__})") from e
        return APPLIED

    async def notify_case_event(
        self, event_kind: str, case: representation_pb2.RepresentationCase
    ) -> None:
        """One file per event: ``<day>/case-<case id>-<event>-<updated_at>.jsonl``."""
        stamp = case.updated_at.ToDatetime().strftime("%Y%m%dT%H%M%S%f")
        name = f"case-{case.case_id}-{event_kind}-{stamp}"
        if not _CASE_FILE.fullmatch(name):
            raise ValueError("case id or event kind unfit for a file name")
        line = json.dumps(
            {
                "event_kind": event_kind,
                "case": MessageToDict(case, preserving_proto_field_name=True),
            },
            ensure_ascii=False,
            separators=(",", ":"),
            sort_keys=True,
        )
        try:
            await asyncio.to_thread(self._write_case_event, name, line)
        except OSError as e:
            raise RegistryUnavailable(f"spool directory not writable ({type(e).__name__})") from e

    def _write_case_event(self, name: str, line: str) -> None:
        with self._lock:
            if self.path_for(name) is None:
                day = self._directory / self._clock().astimezone(UTC).strftime("%Y%m%d")
                _make_directory(day)
                _write_atomically(day / (name + SUFFIX), (line + "\n").encode())

    async def close(self) -> None:
        """Nothing to release."""

    def path_for(self, message_id: str) -> Path | None:
        """Where the file for ``message_id`` is, if it is still in the spool."""
        name = message_id + SUFFIX
        if not self._directory.is_dir():
            return None
        for day in sorted(self._directory.iterdir()):
            if _DAY.fullmatch(day.name) and (day / name).is_file():
                return day / name
        return None

    def _write_once(self, item: InboundUpdate) -> None:
        with self._lock:
            if self.path_for(item.message_id) is None:
                self._write(item)

    def _write(self, item: InboundUpdate) -> None:
        # The message id was checked by InboundUpdate: no separators, no leading dot.
        received_at = self._clock().astimezone(UTC)
        day = self._directory / received_at.strftime("%Y%m%d")
        _make_directory(day)
        line = json.dumps(
            {
                "message_id": item.message_id,
                "sender_state": item.sender_state,
                "agreement_id": item.agreement_id,
                "purpose": item.purpose,
                "received_at": received_at.isoformat(),
                "update": MessageToDict(item.update, preserving_proto_field_name=True),
            },
            ensure_ascii=False,
            separators=(",", ":"),
            sort_keys=True,
        )
        _write_atomically(day / (item.message_id + SUFFIX), (line + "\n").encode())


def _make_directory(path: Path) -> None:
    """Create ``path`` and any missing parents, each made durable in its parent."""
    missing: list[Path] = []
    probe = path
    while not probe.is_dir():
        missing.append(probe)
        probe = probe.parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):
            directory.mkdir(mode=0o700)
        _fsync_directory(directory.parent)


def _write_atomically(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.stem}.{secrets.token_hex(8)}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        temporary.replace(path)  # os.replace: atomic, on the same file system
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        raise
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
