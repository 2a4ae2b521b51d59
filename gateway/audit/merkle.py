"""RFC 6962 Merkle tree hashing, proofs and their verification; pure, no I/O.

The tree is the one of RFC 6962 section 2.1 (RFC 9162 section 2.1): a leaf hashes as
``SHA-256(0x00 || data)``, an interior node as ``SHA-256(0x01 || left || right)``, the
empty tree as ``SHA-256("")``, and a tree of ``n`` leaves splits at the largest power
of two below ``n``.

Proofs are computed from an accessor ``node(level, index)`` that knows the hashes of
*complete* subtrees only: level ``L``, index ``i`` covers leaves ``[i*2^L, (i+1)*2^L)``,
level 0 being the leaf hashes. That is what a log can store once and never change. A
proof element that covers an incomplete subtree on the right edge of the tree is
composed here from complete ones. At most one element of any proof is incomplete, so a
proof costs ``O(log n)`` lookups; :func:`inclusion_nodes` and :func:`consistency_nodes`
name them up front so a store can fetch them in one round trip.

The verifiers follow RFC 9162 sections 2.1.3.2 and 2.1.4.2 step by step and answer a
plain ``bool``: anything malformed (wrong hash length, impossible sizes, a proof of the
wrong length) is ``False``, never an exception. The ``reference_*`` functions compute
the same values straight from the RFC's recursive definitions over all leaf hashes;
they exist to check the fast path and cost ``O(n)``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "NodeAccessor",
    "complete_subtrees",
    "consistency_nodes",
    "consistency_proof",
    "consistency_spans",
    "extend",
    "inclusion_nodes",
    "inclusion_proof",
    "inclusion_spans",
    "leaf_hash",
    "node_hash",
    "nodes_for",
    "root",
    "root_nodes",
    "span_hash",
    "subtree_levels",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()
"""The root hash of the empty tree."""

_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"

NodeAccessor = Callable[[int, int], bytes]
"""``node(level, index)``: the hash of a complete subtree (level 0: a leaf hash)."""

Span = tuple[int, int]
"""Leaves ``[start, end)`` whose subtree hash is one proof element."""


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(_LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(_NODE_PREFIX + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly below ``n`` (``n >= 2``)."""
    return 1 << ((n - 1).bit_length() - 1)


def complete_subtrees(start: int, end: int) -> list[tuple[int, int]]:
    """The complete subtrees ``(level, index)`` that tile ``[start, end)``, left to right.

    Each is the largest subtree aligned at the current position that still fits, so a
    span that starts on a boundary of its own size (every span of an RFC 6962 tree)
    decomposes into subtrees of decreasing size, one per set bit of its length.
    """
    if not 0 <= start <= end:
        raise ValueError("a span needs 0 <= start <= end")
    nodes: list[tuple[int, int]] = []
    position = start
    while position < end:
        level = (end - position).bit_length() - 1
        if position:
            level = min(level, (position & -position).bit_length() - 1)
        nodes.append((level, position >> level))
        position += 1 << level
    return nodes


def span_hash(start: int, end: int, node: NodeAccessor) -> bytes:
    """The RFC 6962 hash of the subtree over leaves ``[start, end)``, from complete ones.

    ``start`` must be a multiple of a power of two at least ``end - start`` (true of every
    subtree of an RFC 6962 tree): then the subtree is its complete parts folded from the
    right, exactly as the recursive definition splits it.
    """
    if end <= start:
        raise ValueError("a subtree covers at least one leaf")
    if start and (start & -start) < end - start:
        raise ValueError(f"leaves [{start}, {end}) are not a subtree of an RFC 6962 tree")
    parts = complete_subtrees(start, end)
    result = node(*parts[-1])
    for level, index in reversed(parts[:-1]):
        result = node_hash(node(level, index), result)
    return result


def root(size: int, node: NodeAccessor) -> bytes:
    """The root hash of the tree of the first ``size`` leaves."""
    if size < 0:
        raise ValueError("a tree size is never negative")
    return span_hash(0, size, node) if size else EMPTY_ROOT


def inclusion_spans(index: int, size: int) -> list[Span]:
    """The subtrees whose hashes prove leaf ``index`` in a tree of ``size``, bottom up."""
    if not 0 <= index < size:
        raise ValueError(f"leaf {index} is not in a tree of size {size}")
    spans: list[Span] = []
    start, end = 0, size
    while end - start > 1:
        k = _split(end - start)
        if index < start + k:
            spans.append((start + k, end))
            end = start + k
        else:
            spans.append((start, start + k))
            start += k
    spans.reverse()
    return spans


def consistency_spans(size1: int, size2: int) -> list[Span]:
    """The subtrees whose hashes prove the tree of ``size1`` a prefix of that of ``size2``.

    RFC 6962 section 2.1.2 ``PROOF(m, D[n])``; empty when ``size1`` is 0 or ``size2``.
    """
    if not 0 <= size1 <= size2:
        raise ValueError("a consistency proof needs 0 <= size1 <= size2")
    spans: list[Span] = []
    if size1 in (0, size2):
        return spans
    start, end, m, whole = 0, size2, size1, True
    while True:
        n = end - start
        if m == n:
            if not whole:
                spans.append((start, end))
            break
        k = _split(n)
        if m <= k:
            spans.append((start + k, end))
            end = start + k
        else:
            spans.append((start, start + k))
            start += k
            m -= k
            whole = False
    spans.reverse()
    return spans


def nodes_for(spans: Iterable[Span]) -> set[tuple[int, int]]:
    """Every complete subtree needed to hash ``spans``."""
    return {part for start, end in spans for part in complete_subtrees(start, end)}


def inclusion_nodes(index: int, size: int) -> set[tuple[int, int]]:
    return nodes_for(inclusion_spans(index, size))


def consistency_nodes(size1: int, size2: int) -> set[tuple[int, int]]:
    return nodes_for(consistency_spans(size1, size2))


def root_nodes(size: int) -> set[tuple[int, int]]:
    return set(complete_subtrees(0, size))


def inclusion_proof(index: int, size: int, node: NodeAccessor) -> list[bytes]:
    """The audit path of leaf ``index`` in the tree of ``size`` (RFC 6962 ``PATH``)."""
    return [span_hash(start, end, node) for start, end in inclusion_spans(index, size)]


def consistency_proof(size1: int, size2: int, node: NodeAccessor) -> list[bytes]:
    """The consistency proof from ``size1`` to ``size2`` (RFC 6962 ``PROOF``)."""
    return [span_hash(start, end, node) for start, end in consistency_spans(size1, size2)]


def extend(
    size: int, new_leaf_hashes: Sequence[bytes], node: NodeAccessor
) -> list[tuple[tuple[int, int], bytes]]:
    """The subtrees of level 1 and up that appending ``new_leaf_hashes`` at ``size`` completes.

    ``node`` is asked only for the complete subtrees of the tree of ``size`` that the new
    leaves attach to (its ``complete_subtrees(0, size)``, at most one per level); every
    other child is itself new. Nodes come bottom up, each level left to right.
    """
    end = size + len(new_leaf_hashes)
    below = {size + offset: h for offset, h in enumerate(new_leaf_hashes)}
    completed: list[tuple[tuple[int, int], bytes]] = []
    level = 1
    while size >> level < end >> level:
        current: dict[int, bytes] = {}
        for index in range(size >> level, end >> level):
            left = below.get(2 * index)
            if left is None:
                # The new leaves attach to this left child, completed before the batch.
                left = node(level - 1, 2 * index)
            current[index] = node_hash(left, below[2 * index + 1])
            completed.append(((level, index), current[index]))
        below = current
        level += 1
    return completed


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root_hash: bytes
) -> bool:
    """Whether ``proof`` shows leaf hash ``leaf`` at ``index`` under ``root_hash`` (RFC 9162)."""
    if not _hashes_ok(leaf, root_hash, *proof) or not 0 <= index < size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root_hash


def verify_consistency(
    size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes
) -> bool:
    """Whether ``proof`` shows the tree ``(size1, root1)`` a prefix of ``(size2, root2)``.

    RFC 9162 section 2.1.4.2, with its edge cases made explicit: equal sizes need equal
    roots and an empty proof; the empty tree is a prefix of every tree, with an empty
    proof; a tree never shrinks.
    """
    if not _hashes_ok(root1, root2, *proof) or not 0 <= size1 <= size2:
        return False
    if size1 == size2:
        return not proof and root1 == root2
    if size1 == 0:
        return not proof
    if not proof:
        return False
    path = list(proof)
    if size1 & (size1 - 1) == 0:
        path.insert(0, root1)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == root1 and sr == root2 and sn == 0


def _hashes_ok(*hashes: bytes) -> bool:
    return all(isinstance(h, bytes) and len(h) == HASH_SIZE for h in hashes)


def subtree_levels(leaf_hashes: Sequence[bytes]) -> list[list[bytes]]:
    """Every complete subtree hash, by level: ``levels[L][i]`` is node ``(L, i)``."""
    levels = [list(leaf_hashes)]
    while len(levels[-1]) > 1:
        below = levels[-1]
        levels.append([node_hash(below[i], below[i + 1]) for i in range(0, len(below) - 1, 2)])
    return levels
