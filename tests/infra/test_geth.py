"""The real Geth v1.13.15 Clique network started by the stack (three sealers)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest
from devstack.geth import GETH_VERSION
from devstack.processes import wait_until
from devstack.stack import Stack
from eth_account import Account
from web3 import Web3
from web3.middleware import ExtraDataToPOAMiddleware

pytestmark = pytest.mark.geth


def _web3(url: str) -> Web3:
    w3 = Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": 5}))
    w3.middleware_onion.inject(ExtraDataToPOAMiddleware, layer=0)
    return w3


@pytest.fixture(scope="module")
def nodes(geth_stack: Stack) -> list[Web3]:
    return [_web3(url) for url in geth_stack.geth.rpc_urls]


def _signer(w3: Web3, number: int) -> str:
    reply = w3.provider.make_request("clique_getSigner", [hex(number)])  # type: ignore[arg-type]
    return Web3.to_checksum_address(reply["result"])


def _sealers(stack: Stack) -> set[str]:
    return {s.address for s in stack.geth.sealers()}


def _wait_for_height(w3: Web3, height: int, timeout_s: float = 60) -> None:
    wait_until(lambda: w3.eth.block_number >= height, timeout_s, f"block {height}")


def test_network_runs_the_pinned_geth_with_three_peered_sealers(
    geth_stack: Stack, nodes: list[Web3]
) -> None:
    assert len(nodes) == 3
    for w3 in nodes:
        assert f"Geth/v{GETH_VERSION}-stable" in w3.client_version
        assert w3.eth.chain_id == geth_stack.geth.chain_id
        assert w3.net.peer_count == 2
    # Each node unlocks only its own sealer key.
    assert {w3.eth.accounts[0] for w3 in nodes} == _sealers(geth_stack)


def test_sealers_agree_on_the_same_chain(nodes: list[Web3]) -> None:
    target = max(w3.eth.block_number for w3 in nodes) + 2
    for w3 in nodes:
        _wait_for_height(w3, target)
    hashes = {w3.eth.get_block(target)["hash"] for w3 in nodes}
    assert len(hashes) == 1

    def same_head() -> bool:
        return len({w3.eth.get_block("latest")["hash"] for w3 in nodes}) == 1

    wait_until(same_head, 30, "all sealers to report the same head", interval_s=0.05)


def test_blocks_advance_and_every_sealer_takes_turns(geth_stack: Stack, nodes: list[Web3]) -> None:
    w3 = nodes[0]
    start = w3.eth.block_number
    end = start + 9
    _wait_for_height(w3, end)
    first, last = w3.eth.get_block(start + 1), w3.eth.get_block(end)
    assert last["timestamp"] > first["timestamp"]
    signers = [_signer(w3, n) for n in range(start + 1, end + 1)]
    assert set(signers) == _sealers(geth_stack)
    # Clique: no sealer signs two blocks in a row with three sealers.
    assert all(a != b for a, b in itertools.pairwise(signers))


def test_locally_signed_transaction_is_mined_and_seen_by_every_node(
    geth_stack: Stack, nodes: list[Web3]
) -> None:
    faucet = Account.from_key(geth_stack.geth.faucet_private_key())
    recipient = Account.create().address
    w3 = nodes[0]
    # The faucet key lives only on the client: no node holds or unlocks it.
    assert all(faucet.address not in node.eth.accounts for node in nodes)

    tx = {
        "chainId": geth_stack.geth.chain_id,
        "nonce": w3.eth.get_transaction_count(faucet.address, "pending"),
        "to": recipient,
        "value": 10**18,
        "gas": 21_000,
        "maxFeePerGas": w3.eth.gas_price * 2,
        "maxPriorityFeePerGas": 1,
        "type": 2,
    }
    signed = faucet.sign_transaction(tx)
    tx_hash = w3.eth.send_raw_transaction(signed.raw_transaction)
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=60, poll_latency=0.2)
    assert receipt["status"] == 1
    assert receipt["from"] == faucet.address
    for node in nodes:
        wait_until(
            lambda n=node: n.eth.get_balance(recipient) == 10**18,
            30,
            "the transfer on every node",
        )


@pytest.fixture
def third_sealer_stopped(geth_stack: Stack) -> Iterator[int]:
    geth_stack.geth.stop_sealer(2)
    try:
        yield 2
    finally:
        geth_stack.geth.start_node(2)


def test_sealing_continues_with_one_sealer_down_and_it_resynchronises(
    geth_stack: Stack, nodes: list[Web3], third_sealer_stopped: int
) -> None:
    geth = geth_stack.geth
    stopped = third_sealer_stopped
    stopped_sealer = geth.sealers()[stopped].address
    live = nodes[0]
    assert geth.nodes[stopped].pid() is None
    wait_until(lambda: live.net.peer_count == 1, 30, "the stopped sealer to drop off")

    start = live.eth.block_number
    _wait_for_height(live, start + 6)
    signers = {_signer(live, n) for n in range(start + 2, start + 7)}
    assert signers == _sealers(geth_stack) - {stopped_sealer}

    geth.start_node(stopped)
    restarted = nodes[stopped]
    wait_until(lambda: geth.node_healthy(stopped), 60, "the restarted sealer's RPC")

    def caught_up() -> bool:
        height = restarted.eth.block_number
        return (
            height > start + 6
            and restarted.eth.get_block(height)["hash"] == live.eth.get_block(height)["hash"]
        )

    wait_until(caught_up, 90, "the restarted sealer to catch up")
    resumed_at = restarted.eth.block_number

    # Back in the rotation: it seals new blocks again.
    def seals_again() -> bool:
        head = live.eth.block_number
        return any(_signer(live, n) == stopped_sealer for n in range(resumed_at + 1, head + 1))

    wait_until(seals_again, 60, "the restarted sealer to seal again", interval_s=0.5)
