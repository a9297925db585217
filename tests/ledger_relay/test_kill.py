"""Exactly once across SIGKILL, on Kafka + Geth (three Clique sealers) + PostgreSQL.

The relay runs as its own process (``crashing_relay.py``, the production ``main`` with
a crash hook) and kills itself with SIGKILL at a crash point, at its second passage
there (so one checkpoint is usually anchored already). More events are published, the
production entry point ``python -m services.ledger_relay`` is started without a hook
and stopped with SIGTERM once everything is anchored. Then: every event has exactly
one leaf, at the index it had before the kill; the chain's checkpoints are the local
ones, strictly increasing, each a prefix of the log and anchored by its own
transaction; one checkpoint-anchored event per checkpoint.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from devstack.stack import Stack
from ledger_relay.conftest import make_event
from ledger_relay.relay_process import RelayDeployment

from services.platform.bus.kafka import KafkaEventBus
from services.platform.bus.port import Message, TopicSpec
from services.platform.events.envelope import event_hash

pytestmark = [pytest.mark.kafka, pytest.mark.geth, pytest.mark.postgres]


def publish(stack: Stack, topics: list[str], events: list[bytes]) -> None:
    async def send() -> None:
        bus = KafkaEventBus(stack.kafka.bootstrap_servers, metadata_timeout_s=3.0)
        await bus.start()
        try:
            await bus.create_topics([TopicSpec(t, 3) for t in topics])
            await bus.publish_many(
                [Message(topics[i % 2], f"k{i % 13}", raw) for i, raw in enumerate(events)]
            )
        finally:
            await bus.close()

    asyncio.run(send())


@pytest.fixture
def real_stack(test_stack: Stack) -> Stack:
    test_stack.up(["kafka", "geth", "postgres"])
    return test_stack


@pytest.fixture
def deployment(real_stack: Stack, tmp_path: Path) -> Iterator[RelayDeployment]:
    deployed = RelayDeployment(real_stack, tmp_path)
    yield deployed
    deployed.close()


@pytest.mark.parametrize("point", ["before_commit", "before_send", "after_send", "after_receipt"])
def test_a_relay_killed_at_a_crash_point_anchors_every_event_exactly_once(
    deployment: RelayDeployment, point: str
) -> None:
    first = [make_event(i) for i in range(600)]
    publish(deployment.stack, deployment.topics, first)

    crashing = deployment.start(crash_point=point, crash_at=2)
    code = deployment.wait_exit(crashing, 180)
    assert code == -signal.SIGKILL, f"exit {code}:\n{deployment.output()}"
    before = deployment.leaf_positions()
    assert before, "the killed relay appended nothing"

    second = [make_event(10_000 + i) for i in range(250)]
    publish(deployment.stack, deployment.topics, second)
    events = first + second

    relay = deployment.start()
    try:
        deployment.wait_until(
            "every event anchored",
            lambda: deployment.anchored_size() == len(events),
            90,
            relay,
        )
    finally:
        # uvicorn shuts down gracefully, then re-raises the signal it caught
        assert deployment.stop(relay) in (0, -signal.SIGTERM), deployment.output()
    assert "Application shutdown complete" in deployment.output()

    after = deployment.leaf_positions()
    moved = {h: (i, after.get(h)) for h, i in before.items() if after.get(h) != i}
    assert not moved, f"leaves moved after the kill: {list(moved.values())[:5]}"
    deployment.check_against_chain(events)
    assert set(after) == {event_hash(raw) for raw in events}
