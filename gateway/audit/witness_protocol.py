"""The wire form of c2sp.org/tlog-witness ``add-checkpoint``, both ways, and its statuses.

A request body is an old size line, at most 63 consistency proof lines (one base64
SHA-256 hash each), an empty line, then the checkpoint's signed note::

    old 20852014
    PlRNCrwHpqhGrupue0L7gxbjbMiKA9temvuZZDDpkaw=

    <checkpoint note>

The answer is 200 with the witness's cosignature lines, or a status that says which
rule the checkpoint broke. This module holds no HTTP framework: the gateway's witness
listener (:mod:`gateway.server.witness_http`) and the client that offers our
checkpoints to external witnesses (:mod:`gateway.audit.external_witness`) both read
and write bodies here, and :func:`status_of` is the one map from a witness refusal to
the specification's status codes.

Guarantees: :func:`parse_add_checkpoint` returns an :class:`AddCheckpoint` only for a
body of exactly that shape (sizes in decimal without leading zeroes, canonical base64,
each line ending in a newline), else :class:`MalformedRequest` with one short line;
``parse_add_checkpoint(add_checkpoint_body(r)) == r``.

Usage (a witness)::

    request = parse_add_checkpoint(body)          # MalformedRequest: 400
    lines = witness.cosign(state, request.note, list(request.proof),
                           old_size=request.old_size)
    # CheckpointRefused e: status_of(e), and for 409 size_body(e.cosigned_size)
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass

from gateway.audit.witness import (
    CHECKPOINT_INCONSISTENT,
    CHECKPOINT_MALFORMED,
    CHECKPOINT_OLD_SIZE,
    CHECKPOINT_ROLLBACK,
    CHECKPOINT_SIGNATURE,
    HASH_SIZE,
    MAX_PROOF_HASHES,
    CheckpointRefused,
)

SIZE_CONTENT_TYPE = "text/x.tlog.size"
ADD_CHECKPOINT = "add-checkpoint"
# A note is at most 256 KiB (gateway.audit.note); a proof of 63 lines adds under 3 KiB.
MAX_REQUEST_BYTES = 256 * 1024 + 4096
_SIZE = re.compile(r"0|[1-9][0-9]{0,19}")
_OLD = re.compile(r"old (0|[1-9][0-9]{0,19})")

STATUS_OF_REASON = {
    CHECKPOINT_MALFORMED: 400,
    CHECKPOINT_SIGNATURE: 403,
    CHECKPOINT_OLD_SIZE: 409,
    # Only reachable without an old size; with one, a smaller tree is an old size mismatch.
    CHECKPOINT_ROLLBACK: 409,
    CHECKPOINT_INCONSISTENT: 422,
}


class MalformedRequest(ValueError):
    """The body is not an ``add-checkpoint`` request (400); the message is one line."""


@dataclass(frozen=True)
class AddCheckpoint:
    """One ``add-checkpoint`` request: nothing in it is verified yet."""

    old_size: int
    proof: tuple[bytes, ...]
    note: str


def origin_hash(origin: str) -> str:
    """The monitoring path's name of a log: lowercase hex SHA-256 of its origin."""
    return hashlib.sha256(origin.encode("utf-8")).hexdigest()


def add_checkpoint_body(request: AddCheckpoint) -> bytes:
    """The request body for ``request``."""
    lines = [f"old {request.old_size}\n"]
    lines += [base64.b64encode(h).decode("ascii") + "\n" for h in request.proof]
    return ("".join(lines) + "\n" + request.note).encode("utf-8")


def parse_add_checkpoint(body: bytes) -> AddCheckpoint:
    """The request in ``body``; :class:`MalformedRequest` for anything else."""
    if len(body) > MAX_REQUEST_BYTES:
        raise MalformedRequest(f"request body is larger than {MAX_REQUEST_BYTES} bytes")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise MalformedRequest("request body is not UTF-8") from e
    head, blank, note = text.partition("\n\n")
    if not blank:
        raise MalformedRequest("no empty line before the checkpoint")
    first, *hashes = head.split("\n")
    old = _OLD.fullmatch(first)
    if old is None:
        raise MalformedRequest("the first line is 'old <size>', in decimal")
    if len(hashes) > MAX_PROOF_HASHES:
        raise MalformedRequest(f"more than {MAX_PROOF_HASHES} consistency proof lines")
    proof = tuple(_hash(line) for line in hashes)
    if not note:
        raise MalformedRequest("no checkpoint after the empty line")
    return AddCheckpoint(int(old[1]), proof, note)


def _hash(line: str) -> bytes:
    try:
        raw = base64.b64decode(line.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError) as e:
        raise MalformedRequest("a consistency proof line is not base64") from e
    if len(raw) != HASH_SIZE or base64.b64encode(raw).decode("ascii") != line:
        raise MalformedRequest(f"a consistency proof line is not one {HASH_SIZE}-byte hash")
    return raw


def status_of(refusal: CheckpointRefused) -> int:
    """The specification's status for a witness refusal."""
    return STATUS_OF_REASON[refusal.reason]


def size_body(size: int) -> str:
    """A 409 body: the size last cosigned, in decimal, and a newline."""
    return f"{size}\n"


def parse_size_body(body: bytes) -> int:
    """The size in a 409 body (:data:`SIZE_CONTENT_TYPE`); ``ValueError`` otherwise."""
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError as e:
        raise ValueError("a size body is ASCII") from e
    if not text.endswith("\n") or _SIZE.fullmatch(text[:-1]) is None:
        raise ValueError("a size body is a decimal size and a newline")
    return int(text[:-1])
