"""The ``ConsentRegistry`` contract over the chain port, and its idempotent deployment."""

from __future__ import annotations

from typing import Any

from eth_account.signers.local import LocalAccount
from eth_utils.address import to_checksum_address

from services.consent.domain.errors import RegistryUnavailable, RejectedByChain
from services.consent.domain.model import ChainPosition, GrantMessage, Signed
from services.consent.domain.ports import ChainChange, UnreadableLog
from services.platform.chain.port import (
    Chain,
    ChainError,
    ContractRef,
    EventLog,
    Receipt,
    TransactionRejected,
    TransactionReverted,
    load_artifact,
)

ARTIFACT_NAME = "ConsentRegistry"
REGISTRY_ADDRESS_STATE = "registry_address"


class ChainConsentRegistry:
    """The ``ConsentRegistryClient`` port: calls and relayed transactions.

    The relay account pays the gas; the patient's signature is what authorises.
    """

    def __init__(
        self, chain: Chain, address: str, relay: LocalAccount, *, receipt_timeout_s: float = 60
    ) -> None:
        self._chain = chain
        self._ref: ContractRef = chain.contract(load_artifact(ARTIFACT_NAME), address)
        self._relay = relay
        self._timeout = receipt_timeout_s

    @property
    def chain_id(self) -> int:
        return self._chain.chain_id

    @property
    def address(self) -> str:
        return self._ref.address

    def next_nonce(self, patient: str) -> int:
        return int(self._guard(lambda: self._chain.call(self._ref, "nonces", _cs(patient))))

    def is_authorised(self, patient: str, grantee: str, category: int, purpose: int) -> bool:
        return bool(
            self._guard(
                lambda: self._chain.call(
                    self._ref, "isAuthorised", _cs(patient), _cs(grantee), category, purpose
                )
            )
        )

    def latest_block(self) -> int:
        return int(self._guard(self._chain.block_number))

    def relay(self, signed: Signed) -> ChainChange:
        m = signed.message
        args: tuple[Any, ...]
        if isinstance(m, GrantMessage):
            fn, event = "grant", "ConsentGranted"
            args = (_cs(m.patient), _cs(m.grantee), m.categories, m.purpose, m.expires_at)
        else:
            fn, event = "revoke", "ConsentRevoked"
            args = (_cs(m.patient), _cs(m.grantee), m.categories, m.purpose)
        args = (*args, m.nonce, m.deadline, signed.signature)
        try:
            receipt = self._chain.transact(
                self._ref, fn, *args, sender=self._relay, timeout_s=self._timeout
            )
        except TransactionReverted as reverted:
            raise RejectedByChain(
                f"the registry refused the {fn}: {reverted.error_name or reverted.reason}",
                reverted.error_name,
            ) from reverted
        except TransactionRejected as rejected:
            raise RegistryUnavailable(f"the node refused the relay transaction: {rejected}") from (
                rejected
            )
        except ChainError as failure:
            raise RegistryUnavailable(f"the chain did not confirm the {fn}: {failure}") from failure
        return self._change_from(receipt, event)

    def changes(self, from_block: int, to_block: int) -> list[ChainChange | UnreadableLog]:
        def fetch() -> list[EventLog]:
            logs = self._chain.events(self._ref, "ConsentGranted", from_block, to_block)
            logs += self._chain.events(self._ref, "ConsentRevoked", from_block, to_block)
            return logs

        logs = self._guard(fetch)
        logs.sort(key=lambda log: (log.block_number, log.log_index))
        return [self._readable(log) for log in logs]

    def _readable(self, log: EventLog) -> ChainChange | UnreadableLog:
        try:
            return self._change(log, 0)
        except (KeyError, TypeError, ValueError) as failure:
            return UnreadableLog(
                self._position(log, 0), f"{log.name} log not decodable: {failure!r}"[:500]
            )

    def _position(self, log: EventLog, gas_used: int) -> ChainPosition:
        return ChainPosition(
            chain_id=self.chain_id,
            contract_address=self.address,
            tx_hash=log.tx_hash,
            block_number=log.block_number,
            log_index=log.log_index,
            gas_used=gas_used,
        )

    def _change_from(self, receipt: Receipt, event: str) -> ChainChange:
        for log in receipt.events:
            if log.name == event and log.address.lower() == self.address.lower():
                return self._change(log, receipt.gas_used)
        raise RegistryUnavailable(f"receipt {receipt.tx_hash} carries no {event} log")

    def _change(self, log: EventLog, gas_used: int) -> ChainChange:
        a = log.args
        position = self._position(log, gas_used)
        if log.name == "ConsentGranted":
            return ChainChange(
                kind="granted",
                patient=_cs(a["patient"]),
                grantee=_cs(a["grantee"]),
                purpose=int(a["purpose"]),
                categories=int(a["categories"]),
                nonce=int(a["nonce"]),
                position=position,
                expires_at=int(a["expiresAt"]),
            )
        return ChainChange(
            kind="revoked",
            patient=_cs(a["patient"]),
            grantee=_cs(a["grantee"]),
            purpose=int(a["purpose"]),
            categories=int(a["categories"]),
            nonce=int(a["nonce"]),
            position=position,
            remaining=int(a["remaining"]),
        )

    @staticmethod
    def _guard(work: Any) -> Any:
        try:
            return work()
        except ChainError as failure:
            raise RegistryUnavailable(f"the chain is unavailable: {failure}") from failure


def _cs(address: str) -> str:
    return str(to_checksum_address(address))


def registry_is_deployed(chain: Chain, address: str) -> bool:
    """Whether a ``ConsentRegistry`` answers at ``address`` on this chain."""
    try:
        ref = chain.contract(load_artifact(ARTIFACT_NAME), address)
        chain.call(ref, "domainSeparator")
    except Exception:  # no code at the address, another contract, or no chain
        return False
    else:
        return True


def deploy_registry(chain: Chain, deployer: LocalAccount) -> str:
    """Deploys a new ``ConsentRegistry``; returns its address."""
    return chain.deploy(load_artifact(ARTIFACT_NAME), deployer).address
