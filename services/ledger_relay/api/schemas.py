"""Response bodies of the proofs API (hashes as lower-case hex without ``0x``)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field

from services.ledger_relay.domain.proofs import (
    AnchoredCheckpoint,
    InclusionProof,
    SizeConsistencyProof,
)
from services.platform.app.bounds import NonNegativeInt64, PositiveInt64

Hash = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$", description="SHA-256, lower-case hex")]
TxHash = Annotated[str, Field(pattern=r"^0x[0-9a-fA-F]{64}$", description="transaction hash")]
Address = Annotated[str, Field(pattern=r"^0x[0-9a-fA-F]{40}$", description="contract address")]
EventId = Annotated[str, Field(min_length=1, max_length=64)]


class AnchorContract(BaseModel):
    chain_id: NonNegativeInt64
    address: Address


class CheckpointBody(BaseModel):
    index: NonNegativeInt64
    tree_size: PositiveInt64
    root: Hash
    tx_hash: TxHash
    block_number: NonNegativeInt64

    @classmethod
    def of(cls, checkpoint: AnchoredCheckpoint) -> CheckpointBody:
        return cls(
            index=checkpoint.index,
            tree_size=checkpoint.tree_size,
            root=checkpoint.root.hex(),
            tx_hash=checkpoint.tx_hash,
            block_number=checkpoint.block_number,
        )


class InclusionProofBody(BaseModel):
    """What ``verify_event`` (and ``python -m services.ledger_relay.verify``) takes."""

    event_id: EventId
    event_hash: Hash
    leaf_index: NonNegativeInt64
    proof: list[Hash]
    checkpoint: CheckpointBody
    contract: AnchorContract

    @classmethod
    def of(cls, found: InclusionProof, contract: AnchorContract) -> InclusionProofBody:
        return cls(
            event_id=found.event_id,
            event_hash=found.event_hash.hex(),
            leaf_index=found.leaf_index,
            proof=[p.hex() for p in found.proof],
            checkpoint=CheckpointBody.of(found.checkpoint),
            contract=contract,
        )


class ConsistencyProofBody(BaseModel):
    from_size: PositiveInt64
    from_root: Hash
    to_size: PositiveInt64
    to_root: Hash
    proof: list[Hash]
    checkpoint: CheckpointBody
    contract: AnchorContract

    @classmethod
    def of(cls, found: SizeConsistencyProof, contract: AnchorContract) -> ConsistencyProofBody:
        return cls(
            from_size=found.from_size,
            from_root=found.from_root.hex(),
            to_size=found.checkpoint.tree_size,
            to_root=found.checkpoint.root.hex(),
            proof=[p.hex() for p in found.proof],
            checkpoint=CheckpointBody.of(found.checkpoint),
            contract=contract,
        )


class CheckpointList(BaseModel):
    checkpoints: list[CheckpointBody]
    contract: AnchorContract
