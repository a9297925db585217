"""A small RFC 9162 Merkle tree for the contract tests (not the production log).

Hashing (RFC 9162 section 2.1.1): leaf ``SHA-256(0x00 || data)``, interior node
``SHA-256(0x01 || left || right)``; a tree of n > 1 leaves splits at the largest
power of two smaller than n. Consistency proofs follow section 2.1.4.1 and their
verification section 2.1.4.2.

Leaves are produced on demand by a function of their index, and the hashes of
complete, aligned subtrees of at least ``memo_min`` leaves are memoised, so a
tree of 2^20 leaves costs about two million SHA-256 calls once (a few seconds),
after which roots and proofs of any smaller prefix are cheap.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def split_point(n: int) -> int:
    """The largest power of two strictly smaller than ``n`` (n > 1)."""
    if n < 2:
        raise ValueError(f"no split point for a tree of {n} leaves")
    return 1 << ((n - 1).bit_length() - 1)


def default_leaf(index: int) -> bytes:
    """Leaf data of the synthetic test log: the index as 8 big-endian bytes."""
    return index.to_bytes(8, "big")


class MerkleTree:
    """An append-only RFC 9162 tree whose leaf ``i`` is ``leaf_data(i)``."""

    def __init__(
        self, leaf_data: Callable[[int], bytes] = default_leaf, memo_min: int = 64
    ) -> None:
        self._leaf_data = leaf_data
        self._memo_min = memo_min
        self._memo: dict[tuple[int, int], bytes] = {}

    @classmethod
    def of(cls, leaves: Sequence[bytes]) -> MerkleTree:
        """A tree over an explicit list of leaf data (indices past its end are an error)."""
        return cls(lambda index: leaves[index], memo_min=1)

    def root(self, size: int) -> bytes:
        """MTH of the first ``size`` leaves (the empty tree hashes the empty string)."""
        if size == 0:
            return hashlib.sha256(b"").digest()
        return self._subtree(0, size)

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        """PROOF(m, D[n]) of RFC 9162 section 2.1.4.1, for 0 < m <= n."""
        if not 0 < old_size <= new_size:
            raise ValueError(f"no consistency proof from {old_size} to {new_size}")
        return self._subproof(old_size, 0, new_size, complete=True)

    def _subtree(self, start: int, end: int) -> bytes:
        n = end - start
        if n == 1:
            return leaf_hash(self._leaf_data(start))
        memoisable = n >= self._memo_min and n & (n - 1) == 0
        if memoisable and (start, n) in self._memo:
            return self._memo[(start, n)]
        k = split_point(n)
        digest = node_hash(self._subtree(start, start + k), self._subtree(start + k, end))
        if memoisable:
            self._memo[(start, n)] = digest
        return digest

    def _subproof(self, m: int, start: int, end: int, *, complete: bool) -> list[bytes]:
        n = end - start
        if m == n:
            return [] if complete else [self._subtree(start, end)]
        k = split_point(n)
        if m <= k:
            return [
                *self._subproof(m, start, start + k, complete=complete),
                self._subtree(start + k, end),
            ]
        return [
            *self._subproof(m - k, start + k, end, complete=False),
            self._subtree(start, start + k),
        ]


def verify_consistency(
    first: int, second: int, first_root: bytes, second_root: bytes, proof: Sequence[bytes]
) -> bool:
    """RFC 9162 section 2.1.4.2, step by step (the contract implements the same)."""
    if first == 0 or first > second:
        return False
    if first == second:
        return not proof and first_root == second_root
    if not proof:
        return False
    path = list(proof)
    if first & (first - 1) == 0:
        path.insert(0, first_root)
    fn, sn = first - 1, second - 1
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
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == first_root and sr == second_root and sn == 0
