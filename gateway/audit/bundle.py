"""The self-contained audit bundle, format ``pouch.audit-bundle/v2``: export and reading.

A bundle is what an auditor takes away and checks offline with ``pouch audit verify``
(:mod:`gateway.audit.verify`): one JSON object whose members are written in this
order (a reader must not rely on the order)::

    format         "pouch.audit-bundle/v2"
    state          the log's state; origin is pouch.gateway/<CC>/audit
    origin
    log_keys       [vkeys of the log's keys: Ed25519 (signature type 0x01) and
                    ML-DSA-44 (type 0x06)]
    cosigner_keys  {state: [vkeys of its cosigner keys: Ed25519 (type 0x04) and
                    ML-DSA-44 (type 0x06)]}
    witness_keys   {name: [vkeys of an external witness's cosigner keys]}; present only
                   when external witnesses (c2sp.org/tlog-witness) cosign the log
    checkpoint     the checkpoint's signed note: the log's signature lines followed by
                   every stored cosignature line, the partners' then the external
                   witnesses' (C2SP signed-note, one body)
    selection      the filters that chose the entries (says what was asked, proves nothing)
    complete       true only when every entry with an index in ``range`` is included
    range          {"start": s, "end": e}, indexes s <= i < e, or null
    consistency    [{"checkpoint": signed note of an earlier checkpoint,
                     "proof": [base64 hash] | null}]  from that checkpoint to this one
    entries        [{"index": i, "canonical": base64, "proof": [base64 hash] | null}]

Bundles of format ``pouch.audit-bundle/v1`` (before post-quantum keys: ``log_key``,
one vkey, and ``cosigner_keys`` of one vkey each) are still read by the verifier.

Guarantees of :func:`iter_bundle` (join its chunks for the whole bundle):

* Entries come in index order, each with its inclusion proof against the bundled
  checkpoint's tree size, read from the *stored* tree (never recomputed from the
  canonical bytes), so a row altered in the database does not verify.
* The log is read a page (:data:`~gateway.audit.log.MAX_PAGE` entries) at a time and
  :func:`iter_bundle` yields one chunk per page: memory stays bounded by a page.
* A log too damaged to give a proof (a row deleted, the tree truncated) still
  exports: that entry's ``proof`` is ``null``. The bundle is evidence; hiding the
  damage by refusing to export would defeat it. Nothing is checked here: the
  verifier names the damage.

:func:`read_members` reads a bundle the same way, one entry at a time.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

from gateway.audit import merkle
from gateway.audit.checkpoint import audit_origin
from gateway.audit.checkpoints_store import Checkpoint as StoredCheckpoint
from gateway.audit.checkpoints_store import CheckpointStore
from gateway.audit.cosignature import CosignatureVerifier
from gateway.audit.entry import EventKind
from gateway.audit.log import MAX_PAGE, AuditLog, AuditLogCorrupted, AuditRecord
from gateway.audit.log_signing import log_key_of
from gateway.audit.note import parse_note, parse_signature_line
from gateway.errors import NotFound
from gateway.pki.identity import validate_state_code

__all__ = [
    "ENTRIES",
    "FORMAT",
    "BundleFormatError",
    "iter_bundle",
    "read_members",
]

FORMAT = "pouch.audit-bundle/v2"
FORMAT_V1 = "pouch.audit-bundle/v1"
ENTRIES = "entries"

# Proofs of entries that share an aligned block of 2^10 leaves share every element
# above the block: one stored proof per block, the rest hashed from its leaf hashes.
_BLOCK_LEVEL = 10
_BLOCK = 1 << _BLOCK_LEVEL
# Fewer selected entries than this in one block: ask the log for each proof instead.
_DENSE = 16


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _hashes(proof: Sequence[bytes] | None) -> str:
    return "null" if proof is None else "[" + ",".join(f'"{_b64(h)}"' for h in proof) + "]"


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def iter_bundle(
    log: AuditLog,
    checkpoints: CheckpointStore,
    *,
    state: str,
    log_vkeys: Sequence[str],
    cosigner_vkeys: Mapping[str, Sequence[str]],
    witness_vkeys: Mapping[str, Sequence[str]] | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    agreement_id: str | None = None,
    exchange_type: str | None = None,
    peer_state: str | None = None,
    event_kind: EventKind | str | None = None,
    message_id: str | None = None,
    agreement_ids: Collection[str] | None = None,
    after_idx: int | None = None,
    tree_size: int | None = None,
    earlier_sizes: Iterable[int] = (),
) -> Iterator[bytes]:
    """The bundle in chunks: the header, then one chunk per page of entries.

    Entries are those :meth:`AuditLog.entries` selects with the same filters, below the
    checkpoint's tree size. The checkpoint is the one of ``tree_size`` (any recorded
    one: the verifier says whether it was published), by default the latest published
    one (:class:`~gateway.errors.NotFound` if there is none). ``earlier_sizes`` names
    earlier recorded checkpoints to bundle with a consistency proof to this one. With
    no filter but ``after_idx`` the bundle is complete for its range.

    Arguments are checked now; the log is read as chunks are taken, so a caller can
    run each ``next`` off its event loop.
    """
    origin = audit_origin(state)
    for vkey in log_vkeys:
        log_key_of(vkey)
    cosigners = {validate_state_code(s): list(keys) for s, keys in sorted(cosigner_vkeys.items())}
    witnesses = {name: list(keys) for name, keys in sorted((witness_vkeys or {}).items())}
    for keys in [*cosigners.values(), *witnesses.values()]:
        for key in keys:
            CosignatureVerifier.from_vkey(key)
    filters: dict[str, Any] = {
        "since": since,
        "until": until,
        "agreement_id": agreement_id,
        "exchange_type": exchange_type,
        "peer_state": peer_state,
        "event_kind": None if event_kind is None else EventKind(event_kind),
        "message_id": message_id,
        "agreement_ids": None if agreement_ids is None else sorted(set(agreement_ids)),
    }
    earlier = sorted(set(earlier_sizes))
    if any(size < 0 for size in earlier) or (after_idx is not None and after_idx < -1):
        raise ValueError("tree sizes and indexes are never negative")
    header = {
        "format": FORMAT,
        "state": validate_state_code(state),
        "origin": origin,
        "log_keys": list(log_vkeys),
        "cosigner_keys": cosigners,
        **({"witness_keys": witnesses} if witnesses else {}),
    }
    return _chunks(log, checkpoints, header, filters, after_idx, tree_size, earlier)


def _chunks(
    log: AuditLog,
    checkpoints: CheckpointStore,
    header: dict[str, Any],
    filters: dict[str, Any],
    after_idx: int | None,
    tree_size: int | None,
    earlier: list[int],
) -> Iterator[bytes]:
    checkpoint = (
        checkpoints.latest(published_only=True) if tree_size is None else checkpoints.get(tree_size)
    )
    if checkpoint is None:
        wanted = "published checkpoint" if tree_size is None else f"checkpoint {tree_size}"
        raise NotFound(f"no {wanted} to export the audit log against")
    size = checkpoint.tree_size
    consistency = []
    for size1 in earlier:
        if size1 >= size:
            raise ValueError(f"checkpoint {size1} is not earlier than checkpoint {size}")
        older = checkpoints.get(size1)
        if older is None:
            raise NotFound(f"no checkpoint {size1} to prove consistency from")
        consistency.append(
            f'{{"checkpoint":{_json(_cosigned_note(checkpoints, older))},'
            f'"proof":{_hashes(_consistency_proof(log, size1, size))}}}'
        )
    complete = all(value is None for value in filters.values())
    start = 0 if after_idx is None else after_idx + 1
    selection = {
        name: value.isoformat() if isinstance(value, datetime) else value
        for name, value in {**filters, "after_idx": after_idx}.items()
    }
    head = {
        **header,
        "checkpoint": _cosigned_note(checkpoints, checkpoint),
        "selection": selection,
        "complete": complete,
        "range": {"start": min(start, size), "end": size} if complete else None,
    }
    yield (_json(head)[:-1] + f',"consistency":[{",".join(consistency)}],"{ENTRIES}":[').encode()
    first = True
    for records in _pages(log, filters, after_idx, size):
        proofs = _inclusion_proofs(log, [r.idx for r in records], size, checkpoint.root_hash)
        lines = [
            f'\n{{"index":{r.idx},"canonical":"{_b64(r.canonical)}","proof":{_hashes(proofs[r.idx])}}}'
            for r in records
        ]
        yield (("" if first else ",") + ",".join(lines)).encode()
        first = False
    yield b"\n]}\n"


def _cosigned_note(checkpoints: CheckpointStore, checkpoint: StoredCheckpoint) -> str:
    """The log's note with every stored cosignature line added (the partners', then the
    external witnesses'): one body, more signatures."""
    size = checkpoint.tree_size
    stored = [
        *sorted(checkpoints.cosignatures(size).items()),
        *sorted(checkpoints.witness_cosignatures(size).items()),
    ]
    lines = [parse_signature_line(line) for _, text in stored for line in text.splitlines()]
    return parse_note(checkpoint.note).with_signatures(lines).serialize()


def _pages(
    log: AuditLog, filters: dict[str, Any], after_idx: int | None, size: int
) -> Iterator[list[AuditRecord]]:
    after = after_idx
    while True:
        page = log.entries(**filters, after_idx=after, limit=MAX_PAGE)
        records = [r for r in page if r.idx < size]
        if records:
            yield records
        if len(page) < MAX_PAGE or len(records) < len(page):
            return
        after = page[-1].idx


def _consistency_proof(log: AuditLog, size1: int, size2: int) -> list[bytes] | None:
    try:
        return log.consistency_proof(size1, size2)
    except (ValueError, AuditLogCorrupted):
        return None  # the log no longer holds that tree: the verifier will say so


def _inclusion_proof(log: AuditLog, idx: int, size: int) -> list[bytes] | None:
    try:
        return log.inclusion_proof(idx, size)
    except (ValueError, AuditLogCorrupted):
        return None


def _inclusion_proofs(
    log: AuditLog, indexes: Sequence[int], size: int, root: bytes
) -> dict[int, list[bytes] | None]:
    """The stored tree's inclusion proof of each of ``indexes`` in the tree of ``size``."""
    by_block: dict[int, list[int]] = {}
    for idx in indexes:
        by_block.setdefault(idx >> _BLOCK_LEVEL, []).append(idx)
    proofs: dict[int, list[bytes] | None] = {}
    for block, members in by_block.items():
        in_block = _block_prover(log, block, size, root) if len(members) >= _DENSE else None
        for idx in members:
            proofs[idx] = _inclusion_proof(log, idx, size) if in_block is None else in_block(idx)
    return proofs


def _block_prover(
    log: AuditLog, block: int, size: int, root: bytes
) -> Callable[[int], list[bytes]] | None:
    """How to prove ``block``'s entries; ``None`` if the stored tree there is not the checkpoint's.

    Every aligned block of 2^L leaves inside the tree is a node of the RFC 6962 tree, on
    the path of each of its leaves, and the tree above the blocks is the RFC 6962 tree
    of ``ceil(size / 2^L)`` units (the last one possibly partial). So a proof is the
    path inside the block, hashed here from the block's stored leaf hashes, followed by
    the stored path of the block's first leaf above the block. That holds only if the
    block's hash reproduces the checkpoint root along that upper path; if it does not
    (a row altered or missing), every proof is asked of the log itself, so the damage
    shows at the entries it touches and at no others.
    """
    start = block << _BLOCK_LEVEL
    leaves = min(start + _BLOCK, size) - start
    try:
        stored_leaves = log.leaf_hashes(start, start + leaves)
        stored_path = log.inclusion_proof(start, size)
    except (ValueError, AuditLogCorrupted):
        return None
    levels = merkle.subtree_levels(stored_leaves)

    def node(level: int, index: int) -> bytes:
        return levels[level][index]

    upper = stored_path[len(merkle.inclusion_spans(0, leaves)) :]
    units = -(-size // _BLOCK)
    if not merkle.verify_inclusion(merkle.root(leaves, node), block, units, upper, root):
        return None

    def prove(idx: int) -> list[bytes]:
        return merkle.inclusion_proof(idx - start, leaves, node) + upper

    return prove


class BundleFormatError(ValueError):
    """The bytes are not a bundle document: not JSON, not one object, a member twice."""


_WHITESPACE = re.compile(r"[ \t\n\r]*")


def _unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Objects with a member twice are refused: two readers could take different ones."""
    members: dict[str, Any] = {}
    for name, value in pairs:
        if name in members:
            raise BundleFormatError(f"member {name!r} appears twice in one object")
        members[name] = value
    return members


_DECODER = json.JSONDecoder(object_pairs_hook=_unique_members)


class _Reader:
    def __init__(self, text: str) -> None:
        self._text = text
        self._at = 0

    def skip(self) -> None:
        match = _WHITESPACE.match(self._text, self._at)
        self._at = match.end() if match else self._at

    def peek(self, char: str) -> bool:
        self.skip()
        return self._text.startswith(char, self._at)

    def take(self, char: str) -> bool:
        self.skip()
        if self._text.startswith(char, self._at):
            self._at += 1
            return True
        return False

    def expect(self, char: str) -> None:
        if not self.take(char):
            raise BundleFormatError(f"expected {char!r} at character {self._at}")

    def value(self) -> Any:
        self.skip()
        try:
            value, self._at = _DECODER.raw_decode(self._text, self._at)
        except json.JSONDecodeError as e:
            raise BundleFormatError(f"not JSON at character {e.pos}: {e.msg}") from e
        return value

    def items(self) -> Iterator[Any]:
        self.expect("[")
        if self.take("]"):
            return
        while True:
            yield self.value()
            if self.take("]"):
                return
            self.expect(",")

    def end(self) -> None:
        self.skip()
        if self._at != len(self._text):
            raise BundleFormatError(f"data after the bundle at character {self._at}")


def read_members(text: str) -> Iterator[tuple[str, Any]]:
    """The bundle's members in document order, without holding all its entries.

    The value of :data:`ENTRIES`, when it is an array, is an iterator over its items,
    each parsed as it is taken; whatever the caller leaves of it is read (and checked
    to be JSON) before the next member. Anything else is parsed whole. Raises
    :class:`BundleFormatError` for data that is not one JSON object or names a member
    twice, at any depth.
    """
    reader = _Reader(text)
    reader.expect("{")
    seen: set[str] = set()
    if not reader.take("}"):
        while True:
            name = reader.value()
            if not isinstance(name, str):
                raise BundleFormatError("a member name is a string")
            if name in seen:
                raise BundleFormatError(f"member {name!r} appears twice in one object")
            seen.add(name)
            reader.expect(":")
            if name == ENTRIES and reader.peek("["):
                items = reader.items()
                yield name, items
                for _ in items:
                    pass
            else:
                yield name, reader.value()
            if reader.take("}"):
                break
            reader.expect(",")
    reader.end()
