"""``ProviderRegistry`` port over the chain port, and the idempotent deploy step."""

from __future__ import annotations

import json
from pathlib import Path

from eth_account.signers.local import LocalAccount
from eth_utils.crypto import keccak

from services.identity.domain.errors import RegistryUnavailable
from services.identity.domain.model import ChainReceipt
from services.identity.domain.ports import ProviderRegistry
from services.platform.chain.artifacts import load_artifact
from services.platform.chain.port import Chain, ChainError, ContractRef, Receipt

REGISTRAR_ROLE = keccak(text="REGISTRAR_ROLE")
DEFAULT_ADMIN_ROLE = b"\x00" * 32
_STATUS = {0: "none", 1: "active", 2: "suspended"}


class ChainProviderRegistry(ProviderRegistry):
    """Calls ProviderRegistry with identity's registrar account."""

    def __init__(self, chain: Chain, contract: ContractRef, registrar: LocalAccount) -> None:
        self.chain = chain
        self.contract = contract
        self.registrar = registrar

    def _receipt(self, receipt: Receipt) -> ChainReceipt:
        return ChainReceipt(
            chain_id=self.chain.chain_id,
            transaction_hash=receipt.tx_hash,
            block_number=receipt.block_number,
            contract_address=self.contract.address,
            gas_used=receipt.gas_used,
        )

    def _transact(self, fn: str, *args: object) -> ChainReceipt:
        try:
            receipt = self.chain.transact(self.contract, fn, *args, sender=self.registrar)
        except ChainError as exc:
            raise RegistryUnavailable(f"ProviderRegistry.{fn} failed: {exc}") from exc
        return self._receipt(receipt)

    def status(self, provider: str) -> str:
        entry = self.chain.call(self.contract, "getProvider", provider)
        status = entry[2] if isinstance(entry, list | tuple) else entry["status"]
        return _STATUS[int(status)]

    def is_verified(self, provider: str) -> bool:
        return bool(self.chain.call(self.contract, "isVerified", provider))

    def register(self, provider: str, licence_hash: bytes, metadata_hash: bytes) -> ChainReceipt:
        return self._transact("register", provider, licence_hash, metadata_hash)

    def suspend(self, provider: str) -> ChainReceipt:
        return self._transact("suspend", provider)

    def reinstate(self, provider: str) -> ChainReceipt:
        return self._transact("reinstate", provider)


def _usable(chain: Chain, address: str, registrar: LocalAccount) -> ContractRef | None:
    contract = chain.contract(load_artifact("ProviderRegistry"), address)
    try:
        if chain.call(contract, "hasRole", REGISTRAR_ROLE, registrar.address):
            return contract
    except Exception:  # no code at the address (a fresh in-process chain)
        return None
    return None


def ensure_provider_registry(
    chain: Chain, registrar: LocalAccount, address: str | None, record_file: Path
) -> ContractRef:
    """The ProviderRegistry identity uses; deploys one when none is usable.

    ``address`` (from settings) wins. Otherwise the address recorded in
    ``record_file`` for this chain id is reused when it holds a registry where
    ``registrar`` has REGISTRAR_ROLE; else a new registry is deployed by
    ``registrar``, which grants itself REGISTRAR_ROLE and then renounces the admin
    role (it keeps only the role it needs and can grant nobody anything), and its
    address recorded.
    """
    artifact = load_artifact("ProviderRegistry")
    if address:
        return chain.contract(artifact, address)
    recorded: dict[str, str] = {}
    if record_file.is_file():
        recorded = json.loads(record_file.read_text())
        known = recorded.get(str(chain.chain_id))
        if known and (contract := _usable(chain, known, registrar)) is not None:
            return contract
    deployed = chain.deploy(artifact, registrar, registrar.address)
    chain.transact(deployed, "grantRole", REGISTRAR_ROLE, registrar.address, sender=registrar)
    chain.transact(
        deployed, "renounceRole", DEFAULT_ADMIN_ROLE, registrar.address, sender=registrar
    )
    recorded[str(chain.chain_id)] = deployed.address
    record_file.parent.mkdir(parents=True, exist_ok=True)
    record_file.write_text(json.dumps(recorded, indent=2))
    return deployed
