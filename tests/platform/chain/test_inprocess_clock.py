"""The in-process chain keeps the wall clock's time.

Contracts judge expiries and deadlines by the block time, services by the wall clock;
the two must agree. eth-tester alone stamps each block at least a second after its
parent, so a burst of transactions (one block each) ran the chain ahead of the clock
(a grant expiring in 20 s passed the consent service's check and was then refused by
the chain as already expired), and an idle chain's next block and its calls carried a
time in the past. Here every block carries the second it is mined in, never before its
parent's (several blocks may share a second), and calls and estimates on the latest
block run at the current second.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.platform.chain.artifacts import Artifact, load_artifact
from services.platform.chain.errors import TransactionReverted
from services.platform.chain.inprocess import InProcessChain
from services.platform.chain.port import Chain, ContractRef

# A contract without source: ``notBefore(uint256 t)`` returns ``block.timestamp`` and
# reverts while ``block.timestamp < t`` (any selector; no PUSH0, Paris rules).
#   PUSH1 4 CALLDATALOAD TIMESTAMP LT PUSH1 0x11 JUMPI
#   TIMESTAMP PUSH1 0 MSTORE PUSH1 32 PUSH1 0 RETURN
#   JUMPDEST PUSH1 0 PUSH1 0 REVERT
_CLOCK_RUNTIME = "600435421060115742600052602060" + "00f3" + "5b60006000fd"
# Constructor: CODECOPY the 23-byte runtime (at offset 12) to memory and RETURN it.
_CLOCK_INIT = "6017600c60003960176000f3"
CLOCK = Artifact(
    name="BlockClock",
    abi=(
        {
            "type": "function",
            "name": "notBefore",
            "stateMutability": "view",
            "inputs": [{"name": "t", "type": "uint256"}],
            "outputs": [{"name": "", "type": "uint256"}],
        },
    ),
    bytecode="0x" + _CLOCK_INIT + _CLOCK_RUNTIME,
    deployed_bytecode="0x" + _CLOCK_RUNTIME,
)


class SteppedClock:
    """A wall clock a test sets: stands for a clock set back, or an idle hour."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["memory", "kept"])
def chain(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[InProcessChain]:
    with InProcessChain(tmp_path if request.param == "kept" else None) as chain:
        yield chain


def test_the_block_clock_contract_reports_the_block_time(chain: InProcessChain) -> None:
    clock = chain.deploy(CLOCK, chain.new_account())
    assert chain.code(clock.address) == CLOCK.runtime_code
    seen = chain.call(clock, "notBefore", 0)
    assert chain.block_timestamp() <= seen <= time.time()
    with pytest.raises(TransactionReverted):
        chain.call(clock, "notBefore", seen + 10)


def test_a_burst_from_several_threads_keeps_blocks_on_the_wall_clock(
    chain: InProcessChain,
) -> None:
    """60 transactions as fast as four clients can send them (one block each): every
    block is stamped within the time its transaction was in flight, never before its
    parent, and the head is not ahead of the wall clock afterwards."""
    probe = chain.deploy(load_artifact("Probe"), chain.new_account())
    senders = [chain.new_account() for _ in range(4)]
    first_block = chain.block_number() + 1
    flights: list[tuple[float, float, int]] = []  # (send started, receipt back, block)
    errors: list[BaseException] = []

    def send_fifteen(client: Chain, index: int) -> None:
        try:
            for value in range(15):
                started = time.time()
                receipt = client.transact(probe, "store", value, sender=senders[index])
                flights.append((started, time.time(), receipt.block_number))
        except BaseException as exc:  # reported by the test thread
            errors.append(exc)

    threads = [
        threading.Thread(target=send_fifteen, args=(chain.new_client(), index))
        for index in range(len(senders))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    assert len(flights) == 60

    for started, returned, block in flights:
        stamped = chain.block_timestamp(block)
        assert int(started) <= stamped <= returned, (block, started, stamped, returned)
    head = chain.block_number()
    stamps = [chain.block_timestamp(block) for block in range(first_block - 1, head + 1)]
    assert all(parent <= child for parent, child in itertools.pairwise(stamps))
    assert stamps[-1] <= time.time()
    assert head - first_block + 1 == 60  # still one block per transaction


def test_after_an_idle_hour_blocks_calls_and_estimates_run_at_the_current_time() -> None:
    wall = SteppedClock(time.time())
    with InProcessChain(clock=wall) as chain:
        sender = chain.new_account()
        clock = chain.deploy(CLOCK, sender)
        before = chain.block_timestamp()

        wall.now += 3600
        hour_later = int(wall.now)
        # a call on the latest block sees the time of now, not the block's (an hour old)
        assert chain.block_timestamp() == before
        assert chain.call(clock, "notBefore", 0) == hour_later
        # the estimate runs at that time too, and the block is stamped with it
        receipt = chain.transact(clock, "notBefore", hour_later, sender=sender)
        assert chain.block_timestamp(receipt.block_number) == hour_later
        with pytest.raises(TransactionReverted):  # not later either
            chain.send(clock, "notBefore", hour_later + 1, sender=sender)


def test_an_idle_chain_mines_the_next_transaction_at_once_in_the_current_second(
    chain: InProcessChain,
) -> None:
    sender = chain.new_account()
    probe = chain.deploy(load_artifact("Probe"), sender)
    last = chain.block_timestamp()
    # Idle for two seconds past the head's: a block stamped when the previous one was
    # mined (eth-tester's way) would now carry a time in the past.
    deadline = time.monotonic() + 10
    while time.time() < last + 2.2:
        assert time.monotonic() < deadline
        time.sleep(0.05)

    head, started = chain.block_number(), time.time()
    tx_hash = chain.send(probe, "store", 1, sender=sender)
    # mined before ``send`` returned: no wait for a next second or a sealing period
    assert chain.block_number() == head + 1
    receipt = chain.wait(tx_hash, timeout_s=5)
    assert receipt.block_number == head + 1
    assert int(started) <= chain.block_timestamp(head + 1) <= time.time()


def _stamps_of(chain: InProcessChain, transactions: int, probe: ContractRef) -> list[int]:
    sender = chain.new_account()
    receipts = [chain.transact(probe, "store", n, sender=sender) for n in range(transactions)]
    return [chain.block_timestamp(receipt.block_number) for receipt in receipts]


def test_a_reopened_chain_never_goes_behind_its_last_block_when_the_clock_went_back(
    tmp_path: Path,
) -> None:
    """The chain was kept under a clock 30 s ahead (or written while it ran ahead);
    reopened under the true clock, its blocks keep the head's second until the clock
    catches up (not behind it, and not further ahead), then follow the clock again."""
    ahead = SteppedClock(time.time() + 30)
    probe_artifact = load_artifact("Probe")
    with InProcessChain(tmp_path, clock=ahead) as chain:
        address = chain.deploy(probe_artifact, chain.new_account()).address
        assert _stamps_of(chain, 3, chain.contract(probe_artifact, address)) == [int(ahead.now)] * 3
        head = chain.block_timestamp()

    wall = SteppedClock(head - 30.0)
    with InProcessChain(tmp_path, clock=wall) as reopened:
        probe = reopened.contract(probe_artifact, address)
        assert _stamps_of(reopened, 3, probe) == [head] * 3
        clock = reopened.deploy(CLOCK, reopened.new_account())
        assert reopened.call(clock, "notBefore", 0) == head
        wall.now = head + 5.7
        assert _stamps_of(reopened, 2, probe) == [head + 5] * 2
        assert reopened.call(clock, "notBefore", 0) == head + 5

    with InProcessChain(tmp_path) as on_the_true_clock:  # as the embedded default opens it
        probe = on_the_true_clock.contract(probe_artifact, address)
        # the true clock is still about 25 s behind the head: blocks keep the head's second
        assert _stamps_of(on_the_true_clock, 2, probe) == [head + 5] * 2
