"""The log repository contract, on SQLite and PostgreSQL (``sql_engine``)."""

from __future__ import annotations

import sqlalchemy as sa

from services.ledger_relay.adapters.sql import SqlLogRepository, nodes_table
from services.ledger_relay.domain.merkle import (
    STORED_FROM_LEVEL,
    CompactRange,
    Node,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    root_of,
    verify_consistency,
    verify_inclusion,
)
from services.ledger_relay.domain.model import (
    BusPosition,
    ChainAnchor,
    Checkpoint,
    CheckpointStatus,
    Leaf,
    OutgoingEvent,
)
from services.platform.bus.outbox import outbox_table


def _fill(repo: SqlLogRepository, compact: CompactRange, count: int, batch: int = 50) -> None:
    first, end = compact.size, compact.size + count
    for start in range(first, end, batch):
        leaves, nodes = [], []
        for i in range(start, min(start + batch, end)):
            event_hash = i.to_bytes(32, "big")
            nodes.extend(compact.append(leaf_hash(event_hash)))
            leaves.append(Leaf(i, event_hash, f"event-{i}", BusPosition("t.x.v1", i % 3, i), i))
        repo.append(leaves, nodes)


def _filled(sql_engine: sa.Engine, count: int) -> tuple[SqlLogRepository, CompactRange]:
    """A repository on a fresh schema holding leaves 0..count-1, and its compact range."""
    repo = SqlLogRepository(sql_engine)
    repo.create_schema()
    compact = CompactRange()
    _fill(repo, compact, count)
    return repo, compact


def test_leaves_nodes_and_proofs_survive_reopening(sql_engine: sa.Engine) -> None:
    repo = SqlLogRepository(sql_engine)
    repo.create_schema()
    assert repo.tree_size() == 0
    compact = CompactRange()
    _fill(repo, compact, 333)
    reopened = SqlLogRepository(sql_engine)
    assert reopened.tree_size() == 333
    restored = CompactRange.restore(333, reopened.nodes)
    assert restored.root() == compact.root() == root_of(333, reopened.nodes)
    proof = inclusion_proof(200, 333, reopened.nodes)
    verify_inclusion(200, 333, leaf_hash((200).to_bytes(32, "big")), proof, compact.root())
    old_root = root_of(100, reopened.nodes)
    verify_consistency(
        100, 333, old_root, compact.root(), consistency_proof(100, 333, reopened.nodes)
    )
    leaf = reopened.leaf_by_event_id("event-200")
    assert leaf == Leaf(
        200, (200).to_bytes(32, "big"), "event-200", BusPosition("t.x.v1", 2, 200), 200
    )
    assert reopened.leaf_by_event_hash((7).to_bytes(32, "big")) == reopened.leaf_at(7)
    assert reopened.leaf_by_event_id("nope") is None
    known = reopened.known_event_hashes([(5).to_bytes(32, "big"), (999).to_bytes(32, "big")])
    assert known == {(5).to_bytes(32, "big")}


def test_an_append_is_all_or_nothing(sql_engine: sa.Engine) -> None:
    repo, compact = _filled(sql_engine, 4)
    duplicate = (2).to_bytes(32, "big")  # already leaf 2: the unique event hash refuses it
    nodes = compact.append(leaf_hash(b"x")) + compact.append(leaf_hash(duplicate))
    leaves = [
        Leaf(4, b"x".rjust(32, b"\0"), "e4", BusPosition("t", 0, 4), 0),
        Leaf(5, duplicate, "e5", BusPosition("t", 0, 5), 0),
    ]
    try:
        repo.append(leaves, nodes)
    except sa.exc.IntegrityError:
        pass
    else:
        raise AssertionError("a duplicate event hash was stored")
    assert repo.tree_size() == 4
    assert repo.leaf_at(4) is None


def test_checkpoint_lifecycle_writes_the_outbox_in_the_same_transaction(
    sql_engine: sa.Engine,
) -> None:
    repo, _ = _filled(sql_engine, 20)
    first = Checkpoint(0, 10, b"r" * 32, 0, b"\0" * 32, CheckpointStatus.PENDING, cut_at_ms=1)
    second = Checkpoint(1, 20, b"s" * 32, 10, b"r" * 32, CheckpointStatus.PENDING, cut_at_ms=2)
    repo.add_checkpoint(first)
    repo.add_checkpoint(second)
    assert repo.latest_anchored() is None
    assert [c.index for c in repo.checkpoints(CheckpointStatus.PENDING)] == [0, 1]
    anchor = ChainAnchor("0x" + "ab" * 32, 17, 90_000)
    repo.mark_anchored(0, anchor, 5, [OutgoingEvent("ledger.checkpoints.v1", "log", b"ev")])
    anchored = repo.latest_anchored()
    assert anchored is not None
    assert anchored.anchor == anchor
    assert anchored.status is CheckpointStatus.ANCHORED
    assert anchored.anchored_at_ms == 5
    assert repo.first_anchored_covering(9) == anchored
    assert repo.first_anchored_covering(10) is None
    assert repo.checkpoint_of_size(10) == anchored
    with sql_engine.connect() as conn:
        rows = conn.execute(sa.select(outbox_table.c.topic, outbox_table.c.value)).all()
    assert [(r[0], bytes(r[1])) for r in rows] == [("ledger.checkpoints.v1", b"ev")]
    try:
        repo.mark_anchored(0, anchor, 6, [OutgoingEvent("ledger.checkpoints.v1", "log", b"x")])
    except LookupError:
        pass
    else:
        raise AssertionError("a checkpoint was anchored twice")
    with sql_engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(outbox_table)).scalar() == 1
    assert repo.drop_pending(0) == 1
    assert [c.index for c in repo.checkpoints()] == [0]


def test_small_subtrees_are_recomputed_from_leaves_and_only_large_ones_stored(
    sql_engine: sa.Engine,
) -> None:
    repo, _ = _filled(sql_engine, 300)
    memory = CompactRange()
    tree = {}
    for i in range(300):
        for node in memory.append(leaf_hash(i.to_bytes(32, "big"))):
            tree[(node.level, node.index)] = node.hash
    assert repo.nodes(list(tree)) == tree  # every level, from the table or from leaves
    with sql_engine.connect() as conn:
        levels = {int(k) >> 48 for (k,) in conn.execute(sa.select(nodes_table.c.node_key))}
    assert levels and min(levels) >= STORED_FROM_LEVEL
    try:
        repo.nodes([(3, 40)])  # leaves 320..327 do not exist
    except KeyError:
        pass
    else:
        raise AssertionError("a subtree over missing leaves was made up")


def test_append_unknown_skips_known_events_and_builds_again_from_scratch(
    sql_engine: sa.Engine,
) -> None:
    repo, compact = _filled(sql_engine, 10)
    hashes = [i.to_bytes(32, "big") for i in (8, 9, 10, 11)]  # 8 and 9 are leaves
    calls: list[set[bytes]] = []

    def build(known: set[bytes]) -> tuple[list[Leaf], list[Node]]:
        calls.append(set(known))
        fresh = compact.copy()
        new = [h for h in hashes if h not in known]
        leaves = [
            Leaf(fresh.size + k, h, f"event-{h[-1]}", BusPosition("t.x.v1", 0, 100 + k), 1)
            for k, h in enumerate(new)
        ]
        return leaves, fresh.extend([leaf_hash(h) for h in new])

    written = repo.append_unknown(hashes, build)
    assert calls == [set(), {hashes[0], hashes[1]}]  # optimistic first, then looked up
    assert [leaf.event_hash for leaf in written] == hashes[2:]
    assert repo.tree_size() == 12
    assert repo.leaf_by_event_hash(hashes[0]) == repo.leaf_at(8)  # kept its first position
    assert repo.leaf_at(10) == written[0]

    calls.clear()
    hashes = [i.to_bytes(32, "big") for i in (12, 13)]
    compact = CompactRange.restore(12, repo.nodes)
    assert len(repo.append_unknown(hashes, build)) == 2
    assert calls == [set()]  # nothing known: one build, no lookup
