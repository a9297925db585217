"""Failover of the Geth adapter across the RPC URLs of the real Clique network."""

from __future__ import annotations

import pytest
from devstack.stack import Stack
from fixtures.chain import geth_chain

from services.platform.chain.artifacts import load_artifact
from services.platform.chain.geth import GethChain
from services.platform.chain.port import ChainUnavailable

pytestmark = pytest.mark.geth


def test_calls_and_transactions_fail_over_when_the_first_node_is_down(
    geth_stack: Stack,
) -> None:
    urls = geth_stack.geth.rpc_urls
    with geth_chain(geth_stack) as chain:
        sender = chain.new_account(10**19)
        probe = chain.deploy(load_artifact("Probe"), sender)
        assert chain.current_url == urls[0]
        height = chain.block_number()

        geth_stack.geth.stop_sealer(0)
        try:
            assert geth_stack.geth.nodes[0].pid() is None
            assert chain.block_number() >= height
            assert chain.current_url != urls[0]
            hashes = [chain.send(probe, "store", v, sender=sender) for v in (11, 12, 13)]
            receipts = [chain.wait(h) for h in hashes]
            assert [r.status for r in receipts] == [1, 1, 1]
            assert chain.call(probe, "value") == 13
            assert [e.args["value"] for e in chain.events(probe, "Stored", by=sender.address)] == [
                11,
                12,
                13,
            ]
        finally:
            geth_stack.geth.start_node(0)


def test_no_answering_endpoint_raises_chain_unavailable(geth_stack: Stack) -> None:
    dead = ["http://127.0.0.1:9", "http://127.0.0.1:1"]  # nothing listens there
    with pytest.raises(ChainUnavailable):
        GethChain(dead, geth_stack.geth.chain_id, geth_stack.geth.faucet_private_key())
    # A live URL after dead ones is found.
    with GethChain(
        [*dead, geth_stack.geth.rpc_urls[1]],
        geth_stack.geth.chain_id,
        geth_stack.geth.faucet_private_key(),
    ) as chain:
        assert chain.block_number() > 0
        assert chain.current_url == geth_stack.geth.rpc_urls[1]
