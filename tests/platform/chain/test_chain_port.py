"""One suite for the chain port, run on both adapters (in-process py-evm and real Geth)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount

from services.platform.chain.artifacts import Artifact, ArtifactNotFound, load_artifact
from services.platform.chain.inprocess import InProcessChain
from services.platform.chain.port import (
    Chain,
    DeployedContract,
    InvalidArguments,
    TransactionReverted,
    UnknownContractMember,
)

PROBE = load_artifact("Probe")
# Creation code that returns an empty runtime: PUSH0 PUSH0 RETURN (Shanghai) and its
# Paris spelling PUSH1 0 PUSH1 0 RETURN.
WITH_PUSH0 = Artifact(name="WithPush0", abi=(), bytecode="0x5f5ff3")
WITHOUT_PUSH0 = Artifact(name="WithoutPush0", abi=(), bytecode="0x60006000f3")


@pytest.fixture(scope="module")
def deployer(chain: Chain) -> LocalAccount:
    return chain.new_account(10**20)


@pytest.fixture(scope="module")
def probe(chain: Chain, deployer: LocalAccount) -> DeployedContract:
    return chain.deploy(PROBE, deployer)


def test_artifact_is_loaded_from_the_build_directory() -> None:
    assert PROBE.name == "Probe"
    assert PROBE.bytecode.startswith("0x6080")
    assert {e["name"] for e in PROBE.abi if e["type"] == "error"} == {"Probe__TooLarge"}
    with pytest.raises(ArtifactNotFound):
        load_artifact("NoSuchContract")


def test_new_account_is_funded(chain: Chain, funded_account: LocalAccount) -> None:
    assert chain.balance(funded_account.address) == 10**20
    assert chain.balance(Account.create().address) == 0


def test_deploy_returns_the_address_and_the_creation_receipt(
    chain: Chain, probe: DeployedContract, deployer: LocalAccount
) -> None:
    receipt = probe.receipt
    assert receipt.status == 1
    assert receipt.contract_address == probe.address
    assert receipt.sender == deployer.address
    assert 0 < receipt.block_number <= chain.block_number()
    assert receipt.gas_used > 50_000
    assert chain.call(probe, "LIMIT") == 1000


def test_code_is_the_deployed_runtime_of_the_artifact(
    chain: Chain, probe: DeployedContract, funded_account: LocalAccount
) -> None:
    assert chain.code(probe.address) == PROBE.runtime_code != b""
    assert chain.code(funded_account.address) == b""


def test_transact_changes_state_and_returns_decoded_events(
    chain: Chain, probe: DeployedContract, funded_account: LocalAccount
) -> None:
    receipt = chain.transact(probe, "store", 42, sender=funded_account)
    assert receipt.status == 1
    assert chain.call(probe, "value") == 42
    [event] = receipt.events
    assert event.name == "Stored"
    assert dict(event.args) == {"by": funded_account.address, "value": 42}
    assert event.address == probe.address
    assert (event.block_number, event.tx_hash) == (receipt.block_number, receipt.tx_hash)


def test_a_contract_reference_reaches_a_deployed_contract(
    chain: Chain, probe: DeployedContract, funded_account: LocalAccount
) -> None:
    ref = chain.contract(PROBE, probe.address.lower())
    assert ref.address == probe.address
    chain.transact(ref, "store", 7, sender=funded_account)
    assert chain.call(probe, "value") == 7


def test_event_query_filters_by_indexed_argument_and_block_range(
    chain: Chain, probe: DeployedContract, funded_account: LocalAccount
) -> None:
    other = chain.new_account(10**18)
    start = chain.block_number() + 1
    mine = [chain.transact(probe, "store", v, sender=funded_account) for v in (1, 2)]
    theirs = chain.transact(probe, "store", 3, sender=other)

    logs = chain.events(probe, "Stored", from_block=start, by=funded_account.address)
    assert [log.args["value"] for log in logs] == [1, 2]
    assert [log.tx_hash for log in logs] == [r.tx_hash for r in mine]
    everyone = chain.events(probe, "Stored", from_block=start)
    assert [log.args["by"] for log in everyone] == [funded_account.address] * 2 + [other.address]
    only_last = chain.events(
        probe, "Stored", from_block=theirs.block_number, to_block=theirs.block_number
    )
    assert [log.args["value"] for log in only_last] == [3]


def test_revert_reason_is_raised_as_transaction_reverted(
    chain: Chain, probe: DeployedContract, funded_account: LocalAccount
) -> None:
    with pytest.raises(TransactionReverted) as call_error:
        chain.call(probe, "fail")
    assert call_error.value.reason == "Probe: always fails"
    assert call_error.value.error_name is None

    with pytest.raises(TransactionReverted) as send_error:
        chain.send(probe, "fail", sender=funded_account)  # refused at estimation, never sent
    assert send_error.value.reason == "Probe: always fails"
    assert chain.balance(funded_account.address) == 10**20  # nothing was mined


def test_custom_error_is_decoded_with_its_arguments(
    chain: Chain, probe: DeployedContract, funded_account: LocalAccount
) -> None:
    with pytest.raises(TransactionReverted) as error:
        chain.transact(probe, "store", 1001, sender=funded_account)
    assert error.value.error_name == "Probe__TooLarge"
    assert error.value.error_args == {"value": 1001, "limit": 1000}
    assert error.value.reason is None
    assert "Probe__TooLarge" in str(error.value)


@pytest.mark.parametrize(
    ("fn", "args", "reason", "error_name", "error_args"),
    [
        ("fail", (), "Probe: always fails", None, {}),
        ("store", (1001,), None, "Probe__TooLarge", {"value": 1001, "limit": 1000}),
    ],
)
def test_transaction_with_explicit_gas_fails_on_chain_and_wait_explains_why(
    chain: Chain,
    probe: DeployedContract,
    funded_account: LocalAccount,
    fn: str,
    args: tuple[int, ...],
    reason: str | None,
    error_name: str | None,
    error_args: dict[str, int],
) -> None:
    tx_hash = chain.send(probe, fn, *args, sender=funded_account, gas=100_000)
    with pytest.raises(TransactionReverted) as error:
        chain.wait(tx_hash)
    assert error.value.tx_hash == tx_hash
    assert (error.value.reason, error.value.error_name) == (reason, error_name)
    assert error.value.error_args == error_args
    # It was mined: the sender paid for the gas, and the next transaction still goes through.
    assert chain.balance(funded_account.address) < 10**20
    assert chain.transact(probe, "store", 5, sender=funded_account).status == 1


def test_fifty_pipelined_transactions_get_consecutive_nonces(
    chain: Chain, probe: DeployedContract, funded_account: LocalAccount
) -> None:
    hashes = [chain.send(probe, "store", i, sender=funded_account) for i in range(50)]
    assert len(set(hashes)) == 50
    receipts = [chain.wait(h, timeout_s=120) for h in hashes]
    assert all(r.status == 1 for r in receipts)
    assert [r.nonce for r in receipts] == list(range(receipts[0].nonce, receipts[0].nonce + 50))
    assert [r.events[0].args["value"] for r in receipts] == list(range(50))
    assert chain.call(probe, "value") == 49


def test_pipelining_from_several_threads_keeps_nonces_unique(
    chain: Chain, probe: DeployedContract, funded_account: LocalAccount
) -> None:
    with ThreadPoolExecutor(max_workers=4) as pool:
        hashes = list(
            pool.map(lambda i: chain.send(probe, "store", i, sender=funded_account), range(20))
        )
    receipts = [chain.wait(h, timeout_s=120) for h in hashes]
    assert all(r.status == 1 for r in receipts)
    first = min(r.nonce for r in receipts)
    assert sorted(r.nonce for r in receipts) == list(range(first, first + 20))


def test_nonce_manager_recovers_after_another_client_used_the_same_key(
    chain: Chain, probe: DeployedContract, funded_account: LocalAccount
) -> None:
    first = chain.transact(probe, "store", 1, sender=funded_account)
    with chain.new_client() as other:
        second = other.transact(probe, "store", 2, sender=funded_account)
    assert second.nonce == first.nonce + 1
    # This client still counts the nonce the other one used; it must resynchronise.
    third = chain.transact(probe, "store", 3, sender=funded_account)
    assert third.status == 1
    assert third.nonce == second.nonce + 1
    assert chain.call(probe, "value") == 3


def test_push0_is_rejected_as_on_the_clique_chain(
    chain: Chain, funded_account: LocalAccount
) -> None:
    control = chain.deploy(WITHOUT_PUSH0, funded_account)
    assert control.receipt.status == 1
    with pytest.raises(TransactionReverted):
        chain.deploy(WITH_PUSH0, funded_account)  # refused at estimation
    with pytest.raises(TransactionReverted) as mined:
        chain.deploy(WITH_PUSH0, funded_account, gas=100_000)  # mined, fails on chain
    assert mined.value.tx_hash is not None


def test_unknown_names_and_bad_arguments_are_refused_before_any_transaction(
    chain: Chain, probe: DeployedContract, funded_account: LocalAccount
) -> None:
    with pytest.raises(UnknownContractMember):
        chain.send(probe, "no_such_function", sender=funded_account)
    with pytest.raises(UnknownContractMember):
        chain.events(probe, "NoSuchEvent")
    with pytest.raises(InvalidArguments):
        chain.send(probe, "store", "not a number", sender=funded_account)


def test_fund_transfers_from_the_funder(chain: Chain) -> None:
    target = Account.create().address
    receipt = chain.fund(target, 12345)
    assert receipt.status == 1
    assert chain.balance(target) == 12345


def test_block_timestamps_follow_block_order(chain: Chain, probe: DeployedContract) -> None:
    receipt = chain.transact(probe, "store", 5, sender=chain.new_account())
    mined_at = chain.block_timestamp(receipt.block_number)
    parent_at = chain.block_timestamp(receipt.block_number - 1)
    # Clique seals a block at least a period after its parent; the in-process chain
    # stamps each block with the second it is mined in, which blocks may share.
    assert parent_at <= mined_at if isinstance(chain, InProcessChain) else parent_at < mined_at
    assert chain.block_timestamp() >= mined_at
    assert mined_at <= time.time()  # never ahead of the wall clock


def test_new_account_without_funds_sends_no_transaction(chain: Chain) -> None:
    before = chain.block_number()
    account = chain.new_account(0)
    assert chain.balance(account.address) == 0
    if isinstance(chain, InProcessChain):  # Geth seals on its own; in-process mines per tx
        assert chain.block_number() == before
