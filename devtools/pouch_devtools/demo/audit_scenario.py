"""The audit part of ``pouch demo``: a state's evidence, cosigned by its partner, checked offline.

It reads AT's log through ``AuditService`` as an auditor would (a token with
``audit:read``), waits until BE has cosigned a checkpoint covering the exchange,
exports a bundle and verifies it offline with the keys from the trust bundles an
auditor pins (AT's for the log, BE's for the witness that must have cosigned), exactly
as ``pouch audit verify --bundle`` does. AT's other partner, LU, holds no agreement
with AT and cosigns nothing of its log: its key in the export is noted, not required.

It also shows what makes the evidence last: each signature line of the published
checkpoint (the log's Ed25519 and ML-DSA-44 signatures, BE's cosignatures of both
kinds), each checked against the pinned keys, and the TLS key-exchange group each
partner's peer listener saw AT's gateway negotiate (from its metrics).
"""

from __future__ import annotations

import asyncio
import time
import urllib.request
from dataclasses import dataclass

import grpc
import grpc.aio
from prometheus_client.parser import text_string_to_metric_families

from gateway.audit.cosignature import partner_cosigners
from gateway.audit.log_signing import LogKey, partner_log_keys
from gateway.audit.note import parse_note
from gateway.audit.verify import verify_bundle
from gateway.connect import bearer, secure_channel
from gateway.pki.bundle import load_trust_bundle
from pouch.v1 import audit_pb2, audit_pb2_grpc, common_pb2
from pouch_devtools.demo.deployment import Site

CALL_TIMEOUT_S = 10.0
PUBLISH_TIMEOUT_S = 30.0
LISTED = 200


def entry_row(entry: audit_pb2.AuditEntry) -> tuple[str, str, str, str, str, str]:
    """One entry as the demo prints it: kinds, codes and paths, never a value."""
    exchange = common_pb2.ExchangeType.Name(entry.exchange_type).removeprefix("EXCHANGE_TYPE_")
    paths = [f"-{path}" for path in entry.removed_paths]
    paths += [f"~{path}" for path in entry.transformed_paths]
    return (
        str(entry.index),
        entry.event_kind,
        "" if exchange == "UNSPECIFIED" else exchange.lower(),
        entry.decision,
        entry.reason_code,
        " ".join(paths),
    )


@dataclass(frozen=True)
class AuditOutcome:
    # index, event kind, exchange, decision, reason code, paths removed / transformed
    entries: tuple[tuple[str, str, str, str, str, str], ...]
    tree_size: int
    published: bool
    cosigned_by: str
    bundle_bytes: int
    verified: bool
    failures: tuple[str, ...]
    # signer, role, algorithm, key ID, whether it verified with the pinned key
    signatures: tuple[tuple[str, str, str, str, str], ...] = ()
    # (listener's state, group its peer listener counted) for each partner
    key_exchange: tuple[tuple[str, str], ...] = ()


def signature_rows(
    note_text: str, log_keys: tuple[LogKey, ...], witness_keys: tuple[LogKey, ...]
) -> tuple[tuple[str, str, str, str, str], ...]:
    """Each signature line of a checkpoint note, named by the pinned key it belongs to."""
    note = parse_note(note_text)
    known = {(k.key_name, k.key_id): ("log", k) for k in log_keys}
    known |= {(k.key_name, k.key_id): ("witness", k) for k in witness_keys}
    body = note.text.encode("utf-8")
    rows = []
    for line in note.signatures:
        role, key = known.get((line.key_name, line.key_id), ("unknown", None))
        rows.append(
            (
                line.key_name,
                role,
                "-" if key is None else key.algorithm,
                f"{line.key_id:08x}",
                "not pinned"
                if key is None
                else "yes"
                if key.verify(body, line.signature)
                else "NO",
            )
        )
    return tuple(rows)


def key_exchange_groups(site: Site) -> tuple[str, ...]:
    """The key-exchange groups ``site``'s peer listener counted, from its metrics."""
    url = f"http://127.0.0.1:{site.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=CALL_TIMEOUT_S) as answer:
        text = answer.read().decode("utf-8")
    groups = set()
    for family in text_string_to_metric_families(text):
        if family.name == "pouch_peer_key_exchange":
            for sample in family.samples:
                if sample.name.endswith("_total") and sample.value > 0:
                    groups.add(sample.labels["group"])
    return tuple(sorted(groups))


async def run_audit_scenario(a: Site, b: Site) -> AuditOutcome:
    """``a``'s log, cosigned by ``b``; every partner ``a`` pins is a trusted cosigner."""
    metadata = bearer(a.token(["audit:read"], now=time.time()))
    async with secure_channel(a.local_target, a.client_identity()) as channel:
        stub = audit_pb2_grpc.AuditServiceStub(channel)
        listing = await stub.ListEntries(
            audit_pb2.ListEntriesRequest(page_size=LISTED),
            metadata=metadata,
            timeout=CALL_TIMEOUT_S,
        )
        size = max((e.index for e in listing.entries), default=-1) + 1
        deadline = time.monotonic() + PUBLISH_TIMEOUT_S
        checkpoint, covered = audit_pb2.GetCheckpointResponse(), 0
        while time.monotonic() < deadline:
            try:
                checkpoint = await stub.GetCheckpoint(
                    audit_pb2.GetCheckpointRequest(), metadata=metadata, timeout=CALL_TIMEOUT_S
                )
            except grpc.aio.AioRpcError as e:
                if e.code() != grpc.StatusCode.NOT_FOUND:  # none signed yet: wait
                    raise
            else:
                covered = int(checkpoint.signed_checkpoint.split("\n")[1])
                if checkpoint.published and covered >= size:
                    break
            await asyncio.sleep(0.2)
        chunks = [
            part.chunk
            async for part in stub.ExportBundle(
                audit_pb2.ExportBundleRequest(), metadata=metadata, timeout=CALL_TIMEOUT_S
            )
        ]
    bundle = b"".join(chunks)
    log_keys = partner_log_keys(load_trust_bundle(a.pki.bundle))
    witness_keys = partner_cosigners(load_trust_bundle(b.pki.bundle))
    report = verify_bundle(
        bundle,
        trusted_log_vkeys=[str(k.vkey) for k in log_keys],
        trusted_cosigner_vkeys={b.state: [str(k.vkey) for k in witness_keys]},
    )
    groups = await asyncio.to_thread(key_exchange_groups, b)
    return AuditOutcome(
        entries=tuple(entry_row(e) for e in listing.entries),
        tree_size=covered,
        published=checkpoint.published,
        cosigned_by=b.state if checkpoint.published else "-",
        bundle_bytes=len(bundle),
        verified=report.ok,
        failures=tuple(report.failures),
        signatures=()
        if report.checkpoint_note is None
        else signature_rows(report.checkpoint_note, log_keys, witness_keys),
        key_exchange=tuple((b.state, group) for group in groups),
    )
