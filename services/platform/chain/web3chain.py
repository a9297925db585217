"""The chain port implemented once on web3.py; adapters supply the provider(s).

Both adapters (Geth JSON-RPC and in-process py-evm) share this code: encoding,
local signing, nonce pipelining, fees, receipts, event decoding and the mapping
of node errors to the port's exceptions. An adapter implements ``_run`` (run one
operation against a connected ``Web3``; the Geth adapter fails over there).
"""

from __future__ import annotations

import threading
import time
from abc import abstractmethod
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import Any, TypeVar, cast

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress
from eth_utils.abi import event_abi_to_log_topic
from eth_utils.address import to_checksum_address
from hexbytes import HexBytes
from web3 import Web3
from web3._utils.events import get_event_data
from web3.exceptions import (
    ABIEventNotFound,
    ABIFunctionNotFound,
    ContractLogicError,
    MismatchedABI,
    TransactionIndexingInProgress,
    TransactionNotFound,
    Web3RPCError,
    Web3ValidationError,
)

from services.platform.chain.artifacts import Artifact
from services.platform.chain.errors import (
    ChainError,
    InvalidArguments,
    TransactionRejected,
    TransactionReverted,
    TransactionTimeout,
    UnknownContractMember,
)
from services.platform.chain.nonces import NonceManager, is_stale_nonce_error
from services.platform.chain.port import (
    Chain,
    ContractRef,
    DeployedContract,
    EventLog,
    Receipt,
)
from services.platform.chain.reverts import DecodedRevert, decode_revert

T = TypeVar("T")

ABI = tuple[Mapping[str, Any], ...]
# An estimate is exact for the state it ran on; a pipelined transaction runs on a
# later state (e.g. a storage slot written from zero instead of rewritten: +20k).
# Unused gas is not charged, so the headroom costs nothing.
GAS_HEADROOM = 1.2
GAS_HEADROOM_FIXED = 25_000
FEE_CACHE_S = 1.0  # one block period on the Clique chain
SEND_ATTEMPTS = 4


def _hex(value: bytes | str) -> str:
    return HexBytes(value).to_0x_hex()


def _rpc_message(exc: Exception) -> str:
    """The node's own error message (web3 wraps it in a dict's repr)."""
    response = getattr(exc, "rpc_response", None)
    if isinstance(response, Mapping) and isinstance(response.get("error"), Mapping):
        return str(response["error"].get("message", exc))
    message = getattr(exc, "message", None)
    return str(message if message is not None else exc)


def _address(contract: ContractRef) -> ChecksumAddress:
    return to_checksum_address(contract.address)


def _describe(decoded: DecodedRevert) -> str:
    if decoded.reason is not None:
        return f"execution reverted: {decoded.reason}"
    if decoded.error_name is not None:
        args = ", ".join(f"{k}={v!r}" for k, v in decoded.error_args.items())
        return f"execution reverted: {decoded.error_name}({args})"
    return "execution reverted"


class Web3Chain(Chain):
    """Common implementation of ``Chain`` over web3.py; see the module docstring."""

    def __init__(self, chain_id: int, funder: LocalAccount, *, poll_interval_s: float) -> None:
        self._chain_id = chain_id
        self._funder = funder
        self._poll_interval_s = poll_interval_s
        self._nonces = NonceManager(self._pending_count)
        self._codec = Web3()  # offline: ABI encoding only
        self._known: dict[str, Artifact] = {}
        self._fees_lock = threading.Lock()
        self._fees_cache: tuple[float, dict[str, int]] | None = None
        # Held from nonce allocation to submission by adapters whose node refuses
        # out-of-order nonces (py-evm); Geth queues them, so it needs none.
        self._submit_lock: AbstractContextManager[Any] = nullcontext()

    # -- adapter hooks -------------------------------------------------------------

    @abstractmethod
    def _run(self, op: Callable[[Web3], T]) -> T:
        """Run ``op`` against a connected node; raises ``ChainUnavailable`` if none answers."""

    # -- port ------------------------------------------------------------------------

    @property
    def chain_id(self) -> int:
        return self._chain_id

    @property
    def nonces(self) -> NonceManager:
        """The nonce manager of this client (shared by every sender it signs for)."""
        return self._nonces

    def contract(self, artifact: Artifact, address: str) -> ContractRef:
        ref = ContractRef(to_checksum_address(address), artifact)
        self._known[ref.address] = artifact
        return ref

    def deploy(
        self, artifact: Artifact, sender: LocalAccount, *args: Any, gas: int | None = None
    ) -> DeployedContract:
        try:
            factory = self._codec.eth.contract(abi=list(artifact.abi), bytecode=artifact.bytecode)
            data = factory.constructor(*args).data_in_transaction
        except (Web3ValidationError, MismatchedABI, TypeError, ValueError) as exc:
            raise InvalidArguments(f"constructor of {artifact.name}: {exc}") from exc
        tx_hash = self._submit(sender, to=None, data=data, value=0, gas=gas, abi=artifact.abi)
        receipt = self._wait(tx_hash, 120, artifact=artifact)
        if receipt.contract_address is None:
            raise ChainError(f"deployment {tx_hash} created no contract")
        return DeployedContract(receipt.contract_address, artifact, receipt)

    def call(self, contract: ContractRef, fn: str, *args: Any, sender: str | None = None) -> Any:
        self._known[contract.address] = contract.artifact
        self._encode(contract, fn, args)  # argument and name errors before any RPC
        params: dict[str, Any] = {"from": sender} if sender else {}

        def op(w3: Web3) -> Any:
            instance = w3.eth.contract(address=_address(contract), abi=list(contract.artifact.abi))
            return instance.functions[fn](*args).call(cast(Any, params))

        return self._guarded(op, contract.artifact.abi)

    def send(
        self,
        contract: ContractRef,
        fn: str,
        *args: Any,
        sender: LocalAccount,
        gas: int | None = None,
        value: int = 0,
    ) -> str:
        self._known[contract.address] = contract.artifact
        data = self._encode(contract, fn, args)
        return self._submit(
            sender, to=contract.address, data=data, value=value, gas=gas, abi=contract.artifact.abi
        )

    def wait(self, tx_hash: str, timeout_s: float = 60) -> Receipt:
        return self._wait(tx_hash, timeout_s)

    def events(
        self,
        contract: ContractRef,
        event_name: str,
        from_block: int = 0,
        to_block: int | None = None,
        **filters: Any,
    ) -> list[EventLog]:
        self._known[contract.address] = contract.artifact
        if not any(
            e.get("type") == "event" and e.get("name") == event_name for e in contract.artifact.abi
        ):
            raise UnknownContractMember(f"{contract.artifact.name} has no event {event_name!r}")

        def op(w3: Web3) -> list[Any]:
            instance = w3.eth.contract(address=_address(contract), abi=list(contract.artifact.abi))
            return list(
                instance.events[event_name]().get_logs(
                    argument_filters=filters or None,
                    from_block=from_block,
                    to_block="latest" if to_block is None else to_block,
                )
            )

        return [self._event_log(log) for log in self._guarded(op, contract.artifact.abi)]

    def block_number(self) -> int:
        return int(self._run(lambda w3: w3.eth.block_number))

    def block_timestamp(self, block: int | None = None) -> int:
        number: Any = "latest" if block is None else block
        return int(self._run(lambda w3: w3.eth.get_block(number)["timestamp"]))

    def balance(self, address: str) -> int:
        return int(self._run(lambda w3: w3.eth.get_balance(to_checksum_address(address))))

    def code(self, address: str) -> bytes:
        return bytes(self._run(lambda w3: w3.eth.get_code(to_checksum_address(address))))

    def fund(self, address: str, wei: int) -> Receipt:
        tx_hash = self._submit(
            self._funder, to=to_checksum_address(address), data="0x", value=wei, gas=21_000, abi=()
        )
        return self._wait(tx_hash, 120)

    def new_account(self, wei: int = 10**20) -> LocalAccount:
        account: LocalAccount = Account.create()
        if wei > 0:
            self.fund(account.address, wei)
        return account

    # -- transactions --------------------------------------------------------------

    def _pending_count(self, address: str) -> int:
        return int(
            self._run(
                lambda w3: w3.eth.get_transaction_count(to_checksum_address(address), "pending")
            )
        )

    def _fees(self) -> dict[str, int]:
        """EIP-1559 fee fields from the chain, cached for about one block."""
        with self._fees_lock:
            now = time.monotonic()
            if self._fees_cache is not None and now - self._fees_cache[0] < FEE_CACHE_S:
                return self._fees_cache[1]

            def op(w3: Web3) -> dict[str, int]:
                base = int(w3.eth.get_block("latest").get("baseFeePerGas", 0))
                tip = int(w3.eth.max_priority_fee)
                return {"maxPriorityFeePerGas": tip, "maxFeePerGas": 2 * base + tip}

            fees = self._run(op)
            self._fees_cache = (now, fees)
            return fees

    def _submit(
        self,
        sender: LocalAccount,
        *,
        to: str | None,
        data: str,
        value: int,
        gas: int | None,
        abi: ABI,
    ) -> str:
        """Sign locally with a managed nonce and send; returns the hash without waiting."""
        base: dict[str, Any] = {"data": data, "value": value, "chainId": self._chain_id, "type": 2}
        if to is not None:
            base["to"] = to
        if gas is None:
            estimate = self._guarded(
                lambda w3: w3.eth.estimate_gas(cast(Any, {**base, "from": sender.address})), abi
            )
            gas = int(estimate * GAS_HEADROOM) + GAS_HEADROOM_FIXED
        fees = self._fees()
        with self._submit_lock:
            return self._sign_and_send(sender, {**base, **fees, "gas": gas})

    def _sign_and_send(self, sender: LocalAccount, unsigned: dict[str, Any]) -> str:
        for attempt in range(SEND_ATTEMPTS):
            nonce = self._nonces.allocate(sender.address)
            signed = sender.sign_transaction({**unsigned, "nonce": nonce})
            tx_hash = _hex(signed.hash)
            try:
                self._send_raw(bytes(signed.raw_transaction))
                return tx_hash
            except Web3RPCError as exc:
                message = _rpc_message(exc)
                if "already known" in message.lower():
                    return tx_hash  # a failed-over retry of a transaction the pool has
                if is_stale_nonce_error(message) and attempt + 1 < SEND_ATTEMPTS:
                    self._nonces.resync(sender.address)
                    continue
                self._nonces.forget(sender.address)
                raise TransactionRejected(message) from exc
            except ChainError:
                self._nonces.forget(sender.address)
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _send_raw(self, raw: bytes) -> None:
        self._run(lambda w3: w3.eth.send_raw_transaction(raw))

    def _wait(self, tx_hash: str, timeout_s: float, artifact: Artifact | None = None) -> Receipt:
        deadline = time.monotonic() + timeout_s

        def fetch(w3: Web3) -> Any:
            try:
                return w3.eth.get_transaction_receipt(cast(Any, tx_hash))
            except (TransactionNotFound, TransactionIndexingInProgress):
                # A node that has just started may still be indexing: not mined yet, for us.
                return None

        while (raw := self._run(fetch)) is None:
            if time.monotonic() >= deadline:
                # The transaction may have been dropped from the pool (e.g. a node restart):
                # counting nonces on from it would leave a gap, so re-read the chain's count.
                self._nonces.forget_all()
                raise TransactionTimeout(tx_hash, timeout_s)
            time.sleep(self._poll_interval_s)
        if artifact is not None and raw["contractAddress"]:
            self._known[to_checksum_address(raw["contractAddress"])] = artifact
        tx = self._run(lambda w3: w3.eth.get_transaction(cast(Any, tx_hash)))
        receipt = Receipt(
            tx_hash=_hex(raw["transactionHash"]),
            block_number=int(raw["blockNumber"]),
            block_hash=_hex(raw["blockHash"]),
            gas_used=int(raw["gasUsed"]),
            status=int(raw["status"]),
            contract_address=(
                to_checksum_address(raw["contractAddress"]) if raw["contractAddress"] else None
            ),
            events=[e for e in (self._decode_log(log) for log in raw["logs"]) if e is not None],
            sender=to_checksum_address(raw["from"]),
            nonce=int(tx["nonce"]),
            effective_gas_price=int(raw.get("effectiveGasPrice", 0)),
        )
        if receipt.status == 0:
            raise self._explain_failure(receipt, tx, artifact)
        return receipt

    def _explain_failure(
        self, receipt: Receipt, tx: Any, artifact: Artifact | None
    ) -> TransactionReverted:
        """Replay a failed transaction on its parent block to recover the revert data."""
        to = tx.get("to")
        if artifact is not None:
            abi = artifact.abi
        elif to is not None and (known := self._known.get(to_checksum_address(to))) is not None:
            abi = known.abi
        else:
            abi = ()
        replay: dict[str, Any] = {
            "from": tx["from"],
            "data": _hex(tx["input"]),
            "value": tx["value"],
            "gas": tx["gas"],
        }
        if to is not None:
            replay["to"] = to
        message = f"transaction {receipt.tx_hash} failed in block {receipt.block_number}"
        try:
            self._guarded(lambda w3: w3.eth.call(cast(Any, replay), receipt.block_number - 1), abi)
        except TransactionReverted as exc:
            return TransactionReverted(
                f"{message}: {exc}",
                reason=exc.reason,
                error_name=exc.error_name,
                error_args=exc.error_args,
                data=exc.data,
                tx_hash=receipt.tx_hash,
            )
        except ChainError:
            pass
        # The replay succeeded (state changed in between) or could not run: no reason.
        return TransactionReverted(message, tx_hash=receipt.tx_hash)

    # -- encoding, decoding, error mapping ----------------------------------------

    def _encode(self, contract: ContractRef, fn: str, args: Iterable[Any]) -> str:
        if not any(
            e.get("type") == "function" and e.get("name") == fn for e in contract.artifact.abi
        ):
            raise UnknownContractMember(f"{contract.artifact.name} has no function {fn!r}")
        instance = self._codec.eth.contract(abi=list(contract.artifact.abi))
        try:
            return str(instance.encode_abi(fn, list(args)))
        except (Web3ValidationError, MismatchedABI, TypeError, ValueError) as exc:
            raise InvalidArguments(f"{contract.artifact.name}.{fn}: {exc}") from exc

    def _guarded(self, op: Callable[[Web3], T], abi: ABI) -> T:
        """Run ``op``, turning reverts and node refusals into the port's errors."""
        try:
            return self._run(op)
        except ContractLogicError as exc:
            data = HexBytes(exc.data) if isinstance(exc.data, str) else HexBytes(b"")
            decoded = decode_revert(bytes(data), abi)
            raise TransactionReverted(
                _describe(decoded),
                reason=decoded.reason,
                error_name=decoded.error_name,
                error_args=decoded.error_args,
                data=bytes(data),
            ) from exc
        except (ABIFunctionNotFound, ABIEventNotFound) as exc:
            raise UnknownContractMember(str(exc)) from exc
        except Web3RPCError as exc:
            message = _rpc_message(exc)
            if "insufficient funds" in message.lower() or "gas required exceeds" in message.lower():
                raise TransactionRejected(message) from exc
            # Execution failed without revert data: invalid opcode, out of gas, ...
            raise TransactionReverted(message) from exc

    def _decode_log(self, log: Any) -> EventLog | None:
        artifact = self._known.get(to_checksum_address(log["address"]))
        if artifact is None or not log["topics"]:
            return None
        topic = bytes(log["topics"][0])
        for entry in artifact.abi:
            if entry.get("type") == "event" and event_abi_to_log_topic(cast(Any, entry)) == topic:
                return self._event_log(get_event_data(self._codec.codec, cast(Any, entry), log))
        return None

    @staticmethod
    def _event_log(data: Any) -> EventLog:
        return EventLog(
            name=str(data["event"]),
            args=dict(data["args"]),
            address=to_checksum_address(data["address"]),
            block_number=int(data["blockNumber"]),
            tx_hash=_hex(data["transactionHash"]),
            log_index=int(data["logIndex"]),
        )
