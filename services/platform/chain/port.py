"""The chain port: deploy, call, transact, wait for receipts and query event logs.

Synchronous API (services call it from a thread pool). Two adapters implement it
with the same behaviour, checked by one shared suite (``tests/platform/chain``):

- ``GethChain(rpc_urls, chain_id, funder_key)`` (``geth.py``): JSON-RPC to the Geth
  Clique network, failover across the URLs, EIP-1559 fees from the chain.
- ``InProcessChain(state_dir=None)`` (``inprocess.py``): eth-tester over py-evm with
  Paris rules (no PUSH0, like the Clique chain), instant mining; in memory, or kept
  in ``state_dir`` so that a later process goes on from the last block.

Interface (stable; the contracts code against it)::

    artifact = load_artifact("Probe")                   # contracts/build/Probe.json
    probe = chain.deploy(artifact, sender, *ctor_args)  # DeployedContract (a ContractRef)
    ref = chain.contract(artifact, address)             # ContractRef
    chain.call(ref, "value", sender=None)               # -> decoded return value
    tx_hash = chain.send(ref, "store", 7, sender=acct)  # signed locally, returns at once
    receipt = chain.wait(tx_hash, timeout_s=60)         # Receipt, events decoded
    receipt = chain.transact(ref, "store", 7, sender=acct)   # = wait(send(...))
    chain.events(ref, "Stored", from_block=0, to_block=None, by=acct.address)
    chain.block_number(); chain.balance(addr); chain.code(addr)  # runtime code, b"" if none
    chain.fund(addr, wei); chain.new_account()
    chain.new_client()                                  # same chain, own nonce state

Errors (``errors.py``, root ``ChainError``): ``TransactionReverted`` (reason /
error_name / error_args, from a call, a gas estimate or a mined status-0 receipt),
``ChainUnavailable`` (no endpoint answers), ``TransactionRejected`` (node refused
the transaction), ``TransactionTimeout`` (no receipt in time),
``UnknownContractMember`` (name not in the ABI), ``InvalidArguments`` (arguments
do not match the ABI).

Senders are ``eth_account`` ``LocalAccount`` objects: keys stay in the process and
every transaction is signed locally. Nonces come from a ``NonceManager``
(``nonces.py``), so many transactions of one sender can be in flight at once.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

from eth_account.signers.local import LocalAccount

from services.platform.chain.artifacts import Artifact, load_artifact
from services.platform.chain.errors import (
    ChainError,
    ChainUnavailable,
    InvalidArguments,
    TransactionRejected,
    TransactionReverted,
    TransactionTimeout,
    UnknownContractMember,
)

__all__ = [
    "Artifact",
    "Chain",
    "ChainError",
    "ChainUnavailable",
    "ContractRef",
    "DeployedContract",
    "EventLog",
    "InvalidArguments",
    "Receipt",
    "TransactionRejected",
    "TransactionReverted",
    "TransactionTimeout",
    "UnknownContractMember",
    "load_artifact",
]


@dataclass(frozen=True, slots=True)
class EventLog:
    """One decoded event log. ``tx_hash`` is ``0x``-prefixed hex."""

    name: str
    args: Mapping[str, Any]
    address: str
    block_number: int
    tx_hash: str
    log_index: int


@dataclass(frozen=True, slots=True)
class Receipt:
    """A mined transaction. ``status`` is 1 (success) or 0 (failed); ``events`` are
    the logs of contracts this client knows (deployed or referenced), decoded."""

    tx_hash: str
    block_number: int
    block_hash: str
    gas_used: int
    status: int
    contract_address: str | None
    events: list[EventLog] = field(default_factory=list)
    sender: str = ""
    nonce: int = 0
    effective_gas_price: int = 0


@dataclass(frozen=True, slots=True)
class ContractRef:
    """A contract at a (checksummed) address, with the artefact describing its ABI."""

    address: str
    artifact: Artifact


@dataclass(frozen=True, slots=True)
class DeployedContract(ContractRef):
    """A contract this client deployed, with its creation receipt."""

    receipt: Receipt


class Chain(ABC):
    """An EVM chain reached with locally signed transactions."""

    @property
    @abstractmethod
    def chain_id(self) -> int:
        """EIP-155 chain id."""

    @abstractmethod
    def deploy(
        self, artifact: Artifact, sender: LocalAccount, *args: Any, gas: int | None = None
    ) -> DeployedContract:
        """Deploy ``artifact`` with constructor ``args``; waits for the receipt.

        Raises ``TransactionReverted`` if the constructor fails (also for code the
        chain's EVM rules reject, such as PUSH0 on Paris)."""

    @abstractmethod
    def contract(self, artifact: Artifact, address: str) -> ContractRef:
        """A reference to an existing contract."""

    @abstractmethod
    def call(self, contract: ContractRef, fn: str, *args: Any, sender: str | None = None) -> Any:
        """Run a function without a transaction (``eth_call`` on the latest block)."""

    @abstractmethod
    def send(
        self,
        contract: ContractRef,
        fn: str,
        *args: Any,
        sender: LocalAccount,
        gas: int | None = None,
        value: int = 0,
    ) -> str:
        """Sign and submit a transaction; returns its hash at once (pipelining).

        Without ``gas`` the gas is estimated, so a transaction that would revert
        raises ``TransactionReverted`` here and is never sent. With an explicit
        ``gas`` it is sent as is and a failure shows up in ``wait``."""

    @abstractmethod
    def wait(self, tx_hash: str, timeout_s: float = 60) -> Receipt:
        """Wait for the receipt; raises ``TransactionReverted`` on status 0 and
        ``TransactionTimeout`` when the deadline passes."""

    def transact(
        self,
        contract: ContractRef,
        fn: str,
        *args: Any,
        sender: LocalAccount,
        gas: int | None = None,
        value: int = 0,
        timeout_s: float = 60,
    ) -> Receipt:
        """``wait(send(...))``."""
        tx_hash = self.send(contract, fn, *args, sender=sender, gas=gas, value=value)
        return self.wait(tx_hash, timeout_s=timeout_s)

    @abstractmethod
    def events(
        self,
        contract: ContractRef,
        event_name: str,
        from_block: int = 0,
        to_block: int | None = None,
        **filters: Any,
    ) -> list[EventLog]:
        """Logs of ``event_name`` emitted by ``contract`` in the block range
        (``to_block=None``: up to the latest), filtered by indexed arguments."""

    @abstractmethod
    def block_number(self) -> int:
        """Height of the latest block."""

    @abstractmethod
    def block_timestamp(self, block: int | None = None) -> int:
        """Timestamp (Unix seconds) of ``block`` (``None``: the latest). Contracts judge
        deadlines and expiries by this clock, not by the caller's."""

    @abstractmethod
    def balance(self, address: str) -> int:
        """Balance in wei."""

    @abstractmethod
    def code(self, address: str) -> bytes:
        """The runtime code at ``address`` (empty for an account without code)."""

    @abstractmethod
    def fund(self, address: str, wei: int) -> Receipt:
        """Transfer ``wei`` from the adapter's funder account; waits for the receipt."""

    @abstractmethod
    def new_account(self, wei: int = 10**20) -> LocalAccount:
        """A fresh key, funded with ``wei`` (no transaction when 0); the key never
        leaves the process."""

    @abstractmethod
    def new_client(self) -> Chain:
        """Another client of the same chain with its own nonce state, as another
        process would be (same funder)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections; the default holds none."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
