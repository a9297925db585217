"""The log repository contract, on SQLite and PostgreSQL (``sql_engine``)."""

from __future__ import annotations

import sqlalchemy as sa

from services.ledger_relay.adapters.sql import SqlLogRepository, leaves_table, nodes_table
from services.ledger_relay.domain.merkle import (
    STORED_FROM_LEVEL,
    CompactRange,
    Node,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    leaf_hashes,
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
    LeafBatch,
    OutgoingEvent,
)
from services.platform.bus.outbox import outbox_table


def _event(n: int) -> tuple[str, bytes]:
    """Event ``n``'s id and hash (an id is a function of the event, as on the bus)."""
    return f"event-{n}", n.to_bytes(32, "big")


def _batch(first: int, numbers: list[int], offset: int = 0, at: int | None = None) -> LeafBatch:
    """Leaves ``first``.. for events ``numbers``, at bus offsets from ``offset`` (or each
    event's number), appended at ``at`` (or each leaf's index: the batch's first)."""
    hashes = [_event(n)[1] for n in numbers]
    return LeafBatch(
        first,
        hashes,
        [_event(n)[0] for n in numbers],
        ["t.x.v1"] * len(numbers),
        [n % 3 for n in numbers],
        [offset + k if offset else n for k, n in enumerate(numbers)],
        first if at is None else at,
    )


def _completed(compact: CompactRange, batch: LeafBatch) -> list[Node]:
    """Appends the batch's leaves to ``compact``; the subtrees they complete."""
    return compact.extend(leaf_hashes(batch.event_hashes))


def _fill(repo: SqlLogRepository, compact: CompactRange, count: int, batch: int = 50) -> None:
    first, end = compact.size, compact.size + count
    for start in range(first, end, batch):
        leaves = _batch(start, list(range(start, min(start + batch, end))))
        repo.append(leaves, _completed(compact, leaves))


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
    assert reopened.leaf_at(7) == _batch(0, list(range(50))).leaves()[7]
    assert reopened.leaf_by_event_id("nope") is None
    known = reopened.known_events(*zip(*[_event(5), _event(999), _event(332)], strict=True))
    assert known == {_event(5)[1], _event(332)[1]}


def test_ids_and_topics_are_stored_exactly_whatever_their_characters(
    sql_engine: sa.Engine,
) -> None:
    # PostgreSQL receives leaves in the COPY text format: these must be escaped there.
    odd = ["back\\slash", "tab\there", "new\nline", "carriage\rreturn", "\\N", "é-ü-✓"]
    repo = SqlLogRepository(sql_engine)
    repo.create_schema()
    compact = CompactRange()
    plain = _batch(0, [0, 1])
    repo.append(plain, _completed(compact, plain))
    hashes = [(100 + k).to_bytes(32, "big") for k in range(len(odd))]
    batch = LeafBatch(2, hashes, odd, list(reversed(odd)), [0] * len(odd), list(range(len(odd))), 9)
    repo.append(batch, _completed(compact, batch))
    assert [repo.leaf_at(i) for i in range(2, 2 + len(odd))] == batch.leaves()
    assert repo.leaf_by_event_id("tab\there") == batch.leaves()[1]
    assert repo.leaf_at(0) == plain.leaves()[0]
    assert root_of(repo.tree_size(), repo.nodes) == compact.root()


def test_an_append_is_all_or_nothing(sql_engine: sa.Engine) -> None:
    repo, compact = _filled(sql_engine, 4)
    leaves = _batch(4, [100, 2], offset=4)  # event 2 already is leaf 2: refused
    try:
        repo.append(leaves, _completed(compact, leaves))
    except sa.exc.IntegrityError:
        pass
    else:
        raise AssertionError("a known event was stored again")
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
    numbers = [8, 9, 10, 11]  # 8 and 9 are leaves
    calls: list[set[bytes]] = []

    def build(known: set[bytes]) -> tuple[LeafBatch, list[Node]]:
        calls.append(set(known))
        fresh = compact.copy()
        leaves = _batch(fresh.size, [n for n in numbers if _event(n)[1] not in known], 100)
        return leaves, _completed(fresh, leaves)

    written = repo.append_unknown(build)
    assert calls == [set(), {_event(8)[1], _event(9)[1]}]  # optimistic, then looked up
    assert written.event_hashes == [_event(10)[1], _event(11)[1]]
    assert repo.tree_size() == 12
    assert repo.leaf_by_event_id("event-8") == repo.leaf_at(8)  # kept its first position
    assert repo.leaf_at(10) == written.leaves()[0]

    calls.clear()
    numbers = [12, 13]
    compact = CompactRange.restore(12, repo.nodes)
    assert len(repo.append_unknown(build)) == 2
    assert calls == [set()]  # nothing known: one build, no lookup


def test_a_log_of_the_earlier_layout_is_upgraded_in_place(sql_engine: sa.Engine) -> None:
    """Logs written before the leaf hash was dropped (``leaf_hash`` column, unique
    ``event_hash``, index on ``event_id``) open with their leaves, subtrees and proofs
    unchanged, and take appends and refuse known events like a new one."""
    repo, compact = _filled(sql_engine, 130)
    with sql_engine.begin() as conn:
        rows = [r._asdict() for r in conn.execute(sa.select(leaves_table))]
        conn.execute(sa.text("DROP TABLE ledger_leaves"))
    earlier = sa.Table(  # the earlier definition, as it created the table
        "ledger_leaves",
        sa.MetaData(),
        sa.Column("leaf_index", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("leaf_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("event_hash", sa.LargeBinary(32), nullable=False, unique=True),
        sa.Column("event_id", sa.String(64), nullable=False, index=True),
        sa.Column("topic", sa.String(249), nullable=False),
        sa.Column("partition", sa.Integer, nullable=False),
        sa.Column("bus_offset", sa.BigInteger, nullable=False),
        sa.Column("appended_at_ms", sa.BigInteger, nullable=False),
    )
    earlier.create(sql_engine)
    with sql_engine.begin() as conn:
        conn.execute(
            earlier.insert(), [{**r, "leaf_hash": leaf_hash(r["event_hash"])} for r in rows]
        )
    reopened = SqlLogRepository(sql_engine)
    reopened.create_schema()
    inspector = sa.inspect(sql_engine)
    assert "leaf_hash" not in {c["name"] for c in inspector.get_columns("ledger_leaves")}
    assert {i["name"] for i in inspector.get_indexes("ledger_leaves")} >= {"ux_ledger_leaves_event"}
    assert "ix_ledger_leaves_event_id" not in {
        i["name"] for i in inspector.get_indexes("ledger_leaves")
    }
    if sql_engine.dialect.name == "postgresql":  # SQLite keeps it: part of the table
        assert inspector.get_unique_constraints("ledger_leaves") == []
    assert root_of(130, reopened.nodes) == compact.root()
    assert reopened.leaf_by_event_id("event-77") == repo.leaf_at(77)
    more = _batch(130, [130, 131])
    reopened.append(more, _completed(compact, more))
    assert root_of(132, reopened.nodes) == compact.root()
    known = _batch(132, [5], offset=900)
    try:
        reopened.append(known, _completed(compact.copy(), known))
    except sa.exc.IntegrityError:
        pass
    else:
        raise AssertionError("a known event was stored again after the upgrade")
    reopened.create_schema()  # a second start finds nothing to upgrade
    assert reopened.tree_size() == 132
