"""The embedded durable log: Kafka's topic/partition/offset/group semantics in one SQLite file.

Records, topics and committed group offsets live in ``<data_dir>/log.sqlite3``
(WAL journal, ``synchronous=FULL``: a publish returns only once it is on disk),
so the log and every group's progress survive a process restart. Keys map to
partitions with Kafka's own partitioner, so a key lands on the same partition
number on both adapters. Group members in one process share the group's
partitions (round robin); the log is meant for one process at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from .errors import (
    BusClosedError,
    CommitError,
    LogCorruptedError,
    PublishError,
    TopicConflictError,
    UnknownTopicError,
)
from .port import (
    BusConsumer,
    EventBus,
    Message,
    Position,
    Record,
    TopicSpec,
    decode_headers,
    encode_headers,
    partition_for_key,
)

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS topics (
    name TEXT PRIMARY KEY,
    partitions INTEGER NOT NULL CHECK (partitions > 0)
);
CREATE TABLE IF NOT EXISTS records (
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    offset INTEGER NOT NULL,
    key TEXT NOT NULL,
    value BLOB NOT NULL,
    headers BLOB NOT NULL,
    timestamp_ms INTEGER NOT NULL,
    PRIMARY KEY (topic, partition, offset)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS group_offsets (
    group_id TEXT NOT NULL,
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    PRIMARY KEY (group_id, topic, partition)
) WITHOUT ROWID;
"""

Slot = tuple[str, int]


class EmbeddedEventBus(EventBus):
    """The durable embedded log kept in ``data_dir``."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self._db: sqlite3.Connection | None = None
        # One thread owns the SQLite connection: every log operation runs there, in order.
        self._executor: ThreadPoolExecutor | None = None
        self._appended = asyncio.Event()
        self._members: dict[str, list[EmbeddedConsumer]] = {}
        self._generation: dict[str, int] = {}

    # -- life cycle -------------------------------------------------------------------------
    async def start(self) -> None:
        if self._db is not None:
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embedded-log")
        self._db = await self._run_unchecked(self._open)

    def _open(self) -> sqlite3.Connection:
        try:
            db = sqlite3.connect(
                self.data_dir / "log.sqlite3", isolation_level=None, check_same_thread=False
            )
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise LogCorruptedError(f"cannot open the log in {self.data_dir}: {exc}") from exc
        return db

    async def close(self) -> None:
        if self._db is None or self._executor is None:
            return
        db, executor = self._db, self._executor
        self._db = None
        await asyncio.get_running_loop().run_in_executor(executor, db.close)
        executor.shutdown(wait=True)
        self._executor = None

    async def _run_unchecked(self, work: Callable[[], T]) -> T:
        assert self._executor is not None
        return await asyncio.get_running_loop().run_in_executor(self._executor, work)

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        db = self._db
        if db is None or self._executor is None:
            raise BusClosedError("the embedded log is not started")
        return await asyncio.get_running_loop().run_in_executor(self._executor, work, db)

    # -- topics -----------------------------------------------------------------------------
    async def create_topics(self, topics: Sequence[TopicSpec]) -> None:
        def create(db: sqlite3.Connection) -> None:
            with _transaction(db):
                for spec in topics:
                    if spec.partitions < 1:
                        raise TopicConflictError(f"{spec.name}: partitions must be >= 1")
                    row = db.execute(
                        "SELECT partitions FROM topics WHERE name = ?", (spec.name,)
                    ).fetchone()
                    if row is None:
                        db.execute(
                            "INSERT INTO topics (name, partitions) VALUES (?, ?)",
                            (spec.name, spec.partitions),
                        )

        await self._run(create)

    async def partitions(self, topic: str) -> int:
        return await self._run(lambda db: _partitions(db, topic))

    # -- publish ----------------------------------------------------------------------------
    async def publish_many(self, messages: Sequence[Message]) -> list[Position]:
        def append(db: sqlite3.Connection) -> list[Position]:
            now_ms = time.time_ns() // 1_000_000
            partitions: dict[str, int] = {}
            next_offset: dict[Slot, int] = {}
            positions: list[Position] = []
            rows: list[tuple[str, int, int, str, bytes, bytes, int]] = []
            with _transaction(db):
                for message in messages:
                    if message.topic not in partitions:
                        partitions[message.topic] = _partitions(db, message.topic)
                    partition = partition_for_key(message.key, partitions[message.topic])
                    slot = (message.topic, partition)
                    if slot not in next_offset:
                        (last,) = db.execute(
                            "SELECT MAX(offset) FROM records WHERE topic = ? AND partition = ?",
                            slot,
                        ).fetchone()
                        next_offset[slot] = 0 if last is None else last + 1
                    offset = next_offset[slot]
                    next_offset[slot] = offset + 1
                    rows.append(
                        (
                            message.topic,
                            partition,
                            offset,
                            message.key,
                            bytes(message.value),
                            encode_headers(message.headers),
                            now_ms,
                        )
                    )
                    positions.append(Position(message.topic, partition, offset))
                try:
                    db.executemany("INSERT INTO records VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
                except sqlite3.IntegrityError as exc:
                    raise PublishError(f"offset clash; is another process writing? {exc}") from exc
            return positions

        if not messages:
            return []
        positions = await self._run(append)
        self._wake_consumers()
        return positions

    def _wake_consumers(self) -> None:
        appended, self._appended = self._appended, asyncio.Event()
        appended.set()

    async def end_offsets(self, topics: Sequence[str]) -> dict[Slot, int]:
        def read(db: sqlite3.Connection) -> dict[Slot, int]:
            ends: dict[Slot, int] = {}
            for topic in dict.fromkeys(topics):
                for partition in range(_partitions(db, topic)):
                    (last,) = db.execute(
                        "SELECT MAX(offset) FROM records WHERE topic = ? AND partition = ?",
                        (topic, partition),
                    ).fetchone()
                    ends[(topic, partition)] = 0 if last is None else last + 1
            return ends

        return await self._run(read)

    async def committed_offsets(self, group: str, topics: Sequence[str]) -> dict[Slot, int]:
        def read(db: sqlite3.Connection) -> dict[Slot, int]:
            found: dict[Slot, int] = {}
            for topic in dict.fromkeys(topics):
                for partition in range(_partitions(db, topic)):
                    row = db.execute(
                        "SELECT next_offset FROM group_offsets"
                        " WHERE group_id = ? AND topic = ? AND partition = ?",
                        (group, topic, partition),
                    ).fetchone()
                    found[(topic, partition)] = 0 if row is None else row[0]
            return found

        return await self._run(read)

    # -- groups -----------------------------------------------------------------------------
    def consumer(self, group: str, topics: Sequence[str]) -> EmbeddedConsumer:
        return EmbeddedConsumer(self, group, list(topics))

    def _join(self, member: EmbeddedConsumer) -> None:
        self._members.setdefault(member.group, []).append(member)
        self._generation[member.group] = self._generation.get(member.group, 0) + 1

    def _leave(self, member: EmbeddedConsumer) -> None:
        members = self._members.get(member.group, [])
        if member in members:
            members.remove(member)
            self._generation[member.group] = self._generation.get(member.group, 0) + 1

    async def _assignment_of(self, member: EmbeddedConsumer) -> tuple[int, set[Slot]]:
        """Round robin of the group's partitions over its members, in join order."""
        generation = self._generation.get(member.group, 0)
        members = self._members.get(member.group, [])
        topics = sorted({t for m in members for t in m.topics})

        def read(db: sqlite3.Connection) -> dict[str, int]:
            return {t: _partitions(db, t) for t in topics}

        partitions = await self._run(read)
        assigned: set[Slot] = set()
        for topic in topics:
            subscribed = [m for m in members if topic in m.topics]
            for partition in range(partitions[topic]):
                if subscribed[partition % len(subscribed)] is member:
                    assigned.add((topic, partition))
        return generation, assigned


class EmbeddedConsumer(BusConsumer):
    """A member of a consumer group of the embedded log."""

    def __init__(self, bus: EmbeddedEventBus, group: str, topics: list[str]) -> None:
        self.bus = bus
        self.group = group
        self.topics = topics
        self._started = False
        self._generation = -1
        self._positions: dict[Slot, int] = {}

    async def start(self) -> None:
        if self._started:
            return
        for topic in self.topics:
            await self.bus.partitions(topic)  # UnknownTopicError early, like a subscription
        self.bus._join(self)
        self._started = True

    async def close(self) -> None:
        if self._started:
            self.bus._leave(self)
            self._started = False
            self._positions.clear()
            self._generation = -1

    def _check_started(self) -> None:
        if not self._started:
            raise BusClosedError(f"consumer of group {self.group} is not started")

    async def _rebalance(self) -> None:
        """After a member joined or left: keep positions of kept partitions, resume the rest."""
        if self._generation == self.bus._generation.get(self.group, 0):
            return
        generation, assigned = await self.bus._assignment_of(self)
        kept = {slot: pos for slot, pos in self._positions.items() if slot in assigned}
        group = self.group

        def committed(db: sqlite3.Connection) -> dict[Slot, int]:
            rows = db.execute(
                "SELECT topic, partition, next_offset FROM group_offsets WHERE group_id = ?",
                (group,),
            ).fetchall()
            return {(t, p): o for t, p, o in rows}

        stored = await self.bus._run(committed)
        self._positions = {slot: kept.get(slot, stored.get(slot, 0)) for slot in sorted(assigned)}
        self._generation = generation

    async def assignment(self) -> set[Slot]:
        self._check_started()
        await self._rebalance()
        return set(self._positions)

    async def fetch(self, max_records: int = 500, timeout_s: float = 1.0) -> list[Record]:
        self._check_started()
        deadline = time.monotonic() + timeout_s
        while True:
            appended = self.bus._appended
            await self._rebalance()
            records = await self._read(max_records)
            if records:
                for record in records:
                    self._positions[(record.topic, record.partition)] = record.offset + 1
                return records
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(appended.wait(), min(remaining, 0.2))

    async def _read(self, max_records: int) -> list[Record]:
        positions = dict(self._positions)

        def read(db: sqlite3.Connection) -> list[Record]:
            records: list[Record] = []
            for (topic, partition), offset in positions.items():
                if len(records) >= max_records:
                    break
                rows = db.execute(
                    "SELECT offset, key, value, headers, timestamp_ms FROM records"
                    " WHERE topic = ? AND partition = ? AND offset >= ?"
                    " ORDER BY offset LIMIT ?",
                    (topic, partition, offset, max_records - len(records)),
                ).fetchall()
                records.extend(
                    Record(topic, partition, o, k, bytes(v), decode_headers(h), ts)
                    for o, k, v, h, ts in rows
                )
            return records

        return await self.bus._run(read)

    async def commit(self, offsets: Mapping[Slot, int]) -> None:
        self._check_started()
        await self._rebalance()
        foreign = [slot for slot in offsets if slot not in self._positions]
        if foreign:
            raise CommitError(f"partitions {foreign} are not assigned to this member")
        group = self.group
        rows = [(group, topic, partition, offset) for (topic, partition), offset in offsets.items()]

        def store(db: sqlite3.Connection) -> None:
            with _transaction(db):
                db.executemany(
                    "INSERT INTO group_offsets (group_id, topic, partition, next_offset)"
                    " VALUES (?, ?, ?, ?) ON CONFLICT (group_id, topic, partition)"
                    " DO UPDATE SET next_offset = excluded.next_offset",
                    rows,
                )

        await self.bus._run(store)

    async def seek(self, topic: str, partition: int, offset: int) -> None:
        self._check_started()
        await self._rebalance()
        if (topic, partition) not in self._positions:
            raise CommitError(f"partition {topic}/{partition} is not assigned to this member")
        self._positions[(topic, partition)] = offset


def _partitions(db: sqlite3.Connection, topic: str) -> int:
    row = db.execute("SELECT partitions FROM topics WHERE name = ?", (topic,)).fetchone()
    if row is None:
        raise UnknownTopicError(topic)
    return int(row[0])


class _transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on error) on an autocommit connection."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")
