"""Leaves, checkpoints and the repository port that stores them durably."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from itertools import repeat

from ehr_protocol.verify import ChainAnchor, ChainCheckpoint

from services.ledger_relay.domain.merkle import Coordinate, Node

__all__ = [
    "AnchorLedger",
    "BusPosition",
    "ChainAnchor",
    "ChainCheckpoint",
    "Checkpoint",
    "CheckpointStatus",
    "Leaf",
    "LeafBatch",
    "LogRepository",
    "OutgoingEvent",
]

EVENT_ID_MAX_CHARS = 64
"""The longest envelope id a leaf keeps as its id (a UUIDv7 has 36 characters)."""


@dataclass(frozen=True, slots=True)
class BusPosition:
    topic: str
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class Leaf:
    """Leaf ``index`` of the log: the hash of one event's exact bus bytes."""

    index: int
    event_hash: bytes
    """SHA-256 of the event bytes: the leaf *data*; the leaf hash is ``H(0x00 || event_hash)``."""
    event_id: str
    """The envelope id, or the event hash in hex for bytes that are not an envelope or
    whose id is empty, not printable or longer than ``EVENT_ID_MAX_CHARS``: a function of
    the event bytes, like ``event_hash`` (so ``(event_id, event_hash)`` is unique exactly
    when ``event_hash`` is)."""
    position: BusPosition
    appended_at_ms: int


@dataclass(frozen=True, slots=True)
class LeafBatch:
    """Consecutive leaves from ``first_index``, one list per field: what the consume
    path builds and writes (no object per leaf)."""

    first_index: int
    event_hashes: list[bytes]
    event_ids: list[str]
    topics: list[str]
    partitions: list[int]
    offsets: list[int]
    appended_at_ms: int

    def __len__(self) -> int:
        return len(self.event_hashes)

    @classmethod
    def of(cls, leaves: Sequence[Leaf]) -> LeafBatch:
        """The batch of consecutive ``leaves`` appended at the same time."""
        if not leaves:
            raise ValueError("a batch of leaves needs at least one leaf")
        first, at = leaves[0].index, leaves[0].appended_at_ms
        if [leaf.index for leaf in leaves] != list(range(first, first + len(leaves))):
            raise ValueError("the leaves of a batch are consecutive")
        if any(leaf.appended_at_ms != at for leaf in leaves):
            raise ValueError("the leaves of a batch are appended at the same time")
        return cls(
            first,
            [leaf.event_hash for leaf in leaves],
            [leaf.event_id for leaf in leaves],
            [leaf.position.topic for leaf in leaves],
            [leaf.position.partition for leaf in leaves],
            [leaf.position.offset for leaf in leaves],
            at,
        )

    @classmethod
    def concat(cls, batches: Sequence[LeafBatch]) -> LeafBatch:
        """Consecutive batches as one (the first's ``appended_at_ms``)."""
        if len(batches) == 1:
            return batches[0]
        return cls(
            batches[0].first_index,
            [h for b in batches for h in b.event_hashes],
            [i for b in batches for i in b.event_ids],
            [t for b in batches for t in b.topics],
            [p for b in batches for p in b.partitions],
            [o for b in batches for o in b.offsets],
            batches[0].appended_at_ms,
        )

    def rows(self) -> Iterator[tuple[int, bytes, str, str, int, int, int]]:
        """``(index, event_hash, event_id, topic, partition, offset, appended_at_ms)``."""
        first = self.first_index
        return zip(
            range(first, first + len(self.event_hashes)),
            self.event_hashes,
            self.event_ids,
            self.topics,
            self.partitions,
            self.offsets,
            repeat(self.appended_at_ms),
            strict=False,
        )

    def leaves(self) -> list[Leaf]:
        return [
            Leaf(index, digest, event_id, BusPosition(topic, partition, offset), at)
            for index, digest, event_id, topic, partition, offset, at in self.rows()
        ]


class CheckpointStatus(StrEnum):
    PENDING = "pending"
    """Cut and about to be (or being) sent; not known to be on chain."""
    ANCHORED = "anchored"


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """Checkpoint ``index`` (its position in ``AuditAnchor``): the tree of ``tree_size`` leaves."""

    index: int
    tree_size: int
    root: bytes
    previous_size: int
    previous_root: bytes
    status: CheckpointStatus
    anchor: ChainAnchor | None = None
    cut_at_ms: int = 0
    anchored_at_ms: int | None = None


@dataclass(frozen=True, slots=True)
class OutgoingEvent:
    """An event to publish through the outbox, in the same transaction as a state change."""

    topic: str
    key: str
    value: bytes


class LogRepository(ABC):
    """Durable storage of the Merkle log and its checkpoints.

    ``append`` stores leaves and the perfect subtrees they complete in one
    transaction, so the stored tree is always a consistent prefix.
    """

    @abstractmethod
    def create_schema(self) -> None: ...

    @abstractmethod
    def tree_size(self) -> int: ...

    @abstractmethod
    def nodes(self, coords: Iterable[Coordinate]) -> Mapping[Coordinate, bytes]:
        """The stored hashes of perfect subtrees (level 0: leaf hashes); a ``NodeLookup``."""

    @abstractmethod
    def known_events(self, event_ids: Sequence[str], event_hashes: Sequence[bytes]) -> set[bytes]:
        """Which of these events (ids and hashes of the same events) already are leaves;
        returns their hashes."""

    @abstractmethod
    def append(self, batch: LeafBatch, nodes: Sequence[Node]) -> None:
        """Stores leaves (indices continuing the log) and completed subtrees atomically."""

    def append_unknown(
        self, build: Callable[[set[bytes]], tuple[LeafBatch, Sequence[Node]]]
    ) -> LeafBatch:
        """Has ``build`` make the leaves and subtrees of its events that are not leaves
        yet (``build`` gets the hashes of the known ones), stores them atomically and
        returns them. ``build`` is called with nothing known first; if some of the
        events it made are leaves already, it is called again with their hashes. So
        ``build`` must not keep state from a call whose leaves were not written."""
        batch, nodes = build(set())
        known = self.known_events(batch.event_ids, batch.event_hashes)
        if known:
            batch, nodes = build(known)
        if batch:
            self.append(batch, nodes)
        return batch

    @abstractmethod
    def leaf_by_event_id(self, event_id: str) -> Leaf | None: ...

    @abstractmethod
    def leaf_at(self, index: int) -> Leaf | None: ...

    @abstractmethod
    def add_checkpoint(self, checkpoint: Checkpoint) -> None:
        """Records a newly cut (pending) checkpoint."""

    @abstractmethod
    def mark_anchored(
        self,
        index: int,
        anchor: ChainAnchor,
        anchored_at_ms: int,
        events: Sequence[OutgoingEvent],
    ) -> None:
        """Marks a checkpoint anchored and queues ``events`` in the outbox, atomically."""

    @abstractmethod
    def drop_pending(self, from_index: int) -> int:
        """Forgets pending checkpoints with index >= ``from_index``; returns how many."""

    @abstractmethod
    def checkpoint(self, index: int) -> Checkpoint | None: ...

    @abstractmethod
    def checkpoints(self, status: CheckpointStatus | None = None) -> list[Checkpoint]:
        """All checkpoints (or those with ``status``) in index order."""

    @abstractmethod
    def latest_anchored(self) -> Checkpoint | None: ...

    @abstractmethod
    def first_anchored_covering(self, leaf_index: int) -> Checkpoint | None:
        """The earliest anchored checkpoint whose tree contains leaf ``leaf_index``."""

    @abstractmethod
    def checkpoint_of_size(self, tree_size: int) -> Checkpoint | None:
        """The anchored checkpoint of this tree size."""

    @abstractmethod
    def anchored_checkpoints(self, from_index: int, limit: int) -> list[Checkpoint]:
        """Up to ``limit`` anchored checkpoints with index >= ``from_index``, in index order."""

    @abstractmethod
    def reset_checkpoints(self) -> int:
        """Forgets every checkpoint (the log was moved to a new anchor contract)."""

    @abstractmethod
    def get_state(self, key: str) -> str | None:
        """A value the relay keeps between runs (e.g. the anchor contract's address)."""

    @abstractmethod
    def set_state(self, key: str, value: str) -> None: ...


class AnchorLedger(ABC):
    """The on-chain checkpoint register (``AuditAnchor``), seen by the relay.

    Synchronous: the relay calls it from worker threads.
    """

    @abstractmethod
    def count(self) -> int:
        """How many checkpoints the chain holds."""

    @abstractmethod
    def checkpoint_at(self, index: int) -> ChainCheckpoint: ...

    @abstractmethod
    def submit(self, tree_size: int, root: bytes, proof: Sequence[bytes]) -> str:
        """Sends the anchoring transaction; returns its hash without waiting."""

    @abstractmethod
    def wait(self, tx_hash: str) -> ChainAnchor:
        """Waits for the transaction to be mined; raises if it failed."""

    @abstractmethod
    def find_anchor(self, index: int) -> ChainAnchor:
        """The transaction that anchored checkpoint ``index``."""

    @abstractmethod
    def block_number(self) -> int: ...

    @property
    @abstractmethod
    def chain_id(self) -> int: ...

    @property
    @abstractmethod
    def address(self) -> str: ...
