"""AuditAnchor rules, each checked on the in-process EVM and on the Geth network.

Proofs come from the reference RFC 9162 tree in ``merkle_reference.py``.
"""

from __future__ import annotations

import itertools
import os
from functools import partial

import pytest
from contracts.merkle_reference import MerkleTree, verify_consistency
from contracts.reverts import expect_revert
from contracts.roles import RELAY_ROLE, UNAUTHORISED
from eth_account.signers.local import LocalAccount

from services.platform.chain.port import Chain, DeployedContract, TransactionReverted


@pytest.fixture(scope="module")
def tree() -> MerkleTree:
    """The synthetic audit log: leaf i is i as 8 big-endian bytes."""
    return MerkleTree()


def _anchor(
    chain: Chain,
    anchor: DeployedContract,
    relay: LocalAccount,
    tree: MerkleTree,
    size: int,
    previous: int = 0,
) -> None:
    proof = tree.consistency_proof(previous, size) if previous else []
    chain.transact(anchor, "anchor", size, tree.root(size), proof, sender=relay)


def test_first_checkpoint_needs_no_proof_and_is_readable(
    chain: Chain, audit_anchor: DeployedContract, relay: LocalAccount, tree: MerkleTree
) -> None:
    assert chain.call(audit_anchor, "checkpointCount") == 0
    expect_revert(
        "AuditAnchor__NoCheckpoint",
        lambda: chain.call(audit_anchor, "latestCheckpoint"),
        index=0,
    )

    receipt = chain.transact(audit_anchor, "anchor", 3, tree.root(3), [], sender=relay)

    [event] = receipt.events
    assert event.name == "CheckpointAnchored"
    assert event.args["index"] == 0 and event.args["treeSize"] == 3
    assert event.args["root"] == tree.root(3)
    assert event.args["anchoredAt"] == chain.block_timestamp(receipt.block_number)
    latest = tuple(chain.call(audit_anchor, "latestCheckpoint"))
    assert latest == (3, tree.root(3))
    assert tuple(chain.call(audit_anchor, "checkpointAt", 0)) == latest
    assert chain.call(audit_anchor, "checkpointCount") == 1


def test_first_checkpoint_refuses_an_empty_tree_or_a_proof(
    chain: Chain, audit_anchor: DeployedContract, relay: LocalAccount, tree: MerkleTree
) -> None:
    expect_revert(
        "AuditAnchor__EmptyTree",
        lambda: chain.transact(audit_anchor, "anchor", 0, tree.root(0), [], sender=relay),
    )
    expect_revert(
        "AuditAnchor__InconsistentProof",
        lambda: chain.transact(
            audit_anchor, "anchor", 4, tree.root(4), [tree.root(2)], sender=relay
        ),
        latestSize=0,
        newSize=4,
    )
    assert chain.call(audit_anchor, "checkpointCount") == 0


def test_growing_checkpoints_with_valid_proofs_are_appended(
    chain: Chain, audit_anchor: DeployedContract, relay: LocalAccount, tree: MerkleTree
) -> None:
    # Powers of two and odd sizes on both sides of the proof.
    sizes = [1, 2, 3, 4, 7, 8, 13, 16, 17, 64, 100, 1000, 1024, 1025]
    # Pipelined: all sent at once, mined in nonce order, each proven from the one before.
    tx_hashes = [
        chain.send(
            audit_anchor,
            "anchor",
            size,
            tree.root(size),
            tree.consistency_proof(previous, size) if previous else [],
            sender=relay,
            gas=300_000,
        )
        for previous, size in zip([0, *sizes], sizes, strict=False)
    ]
    assert all(chain.wait(tx_hash).status == 1 for tx_hash in tx_hashes)

    assert chain.call(audit_anchor, "checkpointCount") == len(sizes)
    # Fourteen sizes fill four of the slots that pack four sizes each: the reads
    # below cross every slot boundary.
    for index, size in enumerate(sizes):
        assert tuple(chain.call(audit_anchor, "checkpointAt", index)) == (size, tree.root(size))
    assert tuple(chain.call(audit_anchor, "latestCheckpoint")) == (sizes[-1], tree.root(sizes[-1]))
    events = chain.events(audit_anchor, "CheckpointAnchored")
    assert [e.args["treeSize"] for e in events] == sizes
    assert [e.args["index"] for e in events] == list(range(len(sizes)))
    times = [e.args["anchoredAt"] for e in events]
    assert times == sorted(times)
    expect_revert(
        "AuditAnchor__NoCheckpoint",
        lambda: chain.call(audit_anchor, "checkpointAt", len(sizes)),
        index=len(sizes),
    )


def test_a_checkpoint_of_a_million_leaves_is_accepted(
    chain: Chain, audit_anchor: DeployedContract, relay: LocalAccount, tree: MerkleTree
) -> None:
    _anchor(chain, audit_anchor, relay, tree, 1000)
    _anchor(chain, audit_anchor, relay, tree, 1_000_000, previous=1000)
    assert tuple(chain.call(audit_anchor, "latestCheckpoint")) == (
        1_000_000,
        tree.root(1_000_000),
    )


def test_inconsistent_proofs_are_refused(
    chain: Chain, audit_anchor: DeployedContract, relay: LocalAccount, tree: MerkleTree
) -> None:
    _anchor(chain, audit_anchor, relay, tree, 6)
    proof = tree.consistency_proof(6, 13)
    forked = MerkleTree(lambda index: b"rewritten" if index == 2 else index.to_bytes(8, "big"))
    attempts: dict[str, tuple[int, bytes, list[bytes]]] = {
        "tampered element": (13, tree.root(13), [proof[0], os.urandom(32), *proof[2:]]),
        "missing element": (13, tree.root(13), proof[:-1]),
        "extra element": (13, tree.root(13), [*proof, os.urandom(32)]),
        "no proof": (13, tree.root(13), []),
        "wrong new root": (13, os.urandom(32), proof),
        "proof for another size": (14, tree.root(14), proof),
        # A log whose leaf 2 was rewritten after the checkpoint of size 6.
        "rewritten history": (13, forked.root(13), forked.consistency_proof(6, 13)),
    }
    for name, (size, root, path) in attempts.items():
        assert not verify_consistency(6, size, tree.root(6), root, path), name
        expect_revert(
            "AuditAnchor__InconsistentProof",
            partial(chain.transact, audit_anchor, "anchor", size, root, path, sender=relay),
            latestSize=6,
            newSize=size,
        )
    assert chain.call(audit_anchor, "checkpointCount") == 1
    _anchor(chain, audit_anchor, relay, tree, 13, previous=6)  # the honest one still passes
    assert chain.call(audit_anchor, "checkpointCount") == 2


def test_a_smaller_tree_is_refused_and_an_equal_one_must_repeat_its_root(
    chain: Chain, audit_anchor: DeployedContract, relay: LocalAccount, tree: MerkleTree
) -> None:
    _anchor(chain, audit_anchor, relay, tree, 10)
    expect_revert(
        "AuditAnchor__TreeShrank",
        lambda: chain.transact(audit_anchor, "anchor", 9, tree.root(9), [], sender=relay),
        latestSize=10,
        newSize=9,
    )
    forged = os.urandom(32)
    expect_revert(
        "AuditAnchor__RootMismatch",
        lambda: chain.transact(audit_anchor, "anchor", 10, forged, [], sender=relay),
        treeSize=10,
        latestRoot=tree.root(10),
        newRoot=forged,
    )
    expect_revert(
        "AuditAnchor__InconsistentProof",
        lambda: chain.transact(
            audit_anchor, "anchor", 10, tree.root(10), [tree.root(10)], sender=relay
        ),
        latestSize=10,
        newSize=10,
    )
    assert chain.call(audit_anchor, "checkpointCount") == 1
    # The same checkpoint again (a heartbeat) is accepted with an empty proof.
    _anchor(chain, audit_anchor, relay, tree, 10, previous=10)
    assert [tuple(chain.call(audit_anchor, "checkpointAt", i)) for i in (0, 1)] == [
        (10, tree.root(10)),
        (10, tree.root(10)),
    ]


def test_only_the_relay_may_submit(
    chain: Chain,
    audit_anchor: DeployedContract,
    admin: LocalAccount,
    relay: LocalAccount,
    outsider: LocalAccount,
    tree: MerkleTree,
) -> None:
    for caller in (outsider, admin):
        expect_revert(
            UNAUTHORISED,
            partial(chain.transact, audit_anchor, "anchor", 1, tree.root(1), [], sender=caller),
            account=caller.address,
            neededRole=RELAY_ROLE,
        )
    chain.transact(audit_anchor, "revokeRole", RELAY_ROLE, relay.address, sender=admin)
    expect_revert(
        UNAUTHORISED,
        lambda: chain.transact(audit_anchor, "anchor", 1, tree.root(1), [], sender=relay),
        account=relay.address,
        neededRole=RELAY_ROLE,
    )
    with pytest.raises(TransactionReverted):  # mined with explicit gas: still refused
        chain.transact(audit_anchor, "anchor", 1, tree.root(1), [], sender=relay, gas=200_000)
    assert chain.call(audit_anchor, "checkpointCount") == 0


def test_on_chain_verifier_agrees_with_the_reference_on_every_small_pair(
    chain: Chain, audit_anchor: DeployedContract, tree: MerkleTree
) -> None:
    """``verifyConsistency`` (a view) against the reference, for valid and broken proofs."""
    for first, second in itertools.combinations_with_replacement(range(1, 10), 2):
        proof = tree.consistency_proof(first, second)
        old, new = tree.root(first), tree.root(second)
        assert chain.call(audit_anchor, "verifyConsistency", first, second, old, new, proof)
        if proof:
            broken = [*proof[:-1], tree.root(second + 1)]
            assert not verify_consistency(first, second, old, new, broken)
            assert not chain.call(
                audit_anchor, "verifyConsistency", first, second, old, new, broken
            )
        if first != second:  # the proof of another old size never passes
            assert not chain.call(
                audit_anchor,
                "verifyConsistency",
                first + 1,
                second,
                tree.root(first + 1),
                new,
                proof,
            )
