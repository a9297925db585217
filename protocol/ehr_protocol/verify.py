"""Verify one event against the chain: its bytes + its inclusion proof + read access to
the anchor contract.

``verify_event(raw, proof_json, reader)`` trusts nothing the relay says: it hashes the
bytes itself, recomputes the root from the proof, and reads checkpoint ``index`` and the
anchoring transaction's receipt from the chain (``Web3CheckpointReader`` over JSON-RPC,
or any ``CheckpointReader``). The proof document is what the ledger relay's
``GET /proofs/events/{id}`` answers.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from ehr_protocol.errors import ChainUnavailable, CheckpointNotFound, ProofInvalid
from ehr_protocol.merkle import leaf_hash, verify_inclusion

INT64_MAX = 2**63 - 1
"""The largest index, size or block number a proof may carry (the stores' ``BIGINT``)."""

MAX_PATH = 64
"""An inclusion path in a tree of at most 2**63 - 1 leaves has at most 63 hashes."""

AUDIT_ANCHOR_READ_ABI: list[dict[str, Any]] = [
    {
        "anonymous": False,
        "inputs": [
            {"indexed": True, "internalType": "uint256", "name": "index", "type": "uint256"},
            {"indexed": False, "internalType": "uint64", "name": "treeSize", "type": "uint64"},
            {"indexed": False, "internalType": "bytes32", "name": "root", "type": "bytes32"},
            {"indexed": False, "internalType": "uint64", "name": "anchoredAt", "type": "uint64"},
        ],
        "name": "CheckpointAnchored",
        "type": "event",
    },
    {
        "inputs": [{"internalType": "uint256", "name": "index", "type": "uint256"}],
        "name": "checkpointAt",
        "outputs": [
            {
                "components": [
                    {"internalType": "uint64", "name": "treeSize", "type": "uint64"},
                    {"internalType": "bytes32", "name": "root", "type": "bytes32"},
                ],
                "internalType": "struct AuditAnchor.Checkpoint",
                "name": "",
                "type": "tuple",
            }
        ],
        "stateMutability": "view",
        "type": "function",
    },
    {
        "inputs": [],
        "name": "checkpointCount",
        "outputs": [{"internalType": "uint256", "name": "", "type": "uint256"}],
        "stateMutability": "view",
        "type": "function",
    },
]
"""The members of ``AuditAnchor`` (contracts/src) a verifier reads, as the compiled ABI
has them: a client holds no build directory (a test compares with the compiled one)."""


def event_hash(raw: bytes) -> bytes:
    """SHA-256 over the exact published bytes (32 bytes): the leaf data of the log."""
    return hashlib.sha256(raw).digest()


@dataclass(frozen=True, slots=True)
class ChainAnchor:
    """Where a checkpoint was anchored."""

    tx_hash: str
    block_number: int
    gas_used: int


@dataclass(frozen=True, slots=True)
class ChainCheckpoint:
    """A checkpoint as the anchor contract holds it."""

    index: int
    tree_size: int
    root: bytes


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

        if not Web3.is_address(address):
            raise ValueError(f"{address!r} is not a contract address")
        self._w3 = Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": 10}))
        self._contract = self._w3.eth.contract(
            address=Web3.to_checksum_address(address), abi=AUDIT_ANCHOR_READ_ABI
        )

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
