"""Standalone verifier: an event's bytes + its inclusion proof + read access to the chain.

Library: ``verify_event(raw, proof_json, reader)`` (``ehr_protocol.verify``, re-exported
here). CLI::

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
from pathlib import Path
from typing import Any

import typer
from ehr_protocol.errors import ChainError, ProofInvalid
from ehr_protocol.verify import (
    MAX_PATH,
    CheckpointReader,
    Verified,
    Web3CheckpointReader,
    verify_event,
)

from services.ledger_relay.domain.proofs import InclusionProof

__all__ = [
    "MAX_PATH",
    "CheckpointReader",
    "Verified",
    "Web3CheckpointReader",
    "check",
    "inclusion_to_json",
    "verify_event",
]


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
