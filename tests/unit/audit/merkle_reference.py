"""RFC 6962's own recursive definitions of the tree hash and the two proofs.

Written as the RFC states them (section 2.1), slowly and plainly, so the gateway's
iterative implementation in :mod:`gateway.audit.merkle` can be held equal to them. Test
code only: the product never computes a proof this way.
"""

from __future__ import annotations

from collections.abc import Sequence

from gateway.audit.merkle import EMPTY_ROOT, node_hash


def _split(n: int) -> int:
    """The largest power of two strictly below ``n`` (``n >= 2``)."""
    return 1 << ((n - 1).bit_length() - 1)


def reference_root(leaf_hashes: Sequence[bytes]) -> bytes:
    """``MTH(D[n])`` by the RFC's recursive definition."""
    n = len(leaf_hashes)
    if n == 0:
        return EMPTY_ROOT
    if n == 1:
        return leaf_hashes[0]
    k = _split(n)
    return node_hash(reference_root(leaf_hashes[:k]), reference_root(leaf_hashes[k:]))


def reference_inclusion_proof(leaf_hashes: Sequence[bytes], index: int) -> list[bytes]:
    """``PATH(m, D[n])`` by the RFC's recursive definition."""
    n = len(leaf_hashes)
    if not 0 <= index < n:
        raise ValueError(f"leaf {index} is not in a tree of size {n}")
    if n == 1:
        return []
    k = _split(n)
    if index < k:
        return [
            *reference_inclusion_proof(leaf_hashes[:k], index),
            reference_root(leaf_hashes[k:]),
        ]
    return [
        *reference_inclusion_proof(leaf_hashes[k:], index - k),
        reference_root(leaf_hashes[:k]),
    ]


def reference_consistency_proof(leaf_hashes: Sequence[bytes], size1: int) -> list[bytes]:
    """``PROOF(m, D[n])`` by the RFC's recursive definition."""
    if not 0 <= size1 <= len(leaf_hashes):
        raise ValueError("a consistency proof needs 0 <= size1 <= size2")
    if size1 == 0:
        return []
    return _subproof(leaf_hashes, size1, whole=True)


def _subproof(leaf_hashes: Sequence[bytes], m: int, *, whole: bool) -> list[bytes]:
    n = len(leaf_hashes)
    if m == n:
        return [] if whole else [reference_root(leaf_hashes)]
    k = _split(n)
    if m <= k:
        return [*_subproof(leaf_hashes[:k], m, whole=whole), reference_root(leaf_hashes[k:])]
    return [
        *_subproof(leaf_hashes[k:], m - k, whole=False),
        reference_root(leaf_hashes[:k]),
    ]
