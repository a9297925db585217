"""Faults on the real stack (Kafka + Geth with three Clique sealers + PostgreSQL), with
the relay as its own process: a stopped sealer does not stop anchoring; an unreachable
chain does not stop consuming, and the relay catches up afterwards, dropping nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from devstack.stack import Stack
from ledger_relay.conftest import make_event
from ledger_relay.relay_process import RelayDeployment
from ledger_relay.test_kill import publish

pytestmark = [pytest.mark.kafka, pytest.mark.geth, pytest.mark.postgres]


@pytest.fixture
def real_stack(test_stack: Stack) -> Stack:
    test_stack.up(["kafka", "geth", "postgres"])
    return test_stack


@pytest.fixture
def work_dir(tmp_path: Path) -> Path:
    return tmp_path


def _deploy(stack: Stack, work_dir: Path, rpc_urls: list[str] | None) -> RelayDeployment:
    return RelayDeployment(stack, work_dir, rpc_urls=rpc_urls)


@pytest.fixture
def one_sealer_down(real_stack: Stack) -> Iterator[int]:
    stopped = 2
    real_stack.geth.stop_sealer(stopped)
    try:
        yield stopped
    finally:
        real_stack.geth.start_node(stopped)


def test_anchoring_goes_on_with_one_of_three_sealers_stopped(
    real_stack: Stack, work_dir: Path, one_sealer_down: int
) -> None:
    assert len(real_stack.geth.rpc_urls) == 3
    deployment = _deploy(real_stack, work_dir, None)  # every node's URL; one is down
    try:
        start = deployment.chain.block_number()
        events = [make_event(i) for i in range(400)]
        relay = deployment.start()
        try:
            publish(real_stack, deployment.topics, events)
            deployment.wait_until(
                "every event anchored",
                lambda: deployment.anchored_size() == len(events),
                120,
                relay,
            )
        finally:
            deployment.stop(relay)
        deployment.check_against_chain(events)
        assert deployment.chain.block_number() > start
    finally:
        deployment.close()


def test_the_relay_keeps_consuming_while_the_chain_is_unreachable_and_catches_up(
    real_stack: Stack, work_dir: Path
) -> None:
    geth = real_stack.geth
    node = 1
    deployment = _deploy(real_stack, work_dir, [geth.rpc_url(node)])  # its only endpoint
    try:
        first = [make_event(i) for i in range(200)]
        second = [make_event(5_000 + i) for i in range(300)]
        relay = deployment.start()
        try:
            publish(real_stack, deployment.topics, first)
            deployment.wait_until(
                "the first events anchored",
                lambda: deployment.anchored_size() == len(first),
                120,
                relay,
            )
            geth.stop_node(node)
            try:
                publish(real_stack, deployment.topics, second)
                deployment.wait_until(
                    "the log to grow while the chain is unreachable",
                    lambda: deployment.tree_size() == len(first) + len(second),
                    60,
                    relay,
                )
                assert deployment.anchored_size() == len(first), "anchored with no chain?"
            finally:
                geth.start_node(node)
            deployment.wait_until(
                "the relay to catch up",
                lambda: deployment.anchored_size() == len(first) + len(second),
                180,
                relay,
            )
        finally:
            deployment.stop(relay)
        output = deployment.output()
        assert "anchoring failed" in output and "retrying in" in output, output[-3000:]
        deployment.check_against_chain(first + second)
    finally:
        deployment.close()
