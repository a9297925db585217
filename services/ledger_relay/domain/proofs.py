"""Proof use cases: an event's inclusion in an anchored checkpoint, consistency between two."""

from __future__ import annotations

from dataclasses import dataclass

from services.ledger_relay.domain.errors import (
    CheckpointNotFound,
    EventNotFound,
    InvalidRange,
    NotYetAnchored,
)
from services.ledger_relay.domain.merkle import consistency_proof, inclusion_proof, root_of
from services.ledger_relay.domain.model import Checkpoint, CheckpointStatus, LogRepository


@dataclass(frozen=True, slots=True)
class AnchoredCheckpoint:
    index: int
    tree_size: int
    root: bytes
    tx_hash: str
    block_number: int


@dataclass(frozen=True, slots=True)
class InclusionProof:
    event_id: str
    event_hash: bytes
    leaf_index: int
    proof: list[bytes]
    checkpoint: AnchoredCheckpoint


@dataclass(frozen=True, slots=True)
class ConsistencyProof:
    first: AnchoredCheckpoint
    second: AnchoredCheckpoint
    proof: list[bytes]


@dataclass(frozen=True, slots=True)
class SizeConsistencyProof:
    """Consistency of the tree of ``from_size`` leaves with an anchored checkpoint."""

    from_size: int
    from_root: bytes
    checkpoint: AnchoredCheckpoint
    proof: list[bytes]


def _anchored(checkpoint: Checkpoint) -> AnchoredCheckpoint:
    assert checkpoint.anchor is not None
    return AnchoredCheckpoint(
        checkpoint.index,
        checkpoint.tree_size,
        checkpoint.root,
        checkpoint.anchor.tx_hash,
        checkpoint.anchor.block_number,
    )


class ProofService:
    def __init__(self, repository: LogRepository) -> None:
        self._repo = repository

    def _checkpoint(self, index: int | None) -> Checkpoint:
        found = self._repo.latest_anchored() if index is None else self._repo.checkpoint(index)
        if found is None or found.status is not CheckpointStatus.ANCHORED:
            raise CheckpointNotFound(
                f"no anchored checkpoint {'latest' if index is None else index}"
            )
        return found

    def inclusion(self, event_id: str, checkpoint_index: int | None = None) -> InclusionProof:
        """The proof to ``checkpoint_index``, or by default the first checkpoint covering it."""
        leaf = self._repo.leaf_by_event_id(event_id)
        if leaf is None:
            raise EventNotFound(f"no event {event_id} in the log")
        if checkpoint_index is None:
            checkpoint = self._repo.first_anchored_covering(leaf.index)
            if checkpoint is None:
                raise NotYetAnchored(f"event {event_id} is not anchored yet")
        else:
            checkpoint = self._checkpoint(checkpoint_index)
            if checkpoint.tree_size <= leaf.index:
                raise InvalidRange(f"checkpoint {checkpoint_index} precedes event {event_id}")
        proof = inclusion_proof(leaf.index, checkpoint.tree_size, self._repo.nodes)
        return InclusionProof(event_id, leaf.event_hash, leaf.index, proof, _anchored(checkpoint))

    def consistency(self, first: int, second: int | None = None) -> ConsistencyProof:
        older, newer = self._checkpoint(first), self._checkpoint(second)
        if older.tree_size > newer.tree_size:
            raise InvalidRange(f"checkpoint {first} is newer than checkpoint {newer.index}")
        proof = consistency_proof(older.tree_size, newer.tree_size, self._repo.nodes)
        return ConsistencyProof(_anchored(older), _anchored(newer), proof)

    def consistency_between_sizes(self, from_size: int, to_size: int) -> SizeConsistencyProof:
        """Proof that the tree of ``from_size`` leaves is a prefix of anchored ``to_size``."""
        if from_size < 1 or from_size > to_size:
            raise InvalidRange(f"from_size must be in 1..to_size, got {from_size}..{to_size}")
        checkpoint = self._repo.checkpoint_of_size(to_size)
        if checkpoint is None:
            raise CheckpointNotFound(f"no anchored checkpoint of size {to_size}")
        proof = consistency_proof(from_size, to_size, self._repo.nodes)
        return SizeConsistencyProof(
            from_size, root_of(from_size, self._repo.nodes), _anchored(checkpoint), proof
        )

    def latest(self) -> AnchoredCheckpoint:
        return _anchored(self._checkpoint(None))

    def checkpoints(self, from_index: int, limit: int) -> list[AnchoredCheckpoint]:
        if from_index < 0 or limit < 1:
            raise InvalidRange("from_index must be >= 0 and limit >= 1")
        return [_anchored(c) for c in self._repo.anchored_checkpoints(from_index, limit)]
