"""RFC 9162 Merkle tree hashing and the checks of its proofs (no storage).

Hashing (RFC 9162 section 2.1.1): leaf ``SHA-256(0x00 || d)``, interior node
``SHA-256(0x01 || left || right)``, the empty tree ``SHA-256("")``; a tree of
``n > 1`` leaves splits at the largest power of two smaller than ``n``. The ledger
relay builds and stores the tree with these; a verifier needs only them and the checks.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from ehr_protocol.errors import ProofInvalid

HASH_SIZE = 32
LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
EMPTY_ROOT = hashlib.sha256(b"").digest()
_sha256 = hashlib.sha256


def leaf_hash(data: bytes) -> bytes:
    return _sha256(LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return _sha256(NODE_PREFIX + left + right).digest()


def split_point(n: int) -> int:
    """The largest power of two strictly smaller than ``n`` (``n > 1``)."""
    return 1 << ((n - 1).bit_length() - 1)


def is_power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def root_from_inclusion_proof(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes:
    """The root implied by an inclusion proof (RFC 9162 section 2.1.3.2)."""
    if not 0 <= index < size:
        raise ProofInvalid(f"leaf {index} is not in a tree of {size} leaves")
    fn, sn = index, size - 1
    digest = leaf
    for sibling in proof:
        if sn == 0:
            raise ProofInvalid("inclusion proof is too long")
        if fn & 1 or fn == sn:
            digest = node_hash(sibling, digest)
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            digest = node_hash(digest, sibling)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofInvalid("inclusion proof is too short")
    return digest


def verify_inclusion(
    index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes
) -> None:
    """Raises ``ProofInvalid`` unless ``leaf`` is leaf ``index`` of the tree (size, root)."""
    if root_from_inclusion_proof(index, size, leaf, proof) != root:
        raise ProofInvalid(f"inclusion proof of leaf {index} does not lead to the root")


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """Raises ``ProofInvalid`` unless (old_size, old_root) is a prefix of (new_size, new_root)
    (RFC 9162 section 2.1.4.2)."""
    if not 0 < old_size <= new_size:
        raise ProofInvalid(f"no consistency from {old_size} to {new_size} leaves")
    if old_size == new_size:
        if proof or old_root != new_root:
            raise ProofInvalid("equal sizes need equal roots and an empty proof")
        return
    if not proof:
        raise ProofInvalid("consistency proof is empty")
    path = list(proof)
    if is_power_of_two(old_size):
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofInvalid("consistency proof is too long")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while fn & 1 == 0 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0 or fr != old_root or sr != new_root:
        raise ProofInvalid(f"consistency proof from {old_size} to {new_size} does not verify")
