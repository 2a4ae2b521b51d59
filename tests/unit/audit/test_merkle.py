"""RFC 6962 hashing, proofs from complete subtrees, and RFC 9162 verification."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.audit import merkle
from tests.vectors import load_vector

from . import merkle_reference as reference
from . import vector_leaf_hashes

SOME_HASH = bytes.fromhex("abacaba000000000000000000000000000000000000000000060061e00123456")


def _accessor(leaf_hashes: Sequence[bytes]) -> Callable[[int, int], bytes]:
    """Complete subtrees only: asking for any other node fails the test."""
    levels = merkle.subtree_levels(leaf_hashes)

    def node(level: int, index: int) -> bytes:
        assert level < len(levels) and 0 <= index < len(levels[level]), (level, index)
        return levels[level][index]

    return node


def _roots() -> dict[int, bytes]:
    heads = load_vector("rfc6962/tree_heads")["tree_heads"]
    return {head["size"]: bytes.fromhex(head["root"]) for head in heads}


def _hashes(hexes: list[str]) -> list[bytes]:
    return [bytes.fromhex(h) for h in hexes]


def _inclusion_vectors() -> list[dict[str, Any]]:
    vectors: list[dict[str, Any]] = load_vector("rfc6962/inclusion_proofs")["inclusion_proofs"]
    return vectors


def _consistency_vectors() -> list[dict[str, Any]]:
    vectors: list[dict[str, Any]] = load_vector("rfc6962/consistency_proofs")["consistency_proofs"]
    return vectors


def test_leaves_and_nodes_are_hashed_apart_as_rfc6962_says() -> None:
    left, right = b"\x11" * 32, b"\x22" * 32
    assert merkle.leaf_hash(b"entry") == hashlib.sha256(b"\x00entry").digest()
    assert merkle.node_hash(left, right) == hashlib.sha256(b"\x01" + left + right).digest()
    assert hashlib.sha256(b"").digest() == merkle.EMPTY_ROOT
    # A leaf whose data is two hashes never collides with the node over them.
    assert merkle.leaf_hash(left + right) != merkle.node_hash(left, right)


def test_tree_heads_of_the_published_tree_for_every_size() -> None:
    leaves = vector_leaf_hashes()
    node = _accessor(leaves)
    for size, expected in _roots().items():
        assert reference.reference_root(leaves[:size]) == expected
        assert merkle.root(size, node) == expected


@pytest.mark.parametrize(
    "vector", _inclusion_vectors(), ids=lambda v: f"{v['leaf_index']}/{v['tree_size']}"
)
def test_published_inclusion_proofs_are_computed_and_verified(vector: dict[str, Any]) -> None:
    leaves = vector_leaf_hashes()
    index, size = vector["leaf_index"], vector["tree_size"]
    expected = _hashes(vector["proof"])
    root = _roots()[size]

    assert merkle.inclusion_proof(index, size, _accessor(leaves)) == expected
    assert reference.reference_inclusion_proof(leaves[:size], index) == expected
    assert merkle.verify_inclusion(leaves[index], index, size, expected, root)


@pytest.mark.parametrize(
    "vector", _inclusion_vectors(), ids=lambda v: f"{v['leaf_index']}/{v['tree_size']}"
)
def test_tampered_inclusion_proofs_are_refused(vector: dict[str, Any]) -> None:
    leaves = vector_leaf_hashes()
    index, size = vector["leaf_index"], vector["tree_size"]
    proof = _hashes(vector["proof"])
    root, leaf = _roots()[size], leaves[index]
    probes: list[tuple[bytes, int, int, list[bytes], bytes]] = [
        (leaf, index - 1, size, proof, root),
        (leaf, index + 1, size, proof, root),
        (leaf, index ^ 2, size, proof, root),
        (leaf, index, size * 2, proof, root),
        (leaf, index, size // 2, proof, root),
        (merkle.leaf_hash(b"WrongLeaf"), index, size, proof, root),
        (leaf, index, size, proof, merkle.EMPTY_ROOT),
        (leaf, index, size, proof, SOME_HASH),
        (leaf, index, size, [*proof, b""], root),
        (leaf, index, size, [*proof, root], root),
        (leaf, index, size, [b"", *proof], root),
        (leaf, index, size, [root, *proof], root),
    ]
    for i in range(len(proof)):
        flipped = list(proof)
        flipped[i] = bytes([flipped[i][0] ^ 8]) + flipped[i][1:]
        probes.append((leaf, index, size, flipped, root))
    if proof:
        probes.append((leaf, index, size, proof[:-1], root))
    if len(proof) > 1:
        probes.append((leaf, index, size, [proof[0], SOME_HASH, *proof[1:]], root))
    accepted = [probe for probe in probes if merkle.verify_inclusion(*probe)]
    assert accepted == []


@pytest.mark.parametrize(
    "vector", _consistency_vectors(), ids=lambda v: f"{v['size1']}-{v['size2']}"
)
def test_published_consistency_proofs_are_computed_and_verified(vector: dict[str, Any]) -> None:
    leaves = vector_leaf_hashes()
    size1, size2 = vector["size1"], vector["size2"]
    expected = _hashes(vector["proof"])
    roots = _roots()

    assert merkle.consistency_proof(size1, size2, _accessor(leaves)) == expected
    assert reference.reference_consistency_proof(leaves[:size2], size1) == expected
    assert merkle.verify_consistency(size1, size2, expected, roots[size1], roots[size2])


@pytest.mark.parametrize(
    # Between two different trees: an empty proof has nothing to tamper with.
    "vector",
    [v for v in _consistency_vectors() if v["proof"]],
    ids=lambda v: f"{v['size1']}-{v['size2']}",
)
def test_tampered_consistency_proofs_are_refused(vector: dict[str, Any]) -> None:
    size1, size2 = vector["size1"], vector["size2"]
    proof = _hashes(vector["proof"])
    roots = _roots()
    root1, root2 = roots[size1], roots[size2]
    probes: list[tuple[int, int, list[bytes], bytes, bytes]] = [
        (size1 - 1, size2, proof, root1, root2),
        (size1 + 1, size2, proof, root1, root2),
        (size1 ^ 2, size2, proof, root1, root2),
        (size1, size2 * 2, proof, root1, root2),
        (size1, size2 // 2, proof, root1, root2),
        (size1, size2, proof, merkle.EMPTY_ROOT, root2),
        (size1, size2, proof, root1, SOME_HASH),
        (size1, size2, proof, root2, root1),
        (size1, size2, [], root1, root2),
        (size1, size2, [*proof, b""], root1, root2),
        (size1, size2, [*proof, root1], root1, root2),
        (size1, size2, [*proof, root2], root1, root2),
        (size1, size2, [b"", *proof], root1, root2),
        (size1, size2, [root1, *proof], root1, root2),
        (size1, size2, [root2, *proof], root1, root2),
        (size1, size2, [proof[0], *proof], root1, root2),
        (size1, size2, proof[:-1], root1, root2),
    ]
    for i in range(len(proof)):
        flipped = list(proof)
        flipped[i] = bytes([flipped[i][0] ^ 16]) + flipped[i][1:]
        probes.append((size1, size2, flipped, root1, root2))
    accepted = [probe for probe in probes if merkle.verify_consistency(*probe)]
    assert accepted == []


def test_consistency_edge_cases_follow_rfc9162() -> None:
    a, b = merkle.leaf_hash(b"a"), merkle.leaf_hash(b"b")
    assert merkle.verify_consistency(0, 0, [], a, a)
    assert merkle.verify_consistency(0, 5, [], a, b)
    assert merkle.verify_consistency(3, 3, [], b, b)
    assert not merkle.verify_consistency(3, 3, [], a, b)
    assert not merkle.verify_consistency(3, 3, [merkle.EMPTY_ROOT], b, b)
    assert not merkle.verify_consistency(0, 1, [merkle.EMPTY_ROOT], a, b)
    # A tree never shrinks, and a proof between different trees is never empty.
    assert not merkle.verify_consistency(2, 1, [], a, b)
    assert not merkle.verify_consistency(1, 2, [], a, b)


def test_verifiers_refuse_hashes_of_the_wrong_length() -> None:
    leaf = merkle.leaf_hash(b"only")
    assert merkle.verify_inclusion(leaf, 0, 1, [], leaf)
    assert not merkle.verify_inclusion(leaf[:31], 0, 1, [], leaf[:31])
    assert not merkle.verify_inclusion(b"", 0, 1, [], b"")
    assert not merkle.verify_inclusion(leaf, 0, 0, [], leaf)
    assert not merkle.verify_inclusion(leaf, 1, 1, [], leaf)
    assert not merkle.verify_consistency(1, 1, [], leaf + b"\x00", leaf + b"\x00")


def test_every_proof_of_every_small_tree_matches_the_rfc_definitions() -> None:
    leaves = [merkle.leaf_hash(i.to_bytes(2, "big")) for i in range(40)]
    node = _accessor(leaves)
    for size in range(41):
        root = merkle.root(size, node)
        assert root == reference.reference_root(leaves[:size])
        for index in range(size):
            proof = merkle.inclusion_proof(index, size, node)
            assert proof == reference.reference_inclusion_proof(leaves[:size], index)
            assert merkle.verify_inclusion(leaves[index], index, size, proof, root)
        for size1 in range(size + 1):
            proof = merkle.consistency_proof(size1, size, node)
            assert proof == reference.reference_consistency_proof(leaves[:size], size1)
            root1 = reference.reference_root(leaves[:size1])
            assert merkle.verify_consistency(size1, size, proof, root1, root)


@settings(max_examples=60, deadline=None)
@given(data=st.data(), size=st.integers(min_value=1, max_value=300))
def test_random_proofs_match_the_rfc_definitions_and_verify(data: st.DataObject, size: int) -> None:
    leaves = [merkle.leaf_hash(i.to_bytes(2, "big")) for i in range(size)]
    node = _accessor(leaves)
    root = merkle.root(size, node)
    index = data.draw(st.integers(min_value=0, max_value=size - 1), label="index")
    size1 = data.draw(st.integers(min_value=0, max_value=size), label="size1")

    inclusion = merkle.inclusion_proof(index, size, node)
    consistency = merkle.consistency_proof(size1, size, node)

    assert inclusion == reference.reference_inclusion_proof(leaves, index)
    assert merkle.verify_inclusion(leaves[index], index, size, inclusion, root)
    assert consistency == reference.reference_consistency_proof(leaves, size1)
    root1 = reference.reference_root(leaves[:size1])
    assert merkle.verify_consistency(size1, size, consistency, root1, root)


@settings(max_examples=60, deadline=None)
@given(batches=st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=12))
def test_appending_completes_the_same_subtrees_whatever_the_batching(batches: list[int]) -> None:
    leaves = [merkle.leaf_hash(i.to_bytes(2, "big")) for i in range(sum(batches))]
    stored: dict[tuple[int, int], bytes] = {(0, i): h for i, h in enumerate(leaves)}
    size = 0
    for batch in batches:
        attach_to = set(merkle.complete_subtrees(0, size))

        def node(level: int, index: int, attach_to: set[tuple[int, int]] = attach_to) -> bytes:
            assert (level, index) in attach_to, "asked for a node the batch does not attach to"
            return stored[(level, index)]

        for coordinates, digest in merkle.extend(size, leaves[size : size + batch], node):
            assert coordinates not in stored, "a completed subtree was completed twice"
            stored[coordinates] = digest
        size += batch
    levels = merkle.subtree_levels(leaves)
    expected = {(level, i): h for level, row in enumerate(levels) for i, h in enumerate(row)}
    assert stored == expected


def test_a_proof_in_a_large_tree_needs_logarithmically_many_nodes() -> None:
    size = (1 << 40) + (1 << 20) + 12_345
    height = size.bit_length()
    for index in (0, size // 2, size - 1):
        assert len(merkle.inclusion_nodes(index, size)) <= 2 * height
    for size1 in (1, (1 << 40) - 1, size - 1):
        assert len(merkle.consistency_nodes(size1, size)) <= 2 * height
    assert len(merkle.root_nodes(size)) <= height


def test_a_span_that_is_no_subtree_of_an_rfc6962_tree_is_refused() -> None:
    leaves = [merkle.leaf_hash(bytes([i])) for i in range(8)]
    with pytest.raises(ValueError, match="not a subtree"):
        merkle.span_hash(2, 6, _accessor(leaves))


def test_proofs_for_impossible_positions_are_refused() -> None:
    with pytest.raises(ValueError):
        merkle.inclusion_spans(5, 5)
    with pytest.raises(ValueError):
        merkle.consistency_spans(6, 5)
    with pytest.raises(ValueError):
        reference.reference_inclusion_proof([], 0)
