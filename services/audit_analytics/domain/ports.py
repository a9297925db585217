"""Ports of audit-analytics besides the store: the relay's proofs and the chain's checkpoints."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from ehr_protocol.verify import ChainAnchor, ChainCheckpoint


class EventProofs(ABC):
    """What the ledger relay says about the log (untrusted: everything is checked on chain)."""

    @abstractmethod
    def inclusion(self, event_id: str) -> dict[str, Any] | None:
        """The inclusion proof (the relay verifier's JSON) of an event; None if not in the log.

        Raises ``NotYetAnchored`` while no anchored checkpoint covers it.
        """

    @abstractmethod
    def latest_checkpoint(self) -> dict[str, Any] | None:
        """The latest anchored checkpoint (index, tree_size, root hex, tx_hash, block_number)."""

    @abstractmethod
    def consistency(self, from_size: int, to_size: int) -> dict[str, Any]:
        """Consistency proof (``from_root``, ``proof`` hex list) between two tree sizes."""


class CheckpointReader(Protocol):
    """Read access to the anchor contract (the relay verifier's reader)."""

    def checkpoint_at(self, index: int) -> ChainCheckpoint: ...

    def find_anchor(self, index: int) -> ChainAnchor: ...


class CachedCheckpointReader:
    """Remembers what the chain said per checkpoint (anchored checkpoints never change)."""

    def __init__(self, reader: CheckpointReader) -> None:
        self._reader = reader
        self._checkpoints: dict[int, ChainCheckpoint] = {}
        self._anchors: dict[int, ChainAnchor] = {}

    def checkpoint_at(self, index: int) -> ChainCheckpoint:
        if index not in self._checkpoints:
            self._checkpoints[index] = self._reader.checkpoint_at(index)
        return self._checkpoints[index]

    def find_anchor(self, index: int) -> ChainAnchor:
        if index not in self._anchors:
            self._anchors[index] = self._reader.find_anchor(index)
        return self._anchors[index]


BusOffsets = Callable[[], Awaitable[Mapping[tuple[str, int], int]]]
"""Reads an offset per (topic, partition) from the bus: its high watermarks (the bus port's
``end_offsets``: how far the log goes, whatever the store has consumed), or a consumer
group's committed offsets (``committed_offsets``: how far that group has processed)."""
