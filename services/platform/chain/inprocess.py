"""In-process adapter: eth-tester over py-evm with Paris rules (no PUSH0), like Clique.

Every transaction is mined at once in its own block, stamped with the wall clock's
current second (never before its parent's, so blocks may share a second; see
``WallClockParisVM``), so contracts read the same time as the services around them.
The funder is a key created at start-up and credited in the genesis state; it never
leaves the process.
With ``state_dir`` the chain is kept there (``chain.sqlite3``, see ``statedb.py``, and
the funder's key in ``funder.key``, mode 0600) and a later process with the same
folder goes on from the last block; without it, the chain lives in memory.
The node keeps its revert data: calls and estimates that fail answer with the
same JSON-RPC error shape as Geth (code 3, ``data`` = revert bytes), so the
shared web3 code decodes both chains' errors the same way.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

from eth.abc import BlockHeaderAPI
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
LATEST_BLOCK_TAGS = ("latest", "safe", "finalized", "pending")

Clock = Callable[[], float]
"""Seconds since the epoch; ``time.time`` unless a test moves time itself."""


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


class WallClockParisVM(ParisVM):
    """Paris rules on blocks stamped with the wall clock: a new block (the one being
    built, and the one a call or an estimate runs in) carries ``clock()``'s whole
    second, or its parent's if the clock is behind that (a clock set back, or a kept
    chain written under a faster clock).

    Ethereum wants each block strictly later than its parent, which a chain mining one
    block per transaction can only keep by running ahead of the clock, one second per
    block (eth-tester's default: a burst of 50 transactions ran 50 s ahead). With one
    node and no consensus that rule protects nothing, so here a block is "not earlier
    than its parent": several blocks may share a second, as several transactions share
    one block (and its second) on the Clique chain. ``with_clock`` makes the class of
    one chain."""

    clock: Clock = staticmethod(time.time)

    @classmethod
    def with_clock(cls, clock: Clock) -> type[WallClockParisVM]:
        return type(cls.__name__, (cls,), {"clock": staticmethod(clock)})

    @classmethod
    def block_time(cls, parent: BlockHeaderAPI) -> int:
        """The timestamp of a block made now on ``parent``."""
        return max(int(parent.timestamp), int(cls.clock()))

    @classmethod
    def create_header_from_parent(  # type: ignore[override]
        cls, parent_header: BlockHeaderAPI | None, **header_params: Any
    ) -> BlockHeaderAPI:
        if parent_header is not None:  # (a genesis header brings its own)
            header_params.setdefault("timestamp", cls.block_time(parent_header))
        header: BlockHeaderAPI = ParisVM.create_header_from_parent(parent_header, **header_params)
        return header

    @classmethod
    def validate_header(cls, header: BlockHeaderAPI, parent_header: BlockHeaderAPI) -> None:
        if parent_header is not None and header.timestamp == parent_header.timestamp:
            # Every other rule still holds; only the strict "later" becomes "not earlier".
            parent_header = parent_header.copy(timestamp=parent_header.timestamp - 1)
        super().validate_header(header, parent_header)


class ParisPyEVMBackend(PyEVMBackend):  # type: ignore[misc]
    """py-evm backend on Paris rules whose calls and estimates keep the revert data and
    whose blocks keep the wall clock's time (``WallClockParisVM``).

    The block being built is stamped again when a transaction opens it (py-evm makes it
    when the previous block is mined, so on an idle chain its time would be that of
    the previous block); the transaction is then mined at once. A block's time is thus
    the second it was mined in: never before its parent's, never after the wall clock.
    Calls and estimates run, as in py-evm, in a new block on the requested one: for the
    latest block, at the current second (the latest block of a Clique chain is at most
    one period old).

    With ``db``, the chain is stored there: created from genesis if ``db`` is empty,
    else opened at its canonical head (``genesis_state`` is then not used)."""

    chain: Any  # eth-tester's py-evm MiningChain

    def __init__(
        self,
        genesis_state: dict[bytes, dict[str, Any]],
        db: SqliteStateDB | None = None,
        *,
        clock: Clock = time.time,
    ) -> None:
        self._db = db
        self._genesis_state = genesis_state
        self._vm = WallClockParisVM.with_clock(clock)
        self._genesis_params = get_default_genesis_params({"timestamp": int(clock())})
        super().__init__(
            genesis_parameters=self._genesis_params,
            genesis_state=genesis_state,
            vm_configuration=((0, self._vm),),
        )

    def reset_to_genesis(self, *args: Any, **kwargs: Any) -> None:
        super().reset_to_genesis(*args, **kwargs)  # an in-memory chain, from genesis
        if self._db is None:
            return
        # eth-tester defines its chain class inside its setup; take it from that chain.
        chain_class = type(self.chain)
        if self._db.is_empty:
            self.chain = chain_class.from_genesis(
                self._db, self._genesis_params, self._genesis_state
            )
        else:
            self.chain = chain_class(self._db)

    # -- block time ----------------------------------------------------------------

    def _open_block_now(self) -> None:
        """Stamp the block being built with the current second, unless it already holds
        transactions (they ran at its time; every transaction uses gas)."""
        header = self.chain.header
        if header.gas_used == 0:
            now = self._vm.block_time(self.chain.get_canonical_head())
            if header.timestamp != now:
                self.chain.set_header_timestamp(now)

    def send_raw_transaction(self, raw_transaction: bytes) -> bytes:
        self._open_block_now()
        return cast(bytes, super().send_raw_transaction(raw_transaction))

    def send_signed_transaction(self, signed_transaction: Any, block_number: Any = "latest") -> Any:
        self._open_block_now()
        return super().send_signed_transaction(signed_transaction, block_number)

    def send_transaction(self, transaction: Any) -> Any:
        self._open_block_now()
        return super().send_transaction(transaction)

    def mine_blocks(self, num_blocks: int = 1, coinbase: Any = None) -> tuple[Any, ...]:
        hashes = []
        for _ in range(num_blocks):  # an empty block too carries the second it is mined in
            self._open_block_now()
            kwargs = {} if coinbase is None else {"coinbase": coinbase}
            hashes.extend(super().mine_blocks(1, **kwargs))
        return tuple(hashes)

    def time_travel(self, to_timestamp: int) -> int:
        raise NotImplementedError("the in-process chain keeps the wall clock's time")

    # -- calls and estimates that keep the revert data ------------------------------

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
            if block_number in LATEST_BLOCK_TAGS
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
    """The chain port on an in-process py-evm chain (Paris rules, instant mining, blocks
    stamped with the wall clock)."""

    _tester: EthereumTester
    _w3: Web3
    _lock: threading.RLock

    def __init__(
        self,
        state_dir: Path | None = None,
        *,
        clock: Clock = time.time,
        _shared_from: InProcessChain | None = None,
    ) -> None:
        """``state_dir``: keep the chain there and go on from it (see the module docstring).
        ``clock``: the wall clock block times follow (tests move it to stand for a clock
        set back, or an idle hour)."""
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
        self._tester = EthereumTester(ParisPyEVMBackend(genesis, self._db, clock=clock))
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
