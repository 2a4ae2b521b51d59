"""The two in-process scenarios: audit appends and policy evaluations.

Audit append: one :class:`~gateway.audit.log.AuditLog` entry per ``append`` call, each
its own committed transaction on an SQLite file (WAL, ``synchronous=FULL``, as a
gateway serves), as the gateway's recorder appends them. Baseline: as many plain
``sqlite3`` inserts of a row the same size (the entry's canonical bytes and a 32-byte
hash), each committed, on a file with the same journal and sync settings.

Policy evaluation: :func:`gateway.policy.evaluate` on the demo agreement's AT->BE
rules, a civil-record update (births, deaths, marriages in turn) and an identity claim
alternately. Baseline: a deep copy of the same payload dict.
"""

from __future__ import annotations

import copy
import sqlite3
import time
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from bench.confirmations import claim
from bench.rounds import Measured
from gateway.agreements.loader import load_agreement
from gateway.agreements.model import EXCHANGES_VALIDATOR
from gateway.audit.log import AuditLog, _row
from gateway.policy.catalogue import civil_record_payload, identity_payload
from gateway.policy.compiled import CompiledPolicy
from gateway.policy.evaluate import LegalBasisFlags, evaluate
from gateway.store.engine import create_engine
from gateway.store.migrate import upgrade_to_head
from pouch_devtools.demo.agreements import CIVIL_PURPOSE, IDENTITY_PURPOSES
from pouch_devtools.demo.deployment import agreement_id_for
from tests.integration.civil_builders import EVENT_KINDS, update_request
from tests.unit.audit import make_event

HASH_BYTES = 32


def _timed(count: int, one: Callable[[int], object]) -> Measured:
    latencies: list[float] = []
    started = time.perf_counter()
    for index in range(count):
        before = time.perf_counter()
        one(index)
        latencies.append(time.perf_counter() - before)
    return Measured(count, time.perf_counter() - started, latencies)


class AuditAppends:
    """An audit log on its own SQLite file; each round appends ``count`` more entries."""

    def __init__(self, path: Path) -> None:
        engine = create_engine(f"sqlite:///{path}")
        upgrade_to_head(engine)
        self._log = AuditLog(engine, clock=lambda: datetime.now(UTC))
        self._next = 0

    def round(self, count: int) -> Measured:
        first, self._next = self._next, self._next + count
        return _timed(count, lambda i: self._log.append([make_event(first + i)]))


class PlainInserts:
    """The baseline: a table of (index, bytes, hash) rows, one committed insert each."""

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("CREATE TABLE entries (idx INTEGER PRIMARY KEY, body BLOB, hash BLOB)")
        self._size = len(_row(make_event(0))["canonical"])
        self._next = 0

    def round(self, count: int) -> Measured:
        first, self._next = self._next, self._next + count
        body, digest = b"\x00" * self._size, b"\x00" * HASH_BYTES

        def one(index: int) -> None:
            self._db.execute("BEGIN")
            self._db.execute("INSERT INTO entries VALUES (?, ?, ?)", (first + index, body, digest))
            self._db.execute("COMMIT")

        return _timed(count, one)


class PolicyEvaluations:
    """The demo agreement's outbound rules at AT, and the payloads they are applied to."""

    def __init__(self, agreements_dir: Path) -> None:
        agreement = load_agreement(
            agreements_dir / f"{agreement_id_for('AT', 'BE')}.yaml",
            exchanges_validator=EXCHANGES_VALIDATOR,
        )
        self._policy = CompiledPolicy.compile(agreement.exchanges, "AT->BE")
        self._today = date.today()
        civil = [
            (kind, civil_record_payload(update_request("bench", i).update))
            for i, kind in enumerate(EVENT_KINDS)
        ]
        identity = [("passport", identity_payload(claim(i, 1000))) for i in range(3)]
        self.payloads: list[tuple[str, str, str, dict[str, Any]]] = []
        for (civil_kind, civil_tree), (identity_kind, identity_tree) in zip(
            civil, identity, strict=True
        ):
            self.payloads.append(("civil_record", CIVIL_PURPOSE, civil_kind, civil_tree))
            self.payloads.append(
                ("identity_confirmation", IDENTITY_PURPOSES[0], identity_kind, identity_tree)
            )

    def round(self, count: int) -> Measured:
        def one(index: int) -> None:
            exchange_type, purpose, kind, payload = self.payloads[index % len(self.payloads)]
            evaluate(
                self._policy,
                exchange_type=exchange_type,  # type: ignore[arg-type]
                purpose=purpose,
                kind=kind,
                payload=payload,
                legal_basis=LegalBasisFlags(),
                today=self._today,
                hash_key=b"\x07" * 32,
            )

        return _timed(count, one)

    def copies(self, count: int) -> Measured:
        return _timed(count, lambda i: copy.deepcopy(self.payloads[i % len(self.payloads)][3]))
