"""In-process adapter: eth-tester over py-evm with Paris rules (no PUSH0), like Clique.

Every transaction is mined at once in its own block. The funder is a key created
at start-up and credited in the genesis state; it never leaves the process.
With ``state_dir`` the chain is kept there (``chain.sqlite3``, see ``statedb.py``, and
the funder's key in ``funder.key``, mode 0600) and a later process with the same
folder goes on from the last block; without it, the chain lives in memory.
The node keeps its revert data: calls and estimates that fail answer with the
same JSON-RPC error shape as Geth (code 3, ``data`` = revert bytes), so the
shared web3 code decodes both chains' errors the same way.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

from eth.exceptions import Revert, VMError
from eth.vm.forks.paris import ParisVM
from eth.vm.spoof import SpoofTransaction
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_tester import EthereumTester, PyEVMBackend
from eth_tester.backends.pyevm.main import _get_vm_for_block_number, get_default_genesis_params
from eth_tester.exceptions import ValidationError as TesterValidationError
from eth_utils.address import to_canonical_address
from eth_utils.exceptions import ValidationError
from web3 import Web3
from web3.providers.eth_tester import EthereumTesterProvider
from web3.types import RPCEndpoint, RPCResponse

from services.platform.chain.keyfile import load_or_create_account
from services.platform.chain.statedb import SqliteStateDB
from services.platform.chain.web3chain import Web3Chain

T = TypeVar("T")

FUNDER_BALANCE_WEI = 10**30


class _ExecutionFailed(Exception):
    """A call or estimate failed in the EVM; carries the revert data (if any)."""

    def __init__(self, message: str, data: bytes | None) -> None:
        super().__init__(message)
        self.message = message
        self.data = data


def _failure(error: VMError) -> _ExecutionFailed:
    if isinstance(error, Revert):
        data = error.args[0] if error.args and isinstance(error.args[0], bytes) else b""
        return _ExecutionFailed("execution reverted", data)
    return _ExecutionFailed(f"execution failed: {error}", None)


class ParisPyEVMBackend(PyEVMBackend):  # type: ignore[misc]
    """py-evm backend on Paris rules whose calls and estimates keep the revert data.

    With ``db``, the chain is stored there: created from genesis if ``db`` is empty,
    else opened at its canonical head (``genesis_state`` is then not used)."""

    chain: Any  # eth-tester's py-evm MiningChain

    def __init__(
        self, genesis_state: dict[bytes, dict[str, Any]], db: SqliteStateDB | None = None
    ) -> None:
        self._db = db
        self._genesis_state = genesis_state
        super().__init__(genesis_state=genesis_state, vm_configuration=((0, ParisVM),))

    def reset_to_genesis(self, *args: Any, **kwargs: Any) -> None:
        super().reset_to_genesis(*args, **kwargs)  # an in-memory chain, from genesis
        if self._db is None:
            return
        # eth-tester defines its chain class inside its setup; take it from that chain.
        chain_class = type(self.chain)
        if self._db.is_empty:
            params = get_default_genesis_params()  # what the setup's genesis used
            self.chain = chain_class.from_genesis(self._db, params, self._genesis_state)
        else:
            self.chain = chain_class(self._db)

    def call(self, transaction: dict[str, Any], block_number: Any = "latest") -> bytes:
        tx = dict(transaction)
        tx.setdefault("gas", self._max_available_gas())
        if "gas_price" not in tx:
            tx.setdefault("max_fee_per_gas", 0)
            tx.setdefault("max_priority_fee_per_gas", 0)
        unsigned = self._get_normalized_and_unsigned_evm_transaction(tx, block_number)
        spoofed = SpoofTransaction(unsigned, from_=transaction["from"])
        # Like eth_call on Geth: no fee, so the caller needs no balance.
        with _get_vm_for_block_number(self.chain, block_number).in_costless_state() as state:
            snapshot = state.snapshot()
            computation = state.apply_transaction(spoofed)
            state.revert(snapshot)
        if computation.is_error:
            raise _failure(computation.error)
        return cast(bytes, computation.output)

    def estimate_gas(self, transaction: dict[str, Any], block_number: Any = "latest") -> int:
        unsigned = self._get_normalized_and_unsigned_evm_transaction(
            {**transaction, "gas": 21_000}, block_number
        )
        spoofed = SpoofTransaction(unsigned, from_=transaction["from"])
        header = (
            None
            if block_number in ("latest", "safe", "finalized", "pending")
            else self.chain.get_canonical_block_header_by_number(
                0 if block_number == "earliest" else block_number
            )
        )
        try:
            return int(self.chain.estimate_gas(spoofed, header))
        except VMError as error:
            raise _failure(error) from error


class _RevertDataProvider(EthereumTesterProvider):
    """Answers failed executions with Geth's error shape instead of a bare exception."""

    def make_request(self, method: RPCEndpoint, params: Any) -> RPCResponse:
        try:
            return super().make_request(method, params)
        except _ExecutionFailed as exc:
            error: dict[str, Any] = {"code": -32000, "message": exc.message}
            if exc.data is not None:
                error = {"code": 3, "message": exc.message, "data": "0x" + exc.data.hex()}
            return self._error_response(error)
        except (ValidationError, TesterValidationError) as exc:
            # A refused transaction (nonce, balance, fees): Geth's error shape.
            return self._error_response({"code": -32000, "message": str(exc)})

    def _error_response(self, error: dict[str, Any]) -> RPCResponse:
        request_id = self._current_request_id
        self._current_request_id += 1
        return cast(RPCResponse, {"id": repr(request_id), "jsonrpc": "2.0", "error": error})


class InProcessChain(Web3Chain):
    """The chain port on an in-process py-evm chain (Paris rules, instant mining)."""

    _tester: EthereumTester
    _w3: Web3
    _lock: threading.RLock

    def __init__(
        self, state_dir: Path | None = None, *, _shared_from: InProcessChain | None = None
    ) -> None:
        """``state_dir``: keep the chain there and go on from it (see the module docstring)."""
        self._db: SqliteStateDB | None = None
        if _shared_from is not None:
            self._tester = _shared_from._tester
            self._w3 = _shared_from._w3
            self._lock = _shared_from._lock
            super().__init__(_shared_from.chain_id, _shared_from._funder, poll_interval_s=0.01)
            self._submit_lock = self._lock
            return
        funder: LocalAccount = (
            Account.create()
            if state_dir is None
            else load_or_create_account(state_dir / "funder.key")
        )
        genesis: dict[bytes, dict[str, Any]] = {
            to_canonical_address(funder.address): {
                "balance": FUNDER_BALANCE_WEI,
                "nonce": 0,
                "code": b"",
                "storage": {},
            }
        }
        if state_dir is not None:
            self._db = SqliteStateDB(state_dir / "chain.sqlite3")
        self._tester = EthereumTester(ParisPyEVMBackend(genesis, self._db))
        self._w3 = Web3(_RevertDataProvider(self._tester))
        self._lock = threading.RLock()  # py-evm is not thread safe
        super().__init__(int(self._w3.eth.chain_id), funder, poll_interval_s=0.01)
        self._submit_lock = self._lock

    def new_client(self) -> InProcessChain:
        return InProcessChain(_shared_from=self)

    def close(self) -> None:
        """Closes the chain's file (on the client that opened it; other clients share it)."""
        if self._db is not None:
            with self._lock:
                self._db.close()
            self._db = None

    def _run(self, op: Callable[[Web3], T]) -> T:
        with self._lock:
            return op(self._w3)
