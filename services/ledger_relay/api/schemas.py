"""Response bodies of the proofs API (hashes as lower-case hex without ``0x``)."""

from __future__ import annotations

from pydantic import BaseModel

from services.ledger_relay.domain.proofs import (
    AnchoredCheckpoint,
    InclusionProof,
    SizeConsistencyProof,
)


class AnchorContract(BaseModel):
    chain_id: int
    address: str


class CheckpointBody(BaseModel):
    index: int
    tree_size: int
    root: str
    tx_hash: str
    block_number: int

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

    event_id: str
    event_hash: str
    leaf_index: int
    proof: list[str]
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
    from_size: int
    from_root: str
    to_size: int
    to_root: str
    proof: list[str]
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
