"""The event bus contract, run on the embedded log and on the real Kafka broker."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict

import pytest
from fixtures.bus import BusBackend

from services.platform.bus import (
    BusConsumer,
    EventBus,
    Message,
    Record,
    TopicSpec,
    UnknownTopicError,
    partition_for_key,
)

# The bus fixtures run on the session loop; the tests must share it.
pytestmark = pytest.mark.asyncio(loop_scope="session")


async def consume(consumer: BusConsumer, count: int, timeout_s: float = 30.0) -> list[Record]:
    """Fetches until ``count`` records arrived, or fails at the deadline."""
    records: list[Record] = []
    deadline = time.monotonic() + timeout_s
    while len(records) < count:
        assert time.monotonic() < deadline, f"got {len(records)} of {count} records"
        records.extend(await consumer.fetch(max_records=count - len(records), timeout_s=0.5))
    return records


async def new_topic(bus: EventBus, name: str, partitions: int = 3) -> str:
    topic = f"test.bus.{name}"
    await bus.create_topics([TopicSpec(topic, partitions)])
    return topic


async def test_records_arrive_byte_exact_and_ordered_per_key(
    event_bus: EventBus, unique_name: str
) -> None:
    topic = await new_topic(event_bus, unique_name)
    messages = [
        Message(
            topic,
            f"patient-{i % 4}",
            bytes([i % 256, 0, 255]) + f"#{i}".encode(),
            (("seq", str(i).encode()), ("raw", b"\x00\xff")),
        )
        for i in range(40)
    ]
    positions = await event_bus.publish_many(messages[:20])
    for message in messages[20:]:
        positions.append(
            await event_bus.publish(message.topic, message.key, message.value, message.headers)
        )
    assert [p.topic for p in positions] == [topic] * 40

    async with event_bus.consumer(f"g-{unique_name}", [topic]) as consumer:
        records = await consume(consumer, 40)
    by_value = {r.value: r for r in records}
    assert sorted(by_value) == sorted(m.value for m in messages)  # bytes unchanged
    for message, position in zip(messages, positions, strict=True):
        record = by_value[message.value]
        assert (record.key, record.headers) == (message.key, message.headers)
        assert record.position == position
        assert record.timestamp_ms > 0
    per_key: dict[str, list[int]] = defaultdict(list)
    for record in records:
        per_key[record.key].append(int(dict(record.headers)["seq"]))
    assert all(seqs == sorted(seqs) for seqs in per_key.values())
    assert len(per_key) == 4


async def test_a_key_always_lands_on_the_kafka_partition_of_that_key(
    event_bus: EventBus, unique_name: str
) -> None:
    topic = await new_topic(event_bus, unique_name, partitions=5)
    assert await event_bus.partitions(topic) == 5
    keys = [f"account-{i}" for i in range(25)]
    seen: dict[str, set[int]] = defaultdict(set)
    for _ in range(2):
        for position, key in zip(
            await event_bus.publish_many([Message(topic, k, b"x") for k in keys]),
            keys,
            strict=True,
        ):
            seen[key].add(position.partition)
    assert all(parts == {partition_for_key(key, 5)} for key, parts in seen.items())
    assert len({p for parts in seen.values() for p in parts}) > 1  # keys spread out


async def test_unknown_topic_is_refused(event_bus: EventBus, unique_name: str) -> None:
    with pytest.raises(UnknownTopicError):
        await event_bus.publish(f"test.bus.missing.{unique_name}", "k", b"v")


async def test_end_offsets_are_each_partitions_next_offset_whatever_was_consumed(
    bus_backend: BusBackend, unique_name: str
) -> None:
    bus = await bus_backend.open()
    topic = await new_topic(bus, unique_name)
    other = await new_topic(bus, f"{unique_name}-other", partitions=2)
    assert await bus.end_offsets([topic, other]) == {
        **{(topic, p): 0 for p in range(3)},
        **{(other, p): 0 for p in range(2)},
    }
    positions = await bus.publish_many(
        [Message(topic, f"k{i}", f"v{i}".encode()) for i in range(25)]
    )
    expected = {(topic, p): 0 for p in range(3)}
    for position in positions:
        slot = (position.topic, position.partition)
        expected[slot] = max(expected[slot], position.offset + 1)
    assert sum(expected.values()) == 25
    assert await bus.end_offsets([topic]) == expected

    # Consuming and committing moves the group, not the log's end.
    async with bus.consumer(f"g-{unique_name}", [topic]) as consumer:
        await consumer.commit_records(await consume(consumer, 25))
    assert await bus.end_offsets([topic]) == expected

    # Another process on the same log sees the same ends, and they grow with each publish.
    await bus.close()
    restarted = await bus_backend.open()
    position = await restarted.publish(topic, "k-late", b"late")
    expected[(topic, position.partition)] += 1
    assert position.offset + 1 == expected[(topic, position.partition)]
    assert await restarted.end_offsets([topic]) == expected
    with pytest.raises(UnknownTopicError):
        await restarted.end_offsets([f"test.bus.missing.{unique_name}"])


async def test_committed_offsets_tell_how_far_a_group_has_processed(
    bus_backend: BusBackend, unique_name: str
) -> None:
    bus = await bus_backend.open()
    topic = await new_topic(bus, unique_name)
    group, other = f"g-{unique_name}", f"other-{unique_name}"
    nothing = {(topic, p): 0 for p in range(3)}
    assert await bus.committed_offsets(group, [topic]) == nothing  # no such group yet
    positions = await bus.publish_many(
        [Message(topic, f"k{i}", f"v{i}".encode()) for i in range(12)]
    )
    async with bus.consumer(group, [topic]) as consumer:
        records = await consume(consumer, 12)
        first = min(records, key=lambda r: (r.partition, r.offset))
        await consumer.commit({(first.topic, first.partition): first.offset + 1})
        assert await bus.committed_offsets(group, [topic]) == {
            **nothing,
            (first.topic, first.partition): first.offset + 1,
        }
        await consumer.commit_records(records)
    ends = await bus.end_offsets([topic])
    assert sum(ends.values()) == len(positions)
    # A group's commits are its own; another process on the log reads the same offsets.
    await bus.close()
    restarted = await bus_backend.open()
    assert await restarted.committed_offsets(group, [topic]) == ends
    assert await restarted.committed_offsets(other, [topic]) == nothing
    with pytest.raises(UnknownTopicError):
        await restarted.committed_offsets(group, [f"test.bus.missing.{unique_name}"])


async def test_uncommitted_records_are_redelivered_committed_ones_are_not(
    bus_backend: BusBackend, unique_name: str
) -> None:
    bus = await bus_backend.open()
    topic = await new_topic(bus, unique_name)
    group = f"g-{unique_name}"
    await bus.publish_many([Message(topic, f"k{i}", f"v{i}".encode()) for i in range(10)])

    async with bus.consumer(group, [topic]) as consumer:  # crashes before its effect
        first = await consume(consumer, 10)
    async with bus.consumer(group, [topic]) as consumer:
        again = await consume(consumer, 10)
        assert sorted(r.value for r in again) == sorted(r.value for r in first)
        await consumer.commit_records(again)  # effect done: commit last offset + 1

    await bus.close()
    restarted = await bus_backend.open()  # a new process on the same log
    await restarted.publish(topic, "k-new", b"after-commit")
    async with restarted.consumer(group, [topic]) as consumer:
        (only,) = await consume(consumer, 1)
        assert only.value == b"after-commit"
        assert await consumer.fetch(timeout_s=0.5) == []


async def test_seek_rewinds_a_partition(event_bus: EventBus, unique_name: str) -> None:
    topic = await new_topic(event_bus, unique_name, partitions=1)
    await event_bus.publish_many([Message(topic, "k", f"{i}".encode()) for i in range(5)])
    async with event_bus.consumer(f"g-{unique_name}", [topic]) as consumer:
        first = await consume(consumer, 5)
        await consumer.seek(topic, 0, 2)
        rewound = await consume(consumer, 3)
    assert [r.value for r in first] == [b"0", b"1", b"2", b"3", b"4"]
    assert [r.value for r in rewound] == [b"2", b"3", b"4"]


async def test_groups_are_independent(event_bus: EventBus, unique_name: str) -> None:
    topic = await new_topic(event_bus, unique_name)
    await event_bus.publish_many([Message(topic, f"k{i}", f"{i}".encode()) for i in range(12)])
    for group in ("ledger", "audit"):
        async with event_bus.consumer(f"{group}-{unique_name}", [topic]) as consumer:
            assert len({r.value for r in await consume(consumer, 12)}) == 12


async def test_members_of_a_group_split_the_partitions(
    event_bus: EventBus, unique_name: str
) -> None:
    topic = await new_topic(event_bus, unique_name, partitions=4)
    group = f"g-{unique_name}"
    members = [event_bus.consumer(group, [topic]) for _ in range(2)]
    for member in members:
        await member.start()
    try:
        # Wait until the group settled: both members hold partitions, together all four.
        deadline = time.monotonic() + 60
        while True:
            await asyncio.gather(*(m.fetch(timeout_s=0.2) for m in members))
            owned = [await m.assignment() for m in members]
            if all(owned) and set().union(*owned) == {(topic, p) for p in range(4)}:
                break
            assert time.monotonic() < deadline, f"group never settled: {owned}"
        assert not owned[0] & owned[1]

        await event_bus.publish_many([Message(topic, f"k{i}", f"{i}".encode()) for i in range(40)])
        received: list[list[Record]] = [[], []]
        deadline = time.monotonic() + 30
        while sum(map(len, received)) < 40:
            assert time.monotonic() < deadline, f"got {sum(map(len, received))} of 40"
            batches = await asyncio.gather(*(m.fetch(timeout_s=0.3) for m in members))
            for mine, batch in zip(received, batches, strict=True):
                mine.extend(batch)
        for mine, slots in zip(received, owned, strict=True):
            assert mine, "each member got records"
            assert {(r.topic, r.partition) for r in mine} <= slots
        assert sorted(int(r.value) for mine in received for r in mine) == list(range(40))
    finally:
        for member in members:
            await member.close()
