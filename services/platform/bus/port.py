"""The event bus port: keyed publish, consumer groups, manual commit after the effect.

The bus carries opaque bytes. A record's ``value`` is delivered exactly as it was
published (the ledger hashes those bytes). Records with the same key go to the
same partition, so one subject's events stay ordered; delivery is at least once,
and consumers make it effectively once (see ``consumer.py``).
"""

from __future__ import annotations

import base64
import json
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Protocol, Self

Headers = tuple[tuple[str, bytes], ...]


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """A topic to create: its name and its number of partitions."""

    name: str
    partitions: int = 3


@dataclass(frozen=True, slots=True)
class Position:
    """Where a published record landed."""

    topic: str
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class Message:
    """A record to publish."""

    topic: str
    key: str
    value: bytes
    headers: Headers = ()


@dataclass(frozen=True, slots=True)
class Record:
    """A consumed record; ``value`` holds the published bytes unchanged."""

    topic: str
    partition: int
    offset: int
    key: str
    value: bytes
    headers: Headers = field(default=())
    timestamp_ms: int = 0

    @property
    def position(self) -> Position:
        return Position(self.topic, self.partition, self.offset)


@dataclass(frozen=True, slots=True)
class RecordColumns:
    """Fetched records as columns: position and bytes of each, in fetch order (what a
    consumer that needs no keys, headers or timestamps reads, one list per field)."""

    topics: list[str]
    partitions: list[int]
    offsets: list[int]
    values: list[bytes]

    def __len__(self) -> int:
        return len(self.values)

    @classmethod
    def of(cls, records: Sequence[Record]) -> RecordColumns:
        return cls(
            [r.topic for r in records],
            [r.partition for r in records],
            [r.offset for r in records],
            [r.value for r in records],
        )

    def take(self, indexes: Sequence[int]) -> RecordColumns:
        """The records at ``indexes``, in that order."""
        return RecordColumns(
            [self.topics[k] for k in indexes],
            [self.partitions[k] for k in indexes],
            [self.offsets[k] for k in indexes],
            [self.values[k] for k in indexes],
        )

    @classmethod
    def concat(cls, parts: Sequence[RecordColumns]) -> RecordColumns:
        if len(parts) == 1:
            return parts[0]
        return cls(
            [t for part in parts for t in part.topics],
            [p for part in parts for p in part.partitions],
            [o for part in parts for o in part.offsets],
            [v for part in parts for v in part.values],
        )

    def positions(self) -> list[tuple[str, int, int]]:
        """(topic, partition, offset) of each record."""
        return list(zip(self.topics, self.partitions, self.offsets, strict=True))

    def next_offsets(self) -> dict[tuple[str, int], int]:
        """``last offset + 1`` per (topic, partition): what to commit after processing
        (a partition's records are fetched in offset order, so its last is its highest)."""
        last = dict(zip(zip(self.topics, self.partitions, strict=True), self.offsets, strict=True))
        return {slot: offset + 1 for slot, offset in last.items()}


class Lifecycle(ABC):
    """Something started and closed, also by ``async with``."""

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @abstractmethod
    async def start(self) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...


class ColumnConsumer(Protocol):
    """A group member read as columns: what the ledger relay needs (every
    ``BusConsumer`` is one; so is the Kafka consumer in a process of its own,
    ``process.ProcessConsumer``)."""

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def fetch_columns(
        self, max_records: int = 500, timeout_s: float = 1.0
    ) -> RecordColumns: ...

    async def commit(self, offsets: Mapping[tuple[str, int], int]) -> None: ...


class BusConsumer(Lifecycle):
    """One member of a consumer group. Offsets are committed only by ``commit``."""

    @abstractmethod
    async def start(self) -> None:
        """Joins the group; reading resumes at the group's committed offsets (else earliest)."""

    @abstractmethod
    async def close(self) -> None:
        """Leaves the group without committing anything."""

    @abstractmethod
    async def fetch(self, max_records: int = 500, timeout_s: float = 1.0) -> list[Record]:
        """Returns the next records of the assigned partitions (empty after ``timeout_s``)."""

    @abstractmethod
    async def commit(self, offsets: Mapping[tuple[str, int], int]) -> None:
        """Stores, for the group, the next offset to read per (topic, partition)."""

    @abstractmethod
    async def seek(self, topic: str, partition: int, offset: int) -> None:
        """Makes the next ``fetch`` of that partition start at ``offset``."""

    @abstractmethod
    async def assignment(self) -> set[tuple[str, int]]:
        """The (topic, partition) pairs this member currently reads."""

    async def fetch_columns(self, max_records: int = 500, timeout_s: float = 1.0) -> RecordColumns:
        """``fetch``, as columns."""
        return RecordColumns.of(await self.fetch(max_records, timeout_s))

    async def commit_records(self, records: Iterable[Record]) -> None:
        """Commits ``last offset + 1`` of each partition seen in ``records``."""
        offsets = next_offsets(records)
        if offsets:
            await self.commit(offsets)


class EventBus(Lifecycle):
    """Publishes keyed records and creates group consumers."""

    @abstractmethod
    async def create_topics(self, topics: Sequence[TopicSpec]) -> None:
        """Creates the topics that do not exist yet (existing ones are left as they are)."""

    @abstractmethod
    async def partitions(self, topic: str) -> int:
        """The number of partitions of ``topic``; ``UnknownTopicError`` if it does not exist."""

    @abstractmethod
    async def publish_many(self, messages: Sequence[Message]) -> list[Position]:
        """Publishes in order; returns once every record is durably acknowledged."""

    async def publish(self, topic: str, key: str, value: bytes, headers: Headers = ()) -> Position:
        """Publishes one record to the partition of ``key``."""
        (position,) = await self.publish_many([Message(topic, key, value, headers)])
        return position

    @abstractmethod
    async def end_offsets(self, topics: Sequence[str]) -> dict[tuple[str, int], int]:
        """The high watermark of every partition of ``topics``: the offset the next record
        published there will get (0 for an empty partition). ``UnknownTopicError`` if a
        topic does not exist. Tells a consumer how far behind the log it is."""

    @abstractmethod
    async def committed_offsets(
        self, group: str, topics: Sequence[str]
    ) -> dict[tuple[str, int], int]:
        """The next offset consumer group ``group`` has committed on every partition of
        ``topics`` (0 where it has committed nothing, and for a group that does not exist):
        how far that group has processed. ``UnknownTopicError`` if a topic does not exist."""

    @abstractmethod
    def consumer(self, group: str, topics: Sequence[str]) -> BusConsumer:
        """A new, not yet started member of consumer group ``group``."""


def next_offsets(records: Iterable[Record]) -> dict[tuple[str, int], int]:
    """``last offset + 1`` per (topic, partition) of records in fetch order: what to
    commit after processing them (``RecordColumns.next_offsets`` of the same records)."""
    return RecordColumns.of(list(records)).next_offsets()


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (``org.apache.kafka.common.utils.Utils.murmur2``), signed 32-bit."""
    length = len(data)
    seed = 0x9747B28C
    m = 0x5BD1E995
    r = 24
    h = (seed ^ length) & 0xFFFFFFFF
    quads = length // 4
    for i in range(quads):
        k = int.from_bytes(data[4 * i : 4 * i + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> r
        k = (k * m) & 0xFFFFFFFF
        h = (h * m) & 0xFFFFFFFF
        h ^= k
    tail = length & 3
    base = quads * 4
    if tail == 3:
        h ^= data[base + 2] << 16
    if tail >= 2:
        h ^= data[base + 1] << 8
    if tail >= 1:
        h ^= data[base]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def partition_for_key(key: str, partitions: int) -> int:
    """The partition of ``key``, computed exactly as Kafka's default partitioner does."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


def encode_headers(headers: Headers) -> bytes:
    """Headers as bytes for storage (embedded log, outbox)."""
    return json.dumps(
        [[name, base64.b64encode(value).decode("ascii")] for name, value in headers]
    ).encode()


def decode_headers(data: bytes) -> Headers:
    return tuple((str(name), base64.b64decode(value)) for name, value in json.loads(data))
