"""The relay end to end: consume, append, checkpoint, anchor, restart, on both backend sets."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import sqlalchemy as sa
from ledger_relay.conftest import RelayEnv, make_event

from services.ledger_relay.adapters.sql import SqlLogRepository
from services.ledger_relay.domain.merkle import (
    inclusion_proof,
    leaf_hash,
    root_of,
    verify_inclusion,
)
from services.ledger_relay.domain.model import EVENT_ID_MAX_CHARS, CheckpointStatus
from services.ledger_relay.relay import LedgerRelay, event_ids_of
from services.platform.bus.outbox import outbox_table
from services.platform.bus.port import Message, TopicSpec
from services.platform.events.envelope import decode, event_hash


async def _until(predicate: object, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def _publish(env: RelayEnv, events: list[bytes]) -> None:
    bus = await env.bus()
    topics = env.config.topics
    await bus.create_topics([TopicSpec(t, env.config.partitions) for t in topics])
    await bus.publish_many(
        [Message(topics[i % len(topics)], f"key-{i % 11}", raw) for i, raw in enumerate(events)]
    )


async def _run_until_anchored(
    relay: LedgerRelay,
    size: int,
    timeout_s: float = 90,
    and_then: Callable[[], bool] = lambda: True,
) -> None:
    """Runs the relay until ``size`` leaves are anchored and ``and_then()`` holds."""
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:
        await _until(
            lambda: (relay.anchored_size >= size and and_then()) or task.done(),
            timeout_s,
            f"{size} anchored",
        )
        if task.done():
            task.result()
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


def _check_log_against_chain(env: RelayEnv, events: list[bytes]) -> None:
    repo = SqlLogRepository(env.engine)
    assert repo.tree_size() == len(events)
    indices = set()
    for raw in events:
        leaf = repo.leaf_by_event_id(decode(raw).id)
        assert leaf is not None
        assert leaf.event_hash == event_hash(raw)
        indices.add(leaf.index)
    assert indices == set(range(len(events)))
    anchored = repo.checkpoints(CheckpointStatus.ANCHORED)
    assert repo.checkpoints(CheckpointStatus.PENDING) == []
    assert env.anchor.count() == len(anchored)
    for checkpoint in anchored:
        on_chain = env.anchor.checkpoint_at(checkpoint.index)
        assert (on_chain.tree_size, on_chain.root) == (checkpoint.tree_size, checkpoint.root)
        assert root_of(checkpoint.tree_size, repo.nodes) == checkpoint.root
    sizes = [c.tree_size for c in anchored]
    assert sizes == sorted(set(sizes)), "a checkpoint size was anchored twice"
    assert sizes[-1] == len(events)
    last = anchored[-1]
    for index in (0, len(events) // 2, len(events) - 1):
        leaf = repo.leaf_at(index)
        assert leaf is not None
        proof = inclusion_proof(index, last.tree_size, repo.nodes)
        verify_inclusion(index, last.tree_size, leaf_hash(leaf.event_hash), proof, last.root)
    with env.engine.connect() as conn:
        outbox = conn.execute(sa.select(outbox_table.c.value)).all()
    assert len(outbox) == len(anchored), "one checkpoint-anchored event per checkpoint"


def _with_id(event_id: str) -> bytes:
    """An envelope's bytes with ``event_id`` as its id."""
    envelope = decode(make_event(2))
    envelope.id = event_id
    return envelope.SerializeToString()


def test_an_event_id_is_the_envelope_id_or_else_the_event_hash_in_hex() -> None:
    raw = make_event(1)
    values = [raw, b"\xff\xff not an envelope", b"", raw]  # b"": an envelope without id
    digests = [event_hash(v) for v in values]
    assert event_ids_of(values, digests) == [
        decode(raw).id,
        digests[1].hex(),
        digests[2].hex(),
        decode(raw).id,
    ]


def test_an_envelope_id_the_log_cannot_keep_is_replaced_by_the_event_hash() -> None:
    kept = ["x" * EVENT_ID_MAX_CHARS, "back\\slash", "é"]
    replaced = ["x" * (EVENT_ID_MAX_CHARS + 1), "tab\t", "line\n", "nul\x00", "\u2028"]
    values = [_with_id(event_id) for event_id in kept + replaced] + [make_event(3)]
    digests = [event_hash(v) for v in values]
    assert event_ids_of(values, digests) == [
        *kept,
        *(digest.hex() for digest in digests[len(kept) : -1]),
        decode(values[-1]).id,
    ]
    assert event_ids_of(values[:1], digests[:1]) == kept[:1]
    assert event_ids_of([], []) == []


async def test_events_are_anchored_in_checkpoints_and_survive_restart(relay_env: RelayEnv) -> None:
    first = [make_event(i) for i in range(450)]
    await _publish(relay_env, first)
    relay, metrics = await relay_env.relay()
    await _run_until_anchored(relay, len(first))
    _check_log_against_chain(relay_env, first)
    checkpoints = relay_env.anchor.count()
    assert checkpoints >= 1
    assert metrics.leaves_appended._value.get() == len(first)

    # A restarted relay: redelivered duplicates keep their leaf, new events follow.
    second = [make_event(1000 + i) for i in range(130)]
    await _publish(relay_env, first[:50] + second)
    restarted, metrics2 = await relay_env.relay()
    assert restarted.tree_size == len(first)
    await _run_until_anchored(restarted, len(first) + len(second))
    _check_log_against_chain(relay_env, first + second)
    assert metrics2.duplicates_skipped._value.get() == 50
    assert relay_env.anchor.count() > checkpoints


async def test_any_bytes_on_the_bus_become_a_leaf(relay_env: RelayEnv) -> None:
    # Ids the log cannot keep as they are (too long, a tab, not an envelope at all) must
    # not stop the relay: those events are kept under their hash in hex.
    odd = [_with_id("x" * 100), _with_id("tab\tid"), b"\xff\xfe not an envelope"]
    events = [make_event(1), *odd, _with_id("back\\slash"), make_event(2)]
    await _publish(relay_env, events)
    relay, _ = await relay_env.relay()
    await _run_until_anchored(relay, len(events))
    repo = SqlLogRepository(relay_env.engine)
    expected_ids = [decode(events[0]).id, *(event_hash(raw).hex() for raw in odd)]
    expected_ids += ["back\\slash", decode(events[-1]).id]
    leaves = [repo.leaf_by_event_id(event_id) for event_id in expected_ids]
    assert [leaf.event_hash if leaf else None for leaf in leaves] == list(map(event_hash, events))
    assert sorted(leaf.index for leaf in leaves if leaf) == list(range(len(events)))


async def test_a_checkpoint_is_cut_after_the_delay_even_below_n(relay_env: RelayEnv) -> None:
    events = [make_event(i) for i in range(7)]
    await _publish(relay_env, events)
    relay, _ = await relay_env.relay(
        policy=relay_env.config.policy.__class__(max_events=10_000, max_delay_ms=300)
    )
    await _run_until_anchored(relay, 7, timeout_s=60)
    assert relay_env.anchor.count() == 1
    assert relay_env.anchor.checkpoint_at(0).tree_size == 7


async def test_reconcile_adopts_a_checkpoint_sent_before_a_crash(relay_env: RelayEnv) -> None:
    """The transaction went out but the relay died before recording it: no re-anchoring."""
    events = [make_event(i) for i in range(30)]
    await _publish(relay_env, events)
    relay, _ = await relay_env.relay()
    consumer = (await relay_env.bus()).consumer(
        relay_env.config.group, list(relay_env.config.topics)
    )
    async with consumer:
        await _until_consumed(relay, consumer, 30)
    repo = SqlLogRepository(relay_env.engine)
    root = root_of(30, repo.nodes)
    tx = relay_env.anchor.submit(30, root, [])  # as the crashed relay did
    relay_env.anchor.wait(tx)
    restarted, _ = await relay_env.relay()
    assert restarted.anchored_size == 30
    assert relay_env.anchor.count() == 1
    assert [c.tree_size for c in repo.checkpoints()] == [30]
    await restarted.anchor_all(timeout_s=10)
    assert relay_env.anchor.count() == 1


async def _until_consumed(relay: LedgerRelay, consumer: object, size: int) -> None:
    deadline = time.monotonic() + 60
    while relay.tree_size < size:
        assert time.monotonic() < deadline, "events not consumed in time"
        await relay.consume_batch(consumer)  # type: ignore[arg-type]
