"""The RFC 9162 Merkle log: the compact range for appends and proofs from stored hashes.

Hashing (RFC 9162 section 2.1.1) and the proof checks are ``ehr_protocol.merkle``: a
verifier needs them without the store. They are re-exported here.

Storage model: every *perfect* subtree (``2**level`` leaves starting at a
multiple of ``2**level``) has a hash under ``(level, index)``; level 0 are the
leaf hashes. Subtrees of level ``STORED_FROM_LEVEL`` and above are stored once,
as soon as their last leaf is appended; the smaller ones are recomputed from the
at most ``2**STORED_FROM_LEVEL`` leaf hashes they cover (``subtree_hash``), which
keeps the write path to about one stored row per leaf. Any range the RFC
recursion visits splits into at most one perfect subtree per level, so a root
or a proof needs O(log n) subtree hashes. Proofs are computed in two passes: the
first records which ``(level, index)`` hashes are needed, one batch read fetches
them, the second computes the proof.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import NamedTuple

from ehr_protocol.merkle import (
    EMPTY_ROOT,
    HASH_SIZE,
    LEAF_PREFIX,
    NODE_PREFIX,
    leaf_hash,
    node_hash,
    root_from_inclusion_proof,
    split_point,
    verify_consistency,
    verify_inclusion,
)
from ehr_protocol.merkle import is_power_of_two as _is_power_of_two

from services.ledger_relay.domain.errors import InvalidRange

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "LEAF_PREFIX",
    "NODE_PREFIX",
    "leaf_hash",
    "node_hash",
    "root_from_inclusion_proof",
    "split_point",
    "verify_consistency",
    "verify_inclusion",
]
STORED_FROM_LEVEL = 6
"""The lowest level of stored subtrees: below it, hashes are recomputed from leaf hashes."""
_sha256 = hashlib.sha256

Coordinate = tuple[int, int]
"""``(level, index)`` of a perfect subtree: leaves ``[index << level, (index + 1) << level)``."""

NodeLookup = Callable[[Iterable[Coordinate]], Mapping[Coordinate, bytes]]
"""Fetches the stored hashes of the given perfect subtrees in one batch."""


def leaf_hashes(entries: Iterable[bytes]) -> list[bytes]:
    """``leaf_hash`` of each, in one loop (the relay hashes every event it consumes)."""
    sha256, prefix = _sha256, LEAF_PREFIX
    return [sha256(prefix + entry).digest() for entry in entries]


def subtree_hash(leaves: Sequence[bytes]) -> bytes:
    """The hash of a perfect subtree from its leaf hashes (a power of two of them)."""
    if not _is_power_of_two(len(leaves)):
        raise InvalidRange(f"{len(leaves)} leaves are not a perfect subtree")
    level = list(leaves)
    while len(level) > 1:
        level = _parents(level)
    return level[0]


def _parents(hashes: Sequence[bytes]) -> list[bytes]:
    """The hashes one level up: of each consecutive pair (an even number of hashes)."""
    sha256, prefix = _sha256, NODE_PREFIX
    return [
        sha256(prefix + left + right).digest()
        for left, right in zip(hashes[0::2], hashes[1::2], strict=True)
    ]


class Node(NamedTuple):
    """A stored perfect subtree hash (a named tuple: one is made per leaf and level
    completed, on the consume path)."""

    level: int
    index: int  # type: ignore[assignment]  # a field, shadowing tuple.index
    hash: bytes


class CompactRange:
    """The right frontier of the tree: one perfect subtree root per set bit of the size.

    ``append`` adds a leaf hash and returns every perfect subtree it completes
    (the leaf itself at level 0 first), which is what the store must persist.
    """

    __slots__ = ("_frontier", "_size")

    def __init__(self, size: int = 0, frontier: Sequence[bytes] = ()) -> None:
        expected = [level for level in reversed(range(size.bit_length())) if size >> level & 1]
        if len(frontier) != len(expected):
            raise ValueError(f"a tree of {size} leaves has {len(expected)} frontier hashes")
        self._size = size
        self._frontier: list[tuple[int, bytes]] = list(zip(expected, frontier, strict=True))

    @staticmethod
    def frontier_coordinates(size: int) -> list[Coordinate]:
        """The perfect subtrees, largest first, whose hashes make up the frontier of ``size``."""
        coords: list[Coordinate] = []
        for level in reversed(range(size.bit_length())):
            if size >> level & 1:
                coords.append((level, (size >> level) - 1))
        return coords

    @classmethod
    def restore(cls, size: int, lookup: NodeLookup) -> CompactRange:
        coords = cls.frontier_coordinates(size)
        found = lookup(coords)
        return cls(size, [found[c] for c in coords])

    @property
    def size(self) -> int:
        return self._size

    def copy(self) -> CompactRange:
        """An independent range of the same size (the frontier is at most 64 hashes)."""
        copied = CompactRange()
        copied._size = self._size
        copied._frontier = list(self._frontier)
        return copied

    def append(self, leaf: bytes) -> list[Node]:
        """Appends one leaf hash; returns every perfect subtree it completes, level 0 first."""
        return self.extend((leaf,))

    def extend(self, leaves: Iterable[bytes], min_level: int = 0) -> list[Node]:
        """Appends leaf hashes in order; returns the perfect subtrees they complete at
        ``min_level`` or above (the ones a store keeps), smaller ones first."""
        frontier = self._frontier
        size = self._size
        completed: list[Node] = []
        sha256, prefix, new_node = _sha256, NODE_PREFIX, Node._make
        hashes = leaves if isinstance(leaves, list) else list(leaves)
        width = 1 << min_level
        i, n = 0, len(hashes)
        while i < n:
            if min_level and not size & (width - 1) and n - i >= width:
                # Whole blocks of 2**min_level leaves from an aligned size: nothing below
                # min_level is returned, so each block's root is hashed level by level over
                # all the blocks at once, then appended like a leaf at min_level.
                end = i + ((n - i) >> min_level << min_level)
                roots = hashes[i:end]
                for _ in range(min_level):
                    roots = _parents(roots)
                i = end
                start = min_level
            else:
                roots = [hashes[i]]
                i += 1
                start = 0
                if min_level == 0:
                    completed.append(new_node((0, size, roots[0])))
            for digest in roots:
                level = start
                if start:
                    completed.append(new_node((level, size >> level, digest)))
                # The levels merged are the trailing one bits of the old size.
                while size >> level & 1:
                    digest = sha256(prefix + frontier.pop()[1] + digest).digest()
                    level += 1
                    if level >= min_level:
                        completed.append(new_node((level, size >> level, digest)))
                frontier.append((level, digest))
                size += 1 << start
        self._size = size
        return completed

    def root(self) -> bytes:
        if not self._frontier:
            return EMPTY_ROOT
        digest = self._frontier[-1][1]
        for _, left in reversed(self._frontier[:-1]):
            digest = node_hash(left, digest)
        return digest


class _Recorder:
    """First pass: records the coordinates asked for, answers with placeholders."""

    def __init__(self) -> None:
        self.wanted: list[Coordinate] = []

    def __call__(self, coord: Coordinate) -> bytes:
        self.wanted.append(coord)
        return bytes(HASH_SIZE)


def _range_hash(start: int, end: int, get: Callable[[Coordinate], bytes]) -> bytes:
    """MTH of leaves ``[start, end)``; ``start`` is aligned as the RFC recursion keeps it."""
    n = end - start
    if _is_power_of_two(n):
        level = n.bit_length() - 1
        return get((level, start >> level))
    k = split_point(n)
    level = k.bit_length() - 1
    return node_hash(get((level, start >> level)), _range_hash(start + k, end, get))


def _path(m: int, start: int, end: int, get: Callable[[Coordinate], bytes]) -> list[bytes]:
    n = end - start
    if n == 1:
        return []
    k = split_point(n)
    if m < k:
        return [*_path(m, start, start + k, get), _range_hash(start + k, end, get)]
    return [*_path(m - k, start + k, end, get), _range_hash(start, start + k, get)]


def _subproof(
    m: int, start: int, end: int, complete: bool, get: Callable[[Coordinate], bytes]
) -> list[bytes]:
    n = end - start
    if m == n:
        return [] if complete else [_range_hash(start, end, get)]
    k = split_point(n)
    if m <= k:
        return [*_subproof(m, start, start + k, complete, get), _range_hash(start + k, end, get)]
    return [*_subproof(m - k, start + k, end, False, get), _range_hash(start, start + k, get)]


def _two_pass(
    compute: Callable[[Callable[[Coordinate], bytes]], bytes | list[bytes]], lookup: NodeLookup
) -> bytes | list[bytes]:
    recorder = _Recorder()
    compute(recorder)
    found = lookup(dict.fromkeys(recorder.wanted))
    return compute(lambda coord: found[coord])


def root_of(size: int, lookup: NodeLookup) -> bytes:
    """The root of the first ``size`` leaves from stored subtree hashes."""
    if size == 0:
        return EMPTY_ROOT
    result = _two_pass(lambda get: _range_hash(0, size, get), lookup)
    assert isinstance(result, bytes)
    return result


def inclusion_proof(index: int, size: int, lookup: NodeLookup) -> list[bytes]:
    """PATH(index, D[size]) of RFC 9162 section 2.1.3.1."""
    if not 0 <= index < size:
        raise InvalidRange(f"leaf {index} is not in a tree of {size} leaves")
    result = _two_pass(lambda get: _path(index, 0, size, get), lookup)
    assert isinstance(result, list)
    return result


def consistency_proof(old_size: int, new_size: int, lookup: NodeLookup) -> list[bytes]:
    """PROOF(old_size, D[new_size]) of RFC 9162 section 2.1.4.1 (empty when equal)."""
    if not 0 < old_size <= new_size:
        raise InvalidRange(f"no consistency proof from {old_size} to {new_size} leaves")
    result = _two_pass(lambda get: _subproof(old_size, 0, new_size, True, get), lookup)
    assert isinstance(result, list)
    return result


def memory_lookup(nodes: Mapping[Coordinate, bytes]) -> NodeLookup:
    """A ``NodeLookup`` over a dict (tests, small in-memory logs)."""

    def lookup(coords: Iterable[Coordinate]) -> Mapping[Coordinate, bytes]:
        return {c: nodes[c] for c in coords}

    return lookup
