"""Standalone verifier: an event's bytes + its inclusion proof + read access to the chain.

Library: ``verify_event(raw, proof_json, reader)``. CLI::

    python -m services.ledger_relay.verify EVENT_FILE PROOF_JSON --rpc-url URL --contract ADDR

It trusts nothing the relay says: it hashes the bytes itself, recomputes the
root from the proof, and reads checkpoint ``index`` and the anchoring
transaction's receipt from the chain.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import typer

from services.ledger_relay.domain.errors import ProofInvalid
from services.ledger_relay.domain.merkle import leaf_hash, verify_inclusion
from services.ledger_relay.domain.model import ChainAnchor, ChainCheckpoint
from services.ledger_relay.domain.proofs import InclusionProof
from services.platform.events.envelope import event_hash


class CheckpointReader(Protocol):
    def checkpoint_at(self, index: int) -> ChainCheckpoint: ...

    def find_anchor(self, index: int) -> ChainAnchor: ...


@dataclass(frozen=True, slots=True)
class Verified:
    leaf_index: int
    checkpoint_index: int
    tree_size: int
    tx_hash: str
    block_number: int


def inclusion_to_json(proof: InclusionProof) -> dict[str, Any]:
    c = proof.checkpoint
    return {
        "event_id": proof.event_id,
        "event_hash": proof.event_hash.hex(),
        "leaf_index": proof.leaf_index,
        "proof": [p.hex() for p in proof.proof],
        "checkpoint": {
            "index": c.index,
            "tree_size": c.tree_size,
            "root": c.root.hex(),
            "tx_hash": c.tx_hash,
            "block_number": c.block_number,
        },
    }


def verify_event(raw: bytes, proof: dict[str, Any], reader: CheckpointReader) -> Verified:
    """Raises ``ProofInvalid`` unless the event is in the checkpoint anchored on chain."""
    digest = event_hash(raw)
    if digest.hex() != proof["event_hash"]:
        raise ProofInvalid("the event bytes do not hash to the proof's event hash")
    checkpoint = proof["checkpoint"]
    index, size = int(checkpoint["index"]), int(checkpoint["tree_size"])
    on_chain = reader.checkpoint_at(index)
    if on_chain.tree_size != size:
        raise ProofInvalid(f"chain checkpoint {index} has {on_chain.tree_size} leaves, not {size}")
    path = [bytes.fromhex(p) for p in proof["proof"]]
    verify_inclusion(int(proof["leaf_index"]), size, leaf_hash(digest), path, on_chain.root)
    anchor = reader.find_anchor(index)
    if anchor.tx_hash.lower() != str(checkpoint["tx_hash"]).lower() or anchor.block_number != int(
        checkpoint["block_number"]
    ):
        raise ProofInvalid("the anchoring transaction on chain differs from the proof's")
    return Verified(int(proof["leaf_index"]), index, size, anchor.tx_hash, anchor.block_number)


class Web3CheckpointReader:
    """Reads ``AuditAnchor`` over JSON-RPC; needs no key."""

    def __init__(self, rpc_url: str, address: str) -> None:
        from web3 import Web3

        from services.platform.chain.port import load_artifact

        self._w3 = Web3(Web3.HTTPProvider(rpc_url))
        abi = list(load_artifact("AuditAnchor").abi)
        self._contract = self._w3.eth.contract(address=Web3.to_checksum_address(address), abi=abi)

    def checkpoint_at(self, index: int) -> ChainCheckpoint:
        size, root = self._contract.functions.checkpointAt(index).call()
        return ChainCheckpoint(index, int(size), bytes(root))

    def find_anchor(self, index: int) -> ChainAnchor:
        logs = self._contract.events.CheckpointAnchored().get_logs(
            argument_filters={"index": index}, from_block=0
        )
        if not logs:
            raise ProofInvalid(f"no CheckpointAnchored event for checkpoint {index}")
        receipt = self._w3.eth.get_transaction_receipt(logs[0]["transactionHash"])
        return ChainAnchor(
            "0x" + bytes(receipt["transactionHash"]).hex().removeprefix("0x"),
            int(receipt["blockNumber"]),
            int(receipt["gasUsed"]),
        )


cli = typer.Typer(add_completion=False, help=__doc__)


@cli.command()
def main(
    event_file: Path,
    proof_file: Path,
    rpc_url: str = typer.Option(..., help="JSON-RPC endpoint of the chain"),
    contract: str = typer.Option(..., help="AuditAnchor address"),
) -> None:
    """Verify that EVENT_FILE (the exact bus bytes) is anchored, using PROOF_FILE (JSON)."""
    proof = json.loads(proof_file.read_text())
    try:
        result = verify_event(
            event_file.read_bytes(), proof, Web3CheckpointReader(rpc_url, contract)
        )
    except ProofInvalid as error:
        typer.echo(f"INVALID: {error}", err=True)
        raise typer.Exit(1) from error
    typer.echo(
        f"OK: leaf {result.leaf_index} of checkpoint {result.checkpoint_index} "
        f"({result.tree_size} leaves), tx {result.tx_hash} in block {result.block_number}"
    )


if __name__ == "__main__":
    cli()
