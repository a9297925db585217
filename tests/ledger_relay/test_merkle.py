"""The Merkle log against a brute-force RFC 9162 reference on many sizes."""

from __future__ import annotations

import hashlib

import pytest

from services.ledger_relay.domain.errors import InvalidRange, ProofInvalid
from services.ledger_relay.domain.merkle import (
    EMPTY_ROOT,
    STORED_FROM_LEVEL,
    CompactRange,
    Coordinate,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    memory_lookup,
    node_hash,
    root_of,
    subtree_hash,
    verify_consistency,
    verify_inclusion,
)


def _k(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def ref_root(leaves: list[bytes]) -> bytes:
    """MTH straight from RFC 9162 section 2.1.1 (leaves are leaf hashes)."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    k = _k(len(leaves))
    return node_hash(ref_root(leaves[:k]), ref_root(leaves[k:]))


def ref_path(m: int, leaves: list[bytes]) -> list[bytes]:
    if len(leaves) == 1:
        return []
    k = _k(len(leaves))
    if m < k:
        return [*ref_path(m, leaves[:k]), ref_root(leaves[k:])]
    return [*ref_path(m - k, leaves[k:]), ref_root(leaves[:k])]


def ref_subproof(m: int, leaves: list[bytes], b: bool) -> list[bytes]:
    n = len(leaves)
    if m == n:
        return [] if b else [ref_root(leaves)]
    k = _k(n)
    if m <= k:
        return [*ref_subproof(m, leaves[:k], b), ref_root(leaves[k:])]
    return [*ref_subproof(m - k, leaves[k:], False), ref_root(leaves[:k])]


def build(n: int) -> tuple[list[bytes], dict[Coordinate, bytes], CompactRange]:
    leaves = [leaf_hash(i.to_bytes(8, "big")) for i in range(n)]
    store: dict[Coordinate, bytes] = {}
    compact = CompactRange()
    for leaf in leaves:
        for node in compact.append(leaf):
            assert (node.level, node.index) not in store
            store[(node.level, node.index)] = node.hash
    return leaves, store, compact


SIZES = [*range(1, 70), 127, 128, 129, 255, 256, 257, 1000, 1023, 1024, 1025]


def test_empty_tree_root_is_the_hash_of_nothing() -> None:
    assert CompactRange().root() == EMPTY_ROOT == hashlib.sha256(b"").digest()
    assert root_of(0, memory_lookup({})) == EMPTY_ROOT


@pytest.mark.parametrize("n", SIZES)
def test_roots_match_the_reference_at_every_prefix(n: int) -> None:
    leaves, store, compact = build(n)
    assert compact.root() == ref_root(leaves)
    lookup = memory_lookup(store)
    for size in range(1, n + 1, max(1, n // 40)):
        assert root_of(size, lookup) == ref_root(leaves[:size])


@pytest.mark.parametrize("n", SIZES)
def test_inclusion_proofs_match_the_reference_and_verify(n: int) -> None:
    leaves, store, _ = build(n)
    lookup = memory_lookup(store)
    for size in {n, max(1, n // 2), max(1, n - 1)}:
        root = ref_root(leaves[:size])
        for m in range(0, size, max(1, size // 25)):
            proof = inclusion_proof(m, size, lookup)
            assert proof == ref_path(m, leaves[:size])
            verify_inclusion(m, size, leaves[m], proof, root)


@pytest.mark.parametrize("n", SIZES)
def test_consistency_proofs_match_the_reference_and_verify(n: int) -> None:
    leaves, store, _ = build(n)
    lookup = memory_lookup(store)
    new_root = ref_root(leaves)
    for m in range(1, n + 1, max(1, n // 30)):
        proof = consistency_proof(m, n, lookup)
        assert proof == ref_subproof(m, leaves, True)
        verify_consistency(m, n, ref_root(leaves[:m]), new_root, proof)


def test_tampered_proofs_are_refused() -> None:
    leaves, store, _ = build(37)
    lookup = memory_lookup(store)
    root = ref_root(leaves)
    proof = inclusion_proof(5, 37, lookup)
    bad = [proof[0][:-1] + bytes([proof[0][-1] ^ 1]), *proof[1:]]
    with pytest.raises(ProofInvalid):
        verify_inclusion(5, 37, leaves[5], bad, root)
    with pytest.raises(ProofInvalid):
        verify_inclusion(6, 37, leaves[5], proof, root)
    with pytest.raises(ProofInvalid):
        verify_inclusion(5, 37, leaves[5], proof[:-1], root)
    with pytest.raises(ProofInvalid):
        verify_inclusion(5, 37, leaves[5], [*proof, proof[0]], root)
    cproof = consistency_proof(13, 37, lookup)
    with pytest.raises(ProofInvalid):
        verify_consistency(13, 37, ref_root(leaves[:12]), root, cproof)
    with pytest.raises(ProofInvalid):
        verify_consistency(13, 37, ref_root(leaves[:13]), root, cproof[:-1])
    with pytest.raises(ProofInvalid):
        verify_consistency(14, 37, ref_root(leaves[:13]), root, cproof)
    with pytest.raises(InvalidRange):
        inclusion_proof(37, 37, lookup)
    with pytest.raises(InvalidRange):
        consistency_proof(0, 37, lookup)


def test_compact_range_restores_from_stored_nodes() -> None:
    leaves, store, compact = build(1000)
    restored = CompactRange.restore(1000, memory_lookup(store))
    assert restored.root() == compact.root()
    extra = leaf_hash(b"next")
    restored.append(extra)
    assert restored.root() == ref_root([*leaves, extra])


def test_proofs_at_a_million_leaves_need_only_log_n_lookups() -> None:
    """Nodes are made up lazily: only the asked coordinates are ever hashed."""
    n = 1_000_003
    asked: list[Coordinate] = []

    def fake_node(coord: Coordinate) -> bytes:
        return hashlib.sha256(f"{coord}".encode()).digest()

    def lookup(coords: object) -> dict[Coordinate, bytes]:
        batch = list(coords)  # type: ignore[call-overload]
        asked.extend(batch)
        return {c: fake_node(c) for c in batch}

    proof = inclusion_proof(123_456, n, lookup)
    assert len(proof) <= 21
    assert len(asked) <= 2 * 21
    asked.clear()
    cproof = consistency_proof(500_001, n, lookup)
    assert len(cproof) <= 2 * 21
    assert len(asked) <= 2 * 21


@pytest.mark.parametrize("n", [1, 63, 64, 65, 200, 1025, 4099])
@pytest.mark.parametrize("min_level", [0, 1, 3, STORED_FROM_LEVEL])
def test_extend_returns_the_subtrees_append_completes_from_a_level_on(
    n: int, min_level: int
) -> None:
    leaves, store, compact = build(n)
    extended = CompactRange()
    # In two calls: the second continues the first's frontier.
    nodes = extended.extend(leaves[: n // 3], min_level) + extended.extend(
        leaves[n // 3 :], min_level
    )
    assert {(x.level, x.index): x.hash for x in nodes} == {
        c: h for c, h in store.items() if c[0] >= min_level
    }
    assert extended.size == compact.size == n
    assert extended.root() == compact.root()


@pytest.mark.parametrize("level", range(7))
def test_subtree_hash_of_its_leaves_is_the_stored_subtree(level: int) -> None:
    leaves, store, _ = build(300)
    for index in range(300 >> level):
        span = leaves[index << level : (index + 1) << level]
        assert subtree_hash(span) == store[(level, index)]
    with pytest.raises(InvalidRange):
        subtree_hash(leaves[:3])
