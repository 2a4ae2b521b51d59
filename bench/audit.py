"""Audit log throughput and proof cost on SQLite (run by hand, never in CI).

    python bench/audit.py [--appends 20000] [--entries 1000000] [--proofs 2000] [--keep]

Works in a temporary directory on SQLite files (WAL, ``synchronous=FULL``, as served).
It prints:

- append: entries per second through :meth:`AuditLog.append` in batches of 100, each
  batch one committed transaction (index lock, entries, completed subtree nodes);
- build: how long the ``--entries`` log took through the bulk path (the same append
  code with batches of 50,000 entries);
- root / inclusion / consistency: mean and p99 milliseconds per call at that size,
  each call reading its O(log n) stored nodes in its own read transaction, plus the
  cost of verifying a proof (pure hashing);
- signatures: per checkpoint, mean microseconds to sign it (the log's Ed25519 note
  signature and its ML-DSA-44 cosignature), to cosign it (a witness, each algorithm),
  and to verify a published note (log and one witness, both algorithms), each
  algorithm apart, with the sizes of a signature line;
- export / verify: the time to export that log as an audit bundle against a cosigned
  checkpoint (streamed to a file), and of :func:`gateway.audit.verify.verify_bundle`
  (what ``pouch audit verify`` runs) on it, requiring both algorithms and Ed25519 only.
"""

from __future__ import annotations

import argparse
import math
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import Engine

from gateway.audit import merkle
from gateway.audit.bundle import iter_bundle
from gateway.audit.checkpoint import (
    Checkpoint,
    audit_key_name,
    audit_origin,
    open_checkpoint,
    witness_key_name,
)
from gateway.audit.checkpoints_store import CheckpointStore
from gateway.audit.cosignature import CosignatureSigner
from gateway.audit.log import AuditLog, _row
from gateway.audit.log_signing import CheckpointSigner
from gateway.audit.note import Ed25519NoteSigner, sign_note
from gateway.audit.verify import verify_bundle
from gateway.pki.note_keys import ALGORITHMS, ED25519, Ed25519Signer, MLDSA44Signer
from gateway.store.engine import create_engine
from gateway.store.migrate import upgrade_to_head
from tests.unit.audit import make_event
from tests.unit.store.conftest import START, FakeClock

APPEND_BATCH = 100
BUILD_BATCH = 50_000


def _sqlite(path: Path) -> Engine:
    engine = create_engine(f"sqlite:///{path}")
    upgrade_to_head(engine)
    return engine


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(fraction * len(ordered)) - 1)]


def _timed(label: str, calls: int, call: Callable[[int], object]) -> None:
    durations = []
    for i in range(calls):
        started = time.perf_counter()
        call(i)
        durations.append((time.perf_counter() - started) * 1000)
    mean = sum(durations) / len(durations)
    print(f"{label}: mean {mean:.3f} ms, p99 {_percentile(durations, 0.99):.3f} ms ({calls} calls)")


def measure_appends(workdir: Path, count: int) -> None:
    engine = _sqlite(workdir / "appends.db")
    try:
        log = AuditLog(engine, clock=FakeClock(START))
        batches = [
            [make_event(n) for n in range(start, min(start + APPEND_BATCH, count))]
            for start in range(0, count, APPEND_BATCH)
        ]
        started = time.perf_counter()
        for batch in batches:
            log.append(batch)
        elapsed = time.perf_counter() - started
        print(
            f"append: {count / elapsed:,.0f} entries/s in batches of {APPEND_BATCH} "
            f"({len(batches) / elapsed:,.1f} commits/s, {count} entries, {elapsed:.1f} s)"
        )
    finally:
        engine.dispose()


def build_log(workdir: Path, count: int) -> tuple[Engine, AuditLog]:
    engine = _sqlite(workdir / "large.db")
    log = AuditLog(engine, clock=FakeClock(START))
    started = time.perf_counter()
    for start in range(0, count, BUILD_BATCH):
        rows = [_row(make_event(n)) for n in range(start, min(start + BUILD_BATCH, count))]
        log._append_rows(rows)
    elapsed = time.perf_counter() - started
    size_mb = (workdir / "large.db").stat().st_size / 1e6
    rate = count / elapsed
    print(f"build: {count:,} entries in {elapsed:.1f} s ({rate:,.0f} entries/s, {size_mb:,.0f} MB)")
    return engine, log


def measure_proofs(log: AuditLog, calls: int) -> None:
    size = log.size()
    rng = random.Random(6962)  # noqa: S311 (positions to probe, not secrets)
    indexes = [rng.randrange(size) for _ in range(calls)]
    sizes1 = [rng.randrange(1, size) for _ in range(calls)]
    _timed(f"root at {size:,}", min(calls, 200), lambda _: log.root(size))
    _timed(f"inclusion proof at {size:,}", calls, lambda i: log.inclusion_proof(indexes[i], size))
    _timed(
        f"consistency proof to {size:,}",
        calls,
        lambda i: log.consistency_proof(sizes1[i], size),
    )
    root = log.root(size)
    index = indexes[0]
    proof = log.inclusion_proof(index, size)
    (leaf,) = log.leaf_hashes(index, index + 1)
    _timed(
        "verify inclusion (pure)",
        calls,
        lambda _: merkle.verify_inclusion(leaf, index, size, proof, root),
    )
    assert merkle.verify_inclusion(leaf, index, size, proof, root)


def _signers() -> tuple[CheckpointSigner, CosignatureSigner, CosignatureSigner]:
    """A log (FR) and a witness (DE) with keys made up here, both algorithms."""
    log = CheckpointSigner(
        audit_origin("FR"), audit_key_name("FR"), Ed25519Signer.generate(), MLDSA44Signer.generate()
    )
    name = witness_key_name("DE")
    return (
        log,
        CosignatureSigner(name, Ed25519Signer.generate()),
        CosignatureSigner(name, MLDSA44Signer.generate()),
    )


def _mean_us(action: Callable[[], object], rounds: int) -> float:
    started = time.perf_counter()
    for _ in range(rounds):
        action()
    return (time.perf_counter() - started) / rounds * 1e6


def measure_signatures(rounds: int) -> None:
    """Sign, cosign and verify one checkpoint, Ed25519 and ML-DSA-44 apart."""
    log, witness_ed, witness_pq = _signers()
    checkpoint = Checkpoint(log.origin, 1_000_000, bytes(range(32)))
    now = START
    ed_only = Ed25519NoteSigner(log.key_name, Ed25519Signer.generate())
    log_ed, log_pq = log.verifiers()
    note = log.sign(checkpoint, now)
    published = note + "".join(
        c.line for c in (witness_ed.cosign(checkpoint, now), witness_pq.cosign(checkpoint, now))
    )
    lines = {
        "Ed25519 cosignature": len(witness_ed.cosign(checkpoint, now).line),
        "ML-DSA-44 cosignature": len(witness_pq.cosign(checkpoint, now).line),
    }
    body = checkpoint.body()
    figures = {
        "sign, Ed25519 note signature only": _mean_us(lambda: sign_note(body, ed_only), rounds),
        "sign, Ed25519 + ML-DSA-44 (as published)": _mean_us(
            lambda: log.sign(checkpoint, now), rounds
        ),
        "cosign, Ed25519": _mean_us(lambda: witness_ed.cosign(checkpoint, now), rounds),
        "cosign, ML-DSA-44": _mean_us(lambda: witness_pq.cosign(checkpoint, now), rounds),
        "verify note, log Ed25519 only": _mean_us(
            lambda: open_checkpoint(note, origin=log.origin, log_keys=[log_ed]), rounds
        ),
        "verify note, log both algorithms": _mean_us(
            lambda: open_checkpoint(note, origin=log.origin, log_keys=[log_ed, log_pq]), rounds
        ),
        "verify published note, log + witness, both algorithms": _mean_us(
            lambda: open_checkpoint(
                published,
                origin=log.origin,
                log_keys=[log_ed, log_pq],
                other_keys=[witness_ed.verifier(), witness_pq.verifier()],
            ),
            rounds,
        ),
    }
    for label, micros in figures.items():
        print(f"signatures: {label}: {micros:,.0f} us (mean of {rounds})")
    for label, length in lines.items():
        print(f"signatures: {label} line: {length:,} characters")
    print(f"signatures: published note, 4 lines: {len(published):,} characters")


def measure_verify(engine: Engine, workdir: Path) -> str:
    """Export the large log as a bundle against a cosigned checkpoint; time ``verify_bundle``.

    The keys are made up here (no PKI needed): the checkpoint is signed by a log key and
    cosigned by a witness key, both algorithms, as published. The export streams to a
    file in ``workdir``; the verifier reads it whole, as ``pouch audit verify`` does.
    """
    clock = FakeClock(START)
    log = AuditLog(engine, clock=clock)
    checkpoints = CheckpointStore(engine, clock=clock)
    signer, witness_ed, witness_pq = _signers()
    size = log.size()
    checkpoint = Checkpoint(signer.origin, size, log.root(size))
    checkpoints.record_checkpoint(size, checkpoint.root_hash, signer.sign(checkpoint, START))
    lines = "".join(w.cosign(checkpoint, START).line for w in (witness_ed, witness_pq))
    checkpoints.add_cosignature(size, "DE", lines)
    checkpoints.mark_published(size)
    log_vkeys = [str(k.vkey) for k in signer.verifiers()]
    cosigners = {"DE": [str(w.verifier().vkey) for w in (witness_ed, witness_pq)]}

    path = workdir / "bundle.json"
    started = time.perf_counter()
    with path.open("wb") as out:
        for chunk in iter_bundle(
            log, checkpoints, state="FR", log_vkeys=log_vkeys, cosigner_vkeys=cosigners
        ):
            out.write(chunk)
    exported = time.perf_counter() - started
    data = path.read_bytes()
    lines_out = [f"export: {size:,} entries in {exported:.1f} s ({len(data) / 1e6:,.0f} MB bundle)"]
    for require in (ALGORITHMS, (ED25519,)):
        started = time.perf_counter()
        report = verify_bundle(
            data, trusted_log_vkeys=log_vkeys, trusted_cosigner_vkeys=cosigners, require=require
        )
        verified = time.perf_counter() - started
        if not report.ok:
            return f"verify: FAILED at {size:,} entries: {report.failures[:3]}"
        lines_out.append(
            f"verify ({' + '.join(require)}): {report.entries_verified:,} entries in "
            f"{verified:.1f} s ({report.entries_verified / verified:,.0f} entries/s)"
        )
    return "\n".join(lines_out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--appends", type=int, default=20_000)
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--proofs", type=int, default=2_000)
    parser.add_argument("--signatures", type=int, default=200, help="rounds per signature figure")
    parser.add_argument("--keep", action="store_true", help="keep the databases")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="pouch-bench-audit-"))
    try:
        measure_signatures(args.signatures)
        measure_appends(workdir, args.appends)
        engine, log = build_log(workdir, args.entries)
        try:
            measure_proofs(log, args.proofs)
            print(measure_verify(engine, workdir))
        finally:
            engine.dispose()
    finally:
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
