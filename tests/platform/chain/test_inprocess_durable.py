"""The in-process chain kept in a folder: a later process goes on from the last block.

The chain-port suite and the contract suites also run on this adapter (the
``inprocess-durable`` parameter of ``tests/fixtures/chain.py``); these tests cover
what only a kept chain has: reopening, the funder's key file, atomic block writes and
a SIGKILL in the middle of a run of transactions.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import cast

import pytest

from services.platform.chain.artifacts import load_artifact
from services.platform.chain.inprocess import InProcessChain
from services.platform.chain.statedb import SqliteStateDB

ROOT = Path(__file__).resolve().parents[3]


def test_a_reopened_chain_goes_on_from_its_last_block(tmp_path: Path) -> None:
    with InProcessChain(tmp_path) as chain:
        admin = chain.new_account()
        relay = chain.new_account()
        anchor = chain.deploy(load_artifact("AuditAnchor"), admin, admin.address)
        role = chain.call(anchor, "RELAY_ROLE")
        chain.transact(anchor, "grantRole", role, relay.address, sender=admin)
        chain.transact(anchor, "anchor", 1, b"\x11" * 32, [], sender=relay)
        head, funder, balance = (
            chain.block_number(),
            chain._funder.address,
            chain.balance(relay.address),
        )

    with InProcessChain(tmp_path) as reopened:
        assert reopened.block_number() == head
        assert reopened._funder.address == funder
        assert reopened.balance(relay.address) == balance
        again = reopened.contract(load_artifact("AuditAnchor"), anchor.address)
        assert reopened.call(again, "checkpointCount") == 1
        # the same sender goes on with its next nonce, and the contract keeps its rules
        reopened.transact(again, "anchor", 1, b"\x11" * 32, [], sender=relay)
        assert reopened.call(again, "checkpointCount") == 2
        assert reopened.block_number() == head + 1


def test_a_chain_without_a_folder_starts_afresh_each_time() -> None:
    with InProcessChain() as first, InProcessChain() as second:
        first.fund(first.new_account().address, 1)
        assert first.block_number() > second.block_number() == 0
        assert first._funder.address != second._funder.address


def test_the_funder_key_file_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    with InProcessChain(tmp_path):
        pass
    mode = stat.S_IMODE((tmp_path / "funder.key").stat().st_mode)
    assert mode == 0o600


def test_an_atomic_batch_is_saved_whole_or_not_at_all(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    db = SqliteStateDB(path)
    with db.atomic_batch() as batch:
        batch[b"a"] = b"1"
        batch[b"b"] = b"2"
    with pytest.raises(RuntimeError), db.atomic_batch() as batch:
        batch[b"c"] = b"3"
        del batch[b"a"]
        raise RuntimeError("a block that fails before it is written")
    # a write that fails half-way through saving the batch: the first key was written
    with pytest.raises(sqlite3.Error), db.atomic_batch() as batch:
        batch[b"d"] = b"4"
        batch[b"e"] = cast(bytes, object())
    assert (b"a" in db, b"c" in db, b"d" in db) == (True, False, False)
    db.close()

    reopened = SqliteStateDB(path)
    assert (reopened[b"a"], reopened[b"b"]) == (b"1", b"2")
    assert b"c" not in reopened and b"d" not in reopened
    reopened.close()


CHILD = """
import sys
from pathlib import Path
from services.platform.chain.inprocess import InProcessChain

chain = InProcessChain(Path(sys.argv[1]))
target = chain.new_account(1).address
print(target, flush=True)
while True:
    chain.fund(target, 1)
    print(chain.block_number(), chain.balance(target), flush=True)
"""


def test_a_chain_killed_between_transactions_reopens_with_every_confirmed_block(
    tmp_path: Path,
) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        target = child.stdout.readline().strip()
        confirmed = (0, 0)
        deadline = time.monotonic() + 60
        while confirmed[0] < 40:
            assert time.monotonic() < deadline, f"the child confirmed only {confirmed}"
            line = child.stdout.readline()
            assert line, f"the child ended: {child.wait()}"
            block, balance = map(int, line.split())
            confirmed = (block, balance)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait()

    with InProcessChain(tmp_path) as reopened:
        assert reopened.block_number() >= confirmed[0]
        assert reopened.balance(target) >= confirmed[1] > 1
        receipt = reopened.fund(reopened.new_account(1).address, 1)
        assert receipt.block_number == reopened.block_number() > confirmed[0]
