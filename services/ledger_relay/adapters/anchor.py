"""``AuditAnchorLedger``: the ``AuditAnchor`` contract through the chain port."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from eth_account.signers.local import LocalAccount

from services.ledger_relay.domain.errors import CheckpointNotFound
from services.ledger_relay.domain.model import AnchorLedger, ChainAnchor, ChainCheckpoint
from services.platform.chain.port import Chain, ContractRef, load_artifact

ARTIFACT_NAME = "AuditAnchor"
RELAY_ROLE_NAME = "RELAY_ROLE"
BASE_GAS = 160_000
GAS_PER_PROOF_HASH = 4_000


def _fields(value: Any) -> tuple[int, bytes]:
    """(treeSize, root) of a returned ``Checkpoint`` struct (a tuple or a dict)."""
    if isinstance(value, dict):
        return int(value["treeSize"]), bytes(value["root"])
    size, root = value
    return int(size), bytes(root)


class AuditAnchorLedger(AnchorLedger):
    """Anchors checkpoints as ``sender`` (which must hold RELAY_ROLE).

    Gas is given explicitly, so several anchoring transactions can be in flight
    at once (an estimate would run against a state without the earlier ones).
    """

    def __init__(self, chain: Chain, address: str, sender: LocalAccount) -> None:
        self._chain = chain
        self._ref: ContractRef = chain.contract(load_artifact(ARTIFACT_NAME), address)
        self._sender = sender

    @classmethod
    def deploy(cls, chain: Chain, admin: LocalAccount, relay: LocalAccount) -> AuditAnchorLedger:
        """Deploys a fresh contract, grants ``relay`` the relay role and has ``admin``
        renounce the admin role (tests, embedded mode): the relay keeps only the role
        it needs, and nobody can grant anyone anything on this contract afterwards."""
        deployed = chain.deploy(load_artifact(ARTIFACT_NAME), admin, admin.address)
        role = chain.call(deployed, RELAY_ROLE_NAME)
        chain.transact(deployed, "grantRole", role, relay.address, sender=admin)
        admin_role = chain.call(deployed, "DEFAULT_ADMIN_ROLE")
        chain.transact(deployed, "renounceRole", admin_role, admin.address, sender=admin)
        return cls(chain, deployed.address, relay)

    @property
    def chain_id(self) -> int:
        return self._chain.chain_id

    @property
    def address(self) -> str:
        return self._ref.address

    def count(self) -> int:
        return int(self._chain.call(self._ref, "checkpointCount"))

    def checkpoint_at(self, index: int) -> ChainCheckpoint:
        if index >= self.count():
            raise CheckpointNotFound(f"the chain holds no checkpoint {index}")
        size, root = _fields(self._chain.call(self._ref, "checkpointAt", index))
        return ChainCheckpoint(index, size, root)

    def submit(self, tree_size: int, root: bytes, proof: Sequence[bytes]) -> str:
        gas = BASE_GAS + GAS_PER_PROOF_HASH * len(proof)
        return self._chain.send(
            self._ref, "anchor", tree_size, root, list(proof), sender=self._sender, gas=gas
        )

    def wait(self, tx_hash: str) -> ChainAnchor:
        receipt = self._chain.wait(tx_hash, timeout_s=60)
        return ChainAnchor(receipt.tx_hash, receipt.block_number, receipt.gas_used)

    def find_anchor(self, index: int) -> ChainAnchor:
        logs = self._chain.events(self._ref, "CheckpointAnchored", index=index)
        if not logs:
            raise CheckpointNotFound(f"no CheckpointAnchored event for index {index}")
        return self.wait(logs[0].tx_hash)

    def block_number(self) -> int:
        return self._chain.block_number()
