"""``SqlLogRepository``: the Merkle log and its checkpoints on SQLite or PostgreSQL.

Tables: ``ledger_leaves`` (one row per leaf with its bus position; one index besides
the leaf index, unique over ``(event_id, event_hash)``: it finds an event by id and, as
the id is a function of the event bytes, refuses a second leaf for the same bytes;
envelope ids are time-ordered UUIDv7s, so it grows mostly at its right edge),
``ledger_nodes`` (perfect subtrees of level >= ``STORED_FROM_LEVEL``, keyed by
``level << 48 | index`` so a proof's hashes come back in one ``IN`` query; smaller
subtrees are recomputed from the event hashes of their 64-leaf block), ``ledger_checkpoints`` and
``ledger_state`` (key/value, e.g. the anchor contract's address).
The checkpoint-anchored event is written to the shared outbox (``bus_outbox``)
in the transaction that marks the checkpoint anchored.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, cast

import sqlalchemy as sa

from services.ledger_relay.domain.merkle import (
    STORED_FROM_LEVEL,
    Coordinate,
    Node,
    leaf_hash,
    subtree_hash,
)
from services.ledger_relay.domain.model import (
    EVENT_ID_MAX_CHARS,
    BusPosition,
    ChainAnchor,
    Checkpoint,
    CheckpointStatus,
    Leaf,
    LeafBatch,
    LogRepository,
    OutgoingEvent,
)
from services.platform.bus.outbox import OutboxWriter, create_outbox_table
from services.platform.bus.port import Message

if TYPE_CHECKING:
    from psycopg import Copy

log = logging.getLogger(__name__)

metadata = sa.MetaData()

leaves_table = sa.Table(
    "ledger_leaves",
    metadata,
    sa.Column("leaf_index", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("event_hash", sa.LargeBinary(32), nullable=False),
    sa.Column("event_id", sa.String(EVENT_ID_MAX_CHARS), nullable=False),
    sa.Column("topic", sa.String(249), nullable=False),
    sa.Column("partition", sa.Integer, nullable=False),
    sa.Column("bus_offset", sa.BigInteger, nullable=False),
    sa.Column("appended_at_ms", sa.BigInteger, nullable=False),
    sa.Index("ux_ledger_leaves_event", "event_id", "event_hash", unique=True),
)

nodes_table = sa.Table(
    "ledger_nodes",
    metadata,
    sa.Column("node_key", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("hash", sa.LargeBinary(32), nullable=False),
)

checkpoints_table = sa.Table(
    "ledger_checkpoints",
    metadata,
    sa.Column("checkpoint_index", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("tree_size", sa.BigInteger, nullable=False, index=True),
    sa.Column("root", sa.LargeBinary(32), nullable=False),
    sa.Column("previous_size", sa.BigInteger, nullable=False),
    sa.Column("previous_root", sa.LargeBinary(32), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("tx_hash", sa.String(66), nullable=True),
    sa.Column("block_number", sa.BigInteger, nullable=True),
    sa.Column("gas_used", sa.BigInteger, nullable=True),
    sa.Column("cut_at_ms", sa.BigInteger, nullable=False),
    sa.Column("anchored_at_ms", sa.BigInteger, nullable=True),
)

state_table = sa.Table(
    "ledger_state",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(256), nullable=False),
)

_LEVEL_SHIFT = 48


_BLOCKS_PER_QUERY = 200
_SQLITE_IN_CHUNK = 450  # twice this stays below SQLite's bound-parameter limit on old builds
_LEAF_COLUMNS = (
    "leaf_index",
    "event_hash",
    "event_id",
    "topic",
    "partition",
    "bus_offset",
    "appended_at_ms",
)
_NODE_COLUMNS = ("node_key", "hash")


def _bulk_insert(
    conn: sa.Connection, table: sa.Table, columns: Sequence[str], rows: Iterable[tuple[object, ...]]
) -> None:
    """Inserts ``rows`` in the connection's transaction, in bulk."""
    if conn.dialect.name == "postgresql":

        def write(copy: Copy) -> None:
            for row in rows:
                copy.write_row(row)

        _copy_in(conn, table, columns, write)
        return
    names = ", ".join(f'"{c}"' for c in columns)
    marks = ", ".join("?" * len(columns))
    conn.exec_driver_sql(f"INSERT INTO {table.name} ({names}) VALUES ({marks})", list(rows))


def _copy_in(
    conn: sa.Connection, table: sa.Table, columns: Sequence[str], write: Callable[[Copy], None]
) -> None:
    """``COPY table FROM STDIN`` on PostgreSQL, in the connection's transaction; ``write``
    sends the data (rows, or text in the COPY text format)."""
    names = ", ".join(f'"{c}"' for c in columns)
    driver = conn.connection.driver_connection  # psycopg, same transaction
    assert driver is not None
    statement = f"COPY {table.name} ({names}) FROM STDIN"
    dbapi_error = conn.dialect.loaded_dbapi.Error
    try:
        with driver.cursor() as cursor, cursor.copy(statement) as copy:
            write(copy)
    except dbapi_error as error:  # the same exception types as the SQLite path
        raise sa.exc.DBAPIError.instance(statement, None, error, dbapi_error) from error


_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _copy_escaped(values: list[str]) -> list[str]:
    """``values`` escaped for the COPY text format (unchanged, and not copied, when none
    needs it: envelope ids and topic names never do)."""
    joined = "".join(values)
    if "\\" not in joined and joined.isprintable():
        return values
    return [value.translate(_COPY_ESCAPES) for value in values]


def _copy_text(batch: LeafBatch) -> str:
    """The leaves of ``batch`` in the COPY text format, columns as ``_LEAF_COLUMNS``.
    Formatted here in one pass instead of row by row by the driver: this runs for every
    event consumed."""
    first, at = batch.first_index, batch.appended_at_ms
    return "".join(
        [
            f"{index}\t\\\\x{digest.hex()}\t{event_id}\t{topic}\t{partition}\t{offset}\t{at}\n"
            for index, digest, event_id, topic, partition, offset in zip(
                range(first, first + len(batch)),
                batch.event_hashes,
                _copy_escaped(batch.event_ids),
                _copy_escaped(batch.topics),
                batch.partitions,
                batch.offsets,
                strict=True,
            )
        ]
    )


def _known(
    conn: sa.Connection, event_ids: Sequence[str], event_hashes: Sequence[bytes]
) -> set[bytes]:
    """Which of these events (``event_ids[i]`` is the id of ``event_hashes[i]``) are
    leaves, by their hashes (in the connection's transaction). A leaf with one of the
    hashes has that event's id, so matching ids and hashes separately is exact, and the
    ``(event_id, event_hash)`` index serves it."""
    found: set[bytes] = set()
    if conn.dialect.name == "postgresql":
        # One array parameter per column instead of one bound parameter per event; the
        # hashes in binary (%b): no per-hash text escaping of bytea on either side.
        driver = conn.connection.driver_connection
        assert driver is not None
        with driver.cursor() as cursor:
            cursor.execute(
                f"SELECT event_hash FROM {leaves_table.name}"
                " WHERE event_id = ANY(%s) AND event_hash = ANY(%b)",
                (list(event_ids), list(event_hashes)),
            )
            found.update(bytes(r[0]) for r in cursor)
        return found
    for i in range(0, len(event_hashes), _SQLITE_IN_CHUNK):
        ids = list(event_ids[i : i + _SQLITE_IN_CHUNK])
        hashes = list(event_hashes[i : i + _SQLITE_IN_CHUNK])
        rows = conn.exec_driver_sql(
            f"SELECT event_hash FROM {leaves_table.name}"
            f" WHERE event_id IN ({', '.join('?' * len(ids))})"
            f" AND event_hash IN ({', '.join('?' * len(hashes))})",
            (*ids, *hashes),
        )
        found.update(bytes(r[0]) for r in rows)
    return found


def _insert(conn: sa.Connection, batch: LeafBatch, nodes: Sequence[Node]) -> None:
    """Bulk-inserts leaves and the subtree nodes of stored levels (``STORED_FROM_LEVEL``
    and above; smaller ones are recomputed) in ``conn``."""
    node_rows = [
        (_node_key(n.level, n.index), n.hash) for n in nodes if n.level >= STORED_FROM_LEVEL
    ]
    if conn.dialect.name == "postgresql":
        text = _copy_text(batch)
        _copy_in(conn, leaves_table, _LEAF_COLUMNS, lambda copy: copy.write(text))
    else:
        _bulk_insert(conn, leaves_table, _LEAF_COLUMNS, batch.rows())
    if node_rows:
        _bulk_insert(conn, nodes_table, _NODE_COLUMNS, node_rows)


def _upgrade_leaves(conn: sa.Connection) -> None:
    """Brings a log written by an earlier version to the current layout (in ``conn``'s
    transaction): drops the ``leaf_hash`` column (it is ``H(0x00 || event_hash)``) and
    the indexes on ``event_hash`` and ``event_id`` that the ``(event_id, event_hash)``
    index replaces. Leaves, their order and the stored subtrees are unchanged. On
    SQLite the unique index on ``event_hash`` is part of the table's definition and
    stays (redundant, not wrong)."""
    columns = {c["name"] for c in sa.inspect(conn).get_columns(leaves_table.name)}
    if "leaf_hash" not in columns:
        return
    log.info("upgrading %s: leaf hashes recomputed from event hashes", leaves_table.name)
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(
            f"ALTER TABLE {leaves_table.name} DROP CONSTRAINT IF EXISTS"
            f" {leaves_table.name}_event_hash_key"
        )
    conn.exec_driver_sql(f"DROP INDEX IF EXISTS ix_{leaves_table.name}_event_id")
    conn.exec_driver_sql(f"ALTER TABLE {leaves_table.name} DROP COLUMN leaf_hash")
    for index in leaves_table.indexes:
        index.create(conn, checkfirst=True)


def _leaf_hashes_of_blocks(conn: sa.Connection, blocks: Sequence[int]) -> dict[int, bytes]:
    """The leaf hashes of the aligned blocks of ``2**STORED_FROM_LEVEL`` leaves."""
    found: dict[int, bytes] = {}
    width = 1 << STORED_FROM_LEVEL
    for i in range(0, len(blocks), _BLOCKS_PER_QUERY):
        spans = [
            leaves_table.c.leaf_index.between(block * width, (block + 1) * width - 1)
            for block in blocks[i : i + _BLOCKS_PER_QUERY]
        ]
        rows = conn.execute(
            sa.select(leaves_table.c.leaf_index, leaves_table.c.event_hash).where(sa.or_(*spans))
        )
        for index, digest in rows:
            found[int(index)] = leaf_hash(bytes(digest))
    return found


def _node_key(level: int, index: int) -> int:
    return (level << _LEVEL_SHIFT) | index


def _leaf(row: sa.Row[tuple[object, ...]]) -> Leaf:
    m = row._mapping
    return Leaf(
        index=int(m["leaf_index"]),
        event_hash=bytes(m["event_hash"]),
        event_id=str(m["event_id"]),
        position=BusPosition(str(m["topic"]), int(m["partition"]), int(m["bus_offset"])),
        appended_at_ms=int(m["appended_at_ms"]),
    )


def _checkpoint(row: sa.Row[tuple[object, ...]]) -> Checkpoint:
    m = row._mapping
    anchor = None
    if m["tx_hash"] is not None:
        anchor = ChainAnchor(str(m["tx_hash"]), int(m["block_number"]), int(m["gas_used"]))
    return Checkpoint(
        index=int(m["checkpoint_index"]),
        tree_size=int(m["tree_size"]),
        root=bytes(m["root"]),
        previous_size=int(m["previous_size"]),
        previous_root=bytes(m["previous_root"]),
        status=CheckpointStatus(str(m["status"])),
        anchor=anchor,
        cut_at_ms=int(m["cut_at_ms"]),
        anchored_at_ms=None if m["anchored_at_ms"] is None else int(m["anchored_at_ms"]),
    )


class SqlLogRepository(LogRepository):
    def __init__(self, engine: sa.Engine) -> None:
        self._engine = engine
        self._outbox = OutboxWriter()

    @property
    def engine(self) -> sa.Engine:
        return self._engine

    def create_schema(self) -> None:
        metadata.create_all(self._engine)
        with self._engine.begin() as conn:
            _upgrade_leaves(conn)
        create_outbox_table(self._engine)

    def ping(self) -> None:
        with self._engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))

    def tree_size(self) -> int:
        with self._engine.connect() as conn:
            top = conn.execute(sa.select(sa.func.max(leaves_table.c.leaf_index))).scalar()
        return 0 if top is None else int(top) + 1

    def nodes(self, coords: Iterable[Coordinate]) -> Mapping[Coordinate, bytes]:
        """Subtrees of level ``STORED_FROM_LEVEL`` and above from the nodes table; smaller
        ones (level 0 included) from the leaf hashes of the aligned blocks they lie in."""
        wanted = list(dict.fromkeys(coords))
        small = [(level, index) for level, index in wanted if level < STORED_FROM_LEVEL]
        keys = {
            _node_key(level, index): (level, index)
            for level, index in wanted
            if level >= STORED_FROM_LEVEL
        }
        found: dict[Coordinate, bytes] = {}
        with self._engine.connect() as conn:
            if small:
                leaf_hashes = _leaf_hashes_of_blocks(
                    conn, sorted({(index << level) >> STORED_FROM_LEVEL for level, index in small})
                )
                for level, index in small:
                    span = [leaf_hashes.get(i) for i in range(index << level, (index + 1) << level)]
                    if all(span):
                        found[(level, index)] = subtree_hash(cast(list[bytes], span))
            if keys:
                rows = conn.execute(
                    sa.select(nodes_table.c.node_key, nodes_table.c.hash).where(
                        nodes_table.c.node_key.in_(list(keys))
                    )
                )
                for key, digest in rows:
                    found[keys[int(key)]] = bytes(digest)
        missing = [c for c in wanted if c not in found]
        if missing:
            raise KeyError(f"subtrees not stored: {missing[:5]}")
        return found

    def known_events(self, event_ids: Sequence[str], event_hashes: Sequence[bytes]) -> set[bytes]:
        if not event_hashes:
            return set()
        with self._engine.connect() as conn:
            return _known(conn, event_ids, event_hashes)

    def append(self, batch: LeafBatch, nodes: Sequence[Node]) -> None:
        """Writes a batch's leaves and completed subtrees in one transaction, in bulk:
        ``COPY`` on PostgreSQL, one ``executemany`` per table on SQLite (rows are plain
        tuples, bypassing per-row statement processing)."""
        if not batch:
            return
        with self._engine.begin() as conn:
            _insert(conn, batch, nodes)

    def append_unknown(
        self, build: Callable[[set[bytes]], tuple[LeafBatch, Sequence[Node]]]
    ) -> LeafBatch:
        """Optimistic: writes what ``build`` makes without looking anything up, and lets
        the unique ``(event_id, event_hash)`` reject a batch holding an event that already
        is a leaf (a redelivery, rare: after a restart or a rebalance); only then looks
        its events up and builds again, lookup and write in one transaction."""
        batch, nodes = build(set())
        if not batch:
            return batch
        try:
            with self._engine.begin() as conn:
                _insert(conn, batch, nodes)
            return batch
        except sa.exc.IntegrityError:
            log.info("a batch of %d events holds known ones; looking them up", len(batch))
        with self._engine.begin() as conn:
            known = _known(conn, batch.event_ids, batch.event_hashes)
            batch, nodes = build(known)
            if batch:
                _insert(conn, batch, nodes)
        return batch

    def _one_leaf(self, condition: sa.ColumnElement[bool]) -> Leaf | None:
        with self._engine.connect() as conn:
            row = conn.execute(sa.select(leaves_table).where(condition).limit(1)).first()
        return None if row is None else _leaf(row)

    def leaf_by_event_id(self, event_id: str) -> Leaf | None:
        return self._one_leaf(leaves_table.c.event_id == event_id)

    def leaf_at(self, index: int) -> Leaf | None:
        return self._one_leaf(leaves_table.c.leaf_index == index)

    def add_checkpoint(self, checkpoint: Checkpoint) -> None:
        with self._engine.begin() as conn:
            conn.execute(
                checkpoints_table.insert().values(
                    checkpoint_index=checkpoint.index,
                    tree_size=checkpoint.tree_size,
                    root=checkpoint.root,
                    previous_size=checkpoint.previous_size,
                    previous_root=checkpoint.previous_root,
                    status=checkpoint.status.value,
                    cut_at_ms=checkpoint.cut_at_ms,
                )
            )

    def mark_anchored(
        self,
        index: int,
        anchor: ChainAnchor,
        anchored_at_ms: int,
        events: Sequence[OutgoingEvent],
    ) -> None:
        with self._engine.begin() as conn:
            updated = conn.execute(
                checkpoints_table.update()
                .where(
                    checkpoints_table.c.checkpoint_index == index,
                    checkpoints_table.c.status == CheckpointStatus.PENDING.value,
                )
                .values(
                    status=CheckpointStatus.ANCHORED.value,
                    tx_hash=anchor.tx_hash,
                    block_number=anchor.block_number,
                    gas_used=anchor.gas_used,
                    anchored_at_ms=anchored_at_ms,
                )
            )
            if updated.rowcount != 1:
                raise LookupError(f"no pending checkpoint {index}")
            self._outbox.append(conn, [Message(e.topic, e.key, e.value) for e in events])

    def drop_pending(self, from_index: int) -> int:
        with self._engine.begin() as conn:
            result = conn.execute(
                checkpoints_table.delete().where(
                    checkpoints_table.c.checkpoint_index >= from_index,
                    checkpoints_table.c.status == CheckpointStatus.PENDING.value,
                )
            )
            return int(result.rowcount)

    def _checkpoints(
        self,
        *conditions: sa.ColumnElement[bool],
        descending: bool = False,
        limit: int | None = None,
    ) -> list[Checkpoint]:
        order = checkpoints_table.c.checkpoint_index
        query = sa.select(checkpoints_table).where(*conditions)
        query = query.order_by(order.desc() if descending else order.asc()).limit(limit)
        with self._engine.connect() as conn:
            return [_checkpoint(row) for row in conn.execute(query)]

    def checkpoint(self, index: int) -> Checkpoint | None:
        found = self._checkpoints(checkpoints_table.c.checkpoint_index == index)
        return found[0] if found else None

    def checkpoints(self, status: CheckpointStatus | None = None) -> list[Checkpoint]:
        if status is None:
            return self._checkpoints()
        return self._checkpoints(checkpoints_table.c.status == status.value)

    def latest_anchored(self) -> Checkpoint | None:
        found = self._checkpoints(
            checkpoints_table.c.status == CheckpointStatus.ANCHORED.value,
            descending=True,
            limit=1,
        )
        return found[0] if found else None

    def first_anchored_covering(self, leaf_index: int) -> Checkpoint | None:
        found = self._checkpoints(
            checkpoints_table.c.status == CheckpointStatus.ANCHORED.value,
            checkpoints_table.c.tree_size > leaf_index,
            limit=1,
        )
        return found[0] if found else None

    def checkpoint_of_size(self, tree_size: int) -> Checkpoint | None:
        found = self._checkpoints(
            checkpoints_table.c.status == CheckpointStatus.ANCHORED.value,
            checkpoints_table.c.tree_size == tree_size,
            limit=1,
        )
        return found[0] if found else None

    def anchored_checkpoints(self, from_index: int, limit: int) -> list[Checkpoint]:
        return self._checkpoints(
            checkpoints_table.c.status == CheckpointStatus.ANCHORED.value,
            checkpoints_table.c.checkpoint_index >= from_index,
            limit=limit,
        )

    def reset_checkpoints(self) -> int:
        with self._engine.begin() as conn:
            return int(conn.execute(checkpoints_table.delete()).rowcount)

    def get_state(self, key: str) -> str | None:
        with self._engine.connect() as conn:
            value = conn.execute(
                sa.select(state_table.c.value).where(state_table.c.key == key)
            ).scalar()
        return None if value is None else str(value)

    def set_state(self, key: str, value: str) -> None:
        with self._engine.begin() as conn:
            updated = conn.execute(
                state_table.update().where(state_table.c.key == key).values(value=value)
            )
            if updated.rowcount == 0:
                conn.execute(state_table.insert().values(key=key, value=value))
