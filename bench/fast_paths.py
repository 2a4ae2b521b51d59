"""The hand-written fast paths against the libraries they stand in for (run by hand).

    python bench/fast_paths.py [--count N] [--postgresql URL]

Three pairs, each on the inputs the gateway gives it on every exchange, each timed in
the bench process (best of five runs of ``--count`` calls, microseconds per call):

* canonical JSON: ``rfc8785.dumps`` against :func:`gateway.jcs.dumps`, the one writer of
  every signed byte, on an envelope's signing input, a receipt's signing input, an
  audit entry's document and an identity claim's and a civil-record update's
  minimised payload tree;
* JSON trees of protobuf messages: ``json_format.MessageToDict`` and ``ParseDict``
  against :mod:`gateway.protojson` on an identity claim, an identity answer and a
  civil-record update;
* statements: :class:`gateway.store.prepared.Prepared` against SQLAlchemy Core's
  ``Connection.execute`` of the same statement with the same values, inside one
  transaction rolled back at the end (so commits, equal for both, are left out), on an
  SQLite file with WAL and, with ``--postgresql``, on that database (its tables are
  made by the migrations if missing; rows are never committed).

It prints one line per pair: both figures, their ratio and the difference per call.
No figure is asserted; ``bench/README.md`` records what a run said.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import timeit
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import rfc8785
from google.protobuf import json_format
from google.protobuf.message import Message
from sqlalchemy import Connection, Engine

from bench.confirmations import claim
from gateway import jcs, protojson
from gateway.audit.log import _INSERT_ENTRIES, _row
from gateway.envelope.header import EnvelopeHeader, signing_input
from gateway.envelope.receipt import _receipt_signing_input
from gateway.policy.catalogue import civil_record_payload, identity_payload
from gateway.store.engine import create_engine
from gateway.store.identity_queries import _INSERT as _INSERT_QUERY
from gateway.store.lifecycle import _RECORDED
from gateway.store.migrate import upgrade_to_head
from gateway.store.prepared import Prepared
from pouch.v1 import common_pb2, envelope_pb2, identity_pb2
from tests.integration.civil_builders import birth, death, marriage
from tests.unit.audit import make_event

REPEATS = 5


def per_call_us(count: int, one: Callable[[], object]) -> float:
    """The best of :data:`REPEATS` runs of ``count`` calls, in microseconds per call."""
    one()  # warm caches (compiled statements, per-type walks) outside the timing
    return min(timeit.repeat(one, number=count, repeat=REPEATS)) / count * 1e6


def cycling(items: Sequence[Any]) -> Callable[[], Any]:
    """A function giving ``items`` in turn, one per call."""
    state = {"next": 0}

    def take() -> Any:
        index = state["next"]
        state["next"] = index + 1
        return items[index % len(items)]

    return take


def line(name: str, library: float, ours: float) -> None:
    print(
        f"  {name:<44} library {library:8.2f} µs   hand-written {ours:8.2f} µs   "
        f"ratio {library / ours:5.2f}x   saves {library - ours:7.2f} µs/call"
    )


# --- canonical JSON ----------------------------------------------------------------


def canonical_documents() -> dict[str, Any]:
    """What the gateway canonicalises on an exchange, as the modules build it."""
    created = datetime(2026, 12, 3, 17, 32, 5, 123000, tzinfo=UTC)
    header = EnvelopeHeader(
        message_id="0193a1b2-7c4d-7e8f-9a0b-1c2d3e4f5a6b",
        agreement_id="AT-BE-consular-2026",
        agreement_version=1,
        agreement_digest="sha256:" + "ab" * 32,
        exchange_type=common_pb2.EXCHANGE_TYPE_IDENTITY_CONFIRMATION,
        purpose="emergency_travel_document",
        sender_state="AT",
        recipient_state="BE",
        created_at=created,
        payload_type="pouch.v1.IdentityClaim",
    )
    # The signing inputs as the modules build them, read back from their bytes.
    envelope_document = json.loads(signing_input(header, b'{"document_number":"BE0000001"}'))
    receipt_document = json.loads(
        _receipt_signing_input(
            receipt_id="0193a1b2-7c4d-7e8f-9a0b-1c2d3e4f5a6c",
            message_id=header.message_id,
            request_digest="sha256:" + "cd" * 32,
            receiver_state="BE",
            issued_at=created,
            outcome=envelope_pb2.RECEIPT_OUTCOME_ACCEPTED,
            reason_code="",
        )
    )
    return {
        "envelope signing input": envelope_document,
        "receipt signing input": receipt_document,
        "audit entry": make_event(7, removed_paths=("name.given_names",)).as_document(),
        "identity claim payload": identity_payload(claim(5, 1000)),
        "civil-record update payload": civil_record_payload(birth("bench", 5)),
    }


def bench_canonical(count: int) -> None:
    print("canonical JSON (rfc8785.dumps against gateway.jcs.dumps)")
    for name, document in canonical_documents().items():
        assert jcs.dumps(document) == rfc8785.dumps(document)
        line(name, *_canonical_costs(document, count))


def _canonical_costs(document: Any, count: int) -> tuple[float, float]:
    return (
        per_call_us(count, lambda: rfc8785.dumps(document)),
        per_call_us(count, lambda: jcs.dumps(document)),
    )


# --- protobuf JSON trees -----------------------------------------------------------


def protojson_messages() -> dict[str, list[Message]]:
    answer = identity_pb2.IdentityAnswer(
        request_message_id="0193a1b2-7c4d-7e8f-9a0b-1c2d3e4f5a6b",
        request_digest="sha256:" + "cd" * 32,
        result=identity_pb2.MATCH_RESULT_PARTIAL,
        fields=[
            identity_pb2.FieldMatch(field=name, matched=name != "name")
            for name in ("document_number", "name", "date_of_birth", "sex", "nationality")
        ],
        document_status=identity_pb2.DOCUMENT_STATUS_VALID,
    )
    return {
        "identity claim": [claim(i, 1000) for i in range(4)],
        "identity answer": [answer],
        "civil-record update": [
            build("bench", i) for i, build in enumerate((birth, death, marriage))
        ],
    }


def bench_protojson(count: int) -> None:
    print("protobuf JSON trees (google.protobuf.json_format against gateway.protojson)")
    for name, messages in protojson_messages().items():
        _protojson_costs(name, messages, count)


def _protojson_costs(name: str, messages: Sequence[Message], count: int) -> None:
    kind = type(messages[0])
    trees = [json_format.MessageToDict(m, preserving_proto_field_name=True) for m in messages]
    next_message, next_tree = cycling(messages), cycling(trees)
    for message, tree in zip(messages, trees, strict=True):
        assert protojson.message_to_dict(message) == tree
        assert protojson.parse_dict(tree, kind) == json_format.ParseDict(tree, kind())
    line(
        f"{name}: message to tree",
        per_call_us(
            count,
            lambda: json_format.MessageToDict(next_message(), preserving_proto_field_name=True),
        ),
        per_call_us(count, lambda: protojson.message_to_dict(next_message())),
    )
    line(
        f"{name}: tree to message",
        per_call_us(count, lambda: json_format.ParseDict(next_tree(), kind())),
        per_call_us(count, lambda: protojson.parse_dict(next_tree(), kind)),
    )


# --- statements --------------------------------------------------------------------


def _audit_rows() -> Iterator[dict[str, Any]]:
    index = 0
    while True:
        index += 1
        row = _row(make_event(index))
        yield {**row, "idx": 10_000_000 + index, "leaf_hash": b"\x01" * 32}


def _query_rows() -> Iterator[dict[str, Any]]:
    index = 0
    while True:
        index += 1
        yield {
            "message_id": f"bench-{index:012d}",
            "direction": "outbound",
            "partner_state": "BE",
            "agreement_id": "AT-BE-consular-2026",
            "purpose": "emergency_travel_document",
            "kind": "passport",
            "principal": "consulate-at",
            "case_id": None,
            "created_at": datetime.now(UTC),
        }


def _statement(prepared: Prepared) -> Any:
    return prepared._statement  # the very statement the module prepared


def bench_statements(engine: Engine, label: str, count: int) -> None:
    print(f"statements on {label} (Prepared against Connection.execute)")
    lifecycle = {"agreement_id": "AT-BE-consular-2026", "agreement_version": 1}
    cases: list[tuple[str, Prepared, Callable[[], Mapping[str, Any]], str]] = [
        ("insert an audit entry", _INSERT_ENTRIES, _audit_rows().__next__, "execute"),
        ("insert an identity query", _INSERT_QUERY, _query_rows().__next__, "execute"),
        ("read an agreement's lifecycle", _RECORDED, lambda: lifecycle, "rows"),
    ]
    with engine.connect() as conn:
        for name, prepared, values, how in cases:
            _statement_pair(conn, name, prepared, values, reads=how == "rows", count=count)


def _statement_pair(
    conn: Connection,
    name: str,
    prepared: Prepared,
    values: Callable[[], Mapping[str, Any]],
    *,
    reads: bool,
    count: int,
) -> None:
    statement = _statement(prepared)

    def ours() -> Any:
        return prepared.rows(conn, values()) if reads else prepared.execute(conn, values())

    def library() -> Any:
        result = conn.execute(statement, dict(values()))
        return result.all() if reads else result.rowcount

    with conn.begin() as transaction:
        core = per_call_us(count, library)
        mine = per_call_us(count, ours)
        transaction.rollback()
    line(name, core, mine)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--count", type=int, default=5000, help="calls per timed run")
    parser.add_argument("--postgresql", metavar="URL", help="also time statements there")
    args = parser.parse_args(argv)
    bench_canonical(args.count)
    bench_protojson(args.count)
    with tempfile.TemporaryDirectory() as directory:
        engine = create_engine(f"sqlite:///{Path(directory) / 'bench.db'}")
        upgrade_to_head(engine)
        try:
            bench_statements(engine, "SQLite (WAL file)", args.count)
        finally:
            engine.dispose()
    if args.postgresql:
        engine = create_engine(args.postgresql)
        upgrade_to_head(engine)
        try:
            bench_statements(engine, "PostgreSQL", args.count)
        finally:
            engine.dispose()


if __name__ == "__main__":
    main()
