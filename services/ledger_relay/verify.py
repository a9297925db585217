"""Standalone verifier: an event's bytes + its inclusion proof + read access to the chain.

Library: ``verify_event(raw, proof_json, reader)``. CLI::

    python -m services.ledger_relay.verify EVENT_FILE PROOF_JSON --rpc-url URL --contract ADDR

It trusts nothing the relay says: it hashes the bytes itself, recomputes the
root from the proof, and reads checkpoint ``index`` and the anchoring
transaction's receipt from the chain.

The CLI prints one line and exits with a code a script can act on:

- 0 ``OK: ...``: the event is in the checkpoint anchored on chain;
- 1 ``INVALID: <reason>``: it is not (altered bytes, a malformed proof, a checkpoint the
  chain does not hold, another anchoring transaction);
- 2 ``ERROR: <reason>``: the inputs cannot be read (a missing or unreadable file, a proof
  file that is not JSON, a contract address that is not one);
- 3 ``ERROR: <reason>``: the chain cannot be read (unreachable, no contract there).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import typer

from services.ledger_relay.domain.errors import CheckpointNotFound, ProofInvalid
from services.ledger_relay.domain.merkle import leaf_hash, verify_inclusion
from services.ledger_relay.domain.model import ChainAnchor, ChainCheckpoint
from services.ledger_relay.domain.proofs import InclusionProof
from services.platform.app.bounds import INT64_MAX
from services.platform.chain.errors import ChainError, ChainUnavailable
from services.platform.events.envelope import event_hash

MAX_PATH = 64
"""An inclusion path in a tree of at most 2**63 - 1 leaves has at most 63 hashes."""


class CheckpointReader(Protocol):
    """Read access to the anchor contract. ``checkpoint_at`` and ``find_anchor`` raise
    ``CheckpointNotFound`` for a checkpoint the chain does not hold, ``ChainError`` when
    the chain cannot be read."""

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


@dataclass(frozen=True, slots=True)
class _Proof:
    event_hash: str
    leaf_index: int
    path: list[bytes]
    index: int
    tree_size: int
    tx_hash: str
    block_number: int


def _integer(document: dict[str, Any], key: str, low: int, high: int) -> int:
    value = document.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ProofInvalid(f"malformed proof: {key} must be an integer in {low}..{high}")
    return value


def _hash(value: object, what: str) -> bytes:
    try:
        digest = bytes.fromhex(value) if isinstance(value, str) else b""
    except ValueError:
        digest = b""
    if len(digest) != 32:
        raise ProofInvalid(f"malformed proof: {what} must be 32 bytes in hex")
    return digest


def _parsed(proof: object) -> _Proof:
    """The proof document's fields, each checked for type and range (a proof is input
    from elsewhere: the relay, a file)."""
    if not isinstance(proof, dict) or not isinstance(proof.get("checkpoint"), dict):
        raise ProofInvalid("malformed proof: an object with a checkpoint object is expected")
    checkpoint: dict[str, Any] = proof["checkpoint"]
    path = proof.get("proof")
    if not isinstance(path, list) or len(path) > MAX_PATH:
        raise ProofInvalid(f"malformed proof: proof must be a list of at most {MAX_PATH} hashes")
    tx_hash = checkpoint.get("tx_hash")
    if not isinstance(tx_hash, str) or len(tx_hash) > 80:
        raise ProofInvalid("malformed proof: checkpoint.tx_hash must be a transaction hash")
    tree_size = _integer(checkpoint, "tree_size", 1, INT64_MAX)
    return _Proof(
        event_hash=_hash(proof.get("event_hash"), "event_hash").hex(),
        leaf_index=_integer(proof, "leaf_index", 0, tree_size - 1),
        path=[_hash(p, "each proof hash") for p in path],
        index=_integer(checkpoint, "index", 0, INT64_MAX),
        tree_size=tree_size,
        tx_hash=tx_hash,
        block_number=_integer(checkpoint, "block_number", 0, INT64_MAX),
    )


def verify_event(raw: bytes, proof: dict[str, Any], reader: CheckpointReader) -> Verified:
    """Raises ``ProofInvalid`` unless the event is in the checkpoint anchored on chain (a
    malformed proof and a checkpoint the chain does not hold are invalid too); raises
    ``ChainError`` when the chain cannot be read."""
    parsed = _parsed(proof)
    digest = event_hash(raw)
    if digest.hex() != parsed.event_hash:
        raise ProofInvalid("the event bytes do not hash to the proof's event hash")
    index, size = parsed.index, parsed.tree_size
    try:
        on_chain = reader.checkpoint_at(index)
    except CheckpointNotFound as missing:
        raise ProofInvalid(f"checkpoint {index} is not on chain ({missing})") from missing
    if on_chain.tree_size != size:
        raise ProofInvalid(f"chain checkpoint {index} has {on_chain.tree_size} leaves, not {size}")
    verify_inclusion(parsed.leaf_index, size, leaf_hash(digest), parsed.path, on_chain.root)
    try:
        anchor = reader.find_anchor(index)
    except CheckpointNotFound as missing:
        raise ProofInvalid(f"checkpoint {index} has no anchoring event ({missing})") from missing
    if (
        anchor.tx_hash.lower() != parsed.tx_hash.lower()
        or anchor.block_number != parsed.block_number
    ):
        raise ProofInvalid("the anchoring transaction on chain differs from the proof's")
    return Verified(parsed.leaf_index, index, size, anchor.tx_hash, anchor.block_number)


class Web3CheckpointReader:
    """Reads ``AuditAnchor`` over JSON-RPC; needs no key. Whatever fails reading the chain
    (no answer, an RPC error, no contract at the address) is ``ChainUnavailable``."""

    def __init__(self, rpc_url: str, address: str) -> None:
        from web3 import Web3

        from services.platform.chain.port import load_artifact

        if not Web3.is_address(address):
            raise ValueError(f"{address!r} is not a contract address")
        self._w3 = Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": 10}))
        abi = list(load_artifact("AuditAnchor").abi)
        self._contract = self._w3.eth.contract(address=Web3.to_checksum_address(address), abi=abi)

    def _read(self, what: str, call: Callable[[], Any]) -> Any:
        from web3.exceptions import Web3Exception

        try:
            return call()
        except (OSError, Web3Exception, ValueError) as error:
            raise ChainUnavailable(f"cannot read {what} from the chain: {error}") from error

    def checkpoint_at(self, index: int) -> ChainCheckpoint:
        count = int(
            self._read("the checkpoint count", self._contract.functions.checkpointCount().call)
        )
        if index >= count:
            raise CheckpointNotFound(f"the chain holds {count} checkpoints")
        size, root = self._read(
            f"checkpoint {index}", self._contract.functions.checkpointAt(index).call
        )
        return ChainCheckpoint(index, int(size), bytes(root))

    def find_anchor(self, index: int) -> ChainAnchor:
        logs = self._read(
            f"the anchoring event of checkpoint {index}",
            lambda: self._contract.events.CheckpointAnchored().get_logs(
                argument_filters={"index": index}, from_block=0
            ),
        )
        if not logs:
            raise CheckpointNotFound(f"no CheckpointAnchored event for checkpoint {index}")
        receipt = self._read(
            "the anchoring transaction's receipt",
            lambda: self._w3.eth.get_transaction_receipt(logs[0]["transactionHash"]),
        )
        return ChainAnchor(
            "0x" + bytes(receipt["transactionHash"]).hex().removeprefix("0x"),
            int(receipt["blockNumber"]),
            int(receipt["gasUsed"]),
        )


OK, INVALID, BAD_INPUT, CHAIN_UNREADABLE = 0, 1, 2, 3


def check(
    event_file: Path, proof_file: Path, reader: Callable[[], CheckpointReader]
) -> tuple[int, str]:
    """(exit code, the line to print) of verifying ``event_file`` with ``proof_file``
    against the chain ``reader()`` reads; never raises for bad input or an unreadable
    chain (the CLI's whole behaviour, apart from printing)."""
    try:
        raw = event_file.read_bytes()
        text = proof_file.read_bytes()
    except OSError as error:
        return BAD_INPUT, f"ERROR: cannot read {error.filename}: {error.strerror or error}"
    try:
        proof = json.loads(text)
    except (ValueError, RecursionError) as error:
        return BAD_INPUT, f"ERROR: {proof_file} is not JSON: {error}"
    try:
        chain = reader()
    except ValueError as error:  # e.g. a contract address that is not one
        return BAD_INPUT, f"ERROR: {error}"
    try:
        result = verify_event(raw, proof, chain)
    except ProofInvalid as error:
        return INVALID, f"INVALID: {error}"
    except ChainError as error:
        return CHAIN_UNREADABLE, f"ERROR: {error}"
    return OK, (
        f"OK: leaf {result.leaf_index} of checkpoint {result.checkpoint_index} "
        f"({result.tree_size} leaves), tx {result.tx_hash} in block {result.block_number}"
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
    code, line = check(event_file, proof_file, lambda: Web3CheckpointReader(rpc_url, contract))
    typer.echo(line, err=code != OK)
    raise typer.Exit(code)


if __name__ == "__main__":
    cli()
