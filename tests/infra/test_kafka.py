"""The real Kafka broker started by the stack: topics, keyed messages, offsets."""

from __future__ import annotations

import time
import uuid
from collections import defaultdict

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import UnknownTopicOrPartitionError
from devstack.stack import Stack

pytestmark = pytest.mark.kafka


async def _consume(consumer: AIOKafkaConsumer, count: int, timeout_s: float = 30) -> list:
    """Reads exactly ``count`` records, or fails at the deadline."""
    records: list = []
    deadline = time.monotonic() + timeout_s
    while len(records) < count:
        assert time.monotonic() < deadline, f"got {len(records)} of {count} records"
        batches = await consumer.getmany(timeout_ms=500)
        for batch in batches.values():
            records.extend(batch)
    return records


async def test_topic_keyed_messages_and_committed_offsets_survive_restart(
    kafka_stack: Stack,
) -> None:
    bootstrap = kafka_stack.kafka.bootstrap_servers
    topic = f"devstack.test.{uuid.uuid4().hex[:8]}"
    group = f"group-{uuid.uuid4().hex[:8]}"

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
        assert topic in await admin.list_topics()
    finally:
        await admin.close()

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, acks="all")
    await producer.start()
    partitions_of: dict[bytes, set[int]] = defaultdict(set)

    async def produce(start: int, count: int) -> None:
        for seq in range(start, start + count):
            key = f"patient-{seq % 5}".encode()
            meta = await producer.send_and_wait(topic, key=key, value=str(seq).encode())
            partitions_of[key].add(meta.partition)

    try:
        await produce(0, 30)
        # One key always lands on one partition, so one subject's events stay ordered.
        assert all(len(parts) == 1 for parts in partitions_of.values())

        first = AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        await first.start()
        try:
            records = await _consume(first, 30)
            by_key: dict[bytes, list[int]] = defaultdict(list)
            for record in records:
                by_key[record.key].append(int(record.value))
            assert sorted(int(r.value) for r in records) == list(range(30))
            assert all(values == sorted(values) for values in by_key.values())
            await first.commit()
            committed = {p: await first.committed(TopicPartition(topic, p)) for p in range(3)}
        finally:
            await first.stop()
        assert sum(committed.values()) == 30

        await produce(30, 10)

        second = AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        await second.start()
        try:
            resumed = await _consume(second, 10)
            assert sorted(int(r.value) for r in resumed) == list(range(30, 40))
            # Nothing before the committed offsets is delivered again.
            extra = await second.getmany(timeout_ms=1000)
            assert not any(extra.values())
        finally:
            await second.stop()
    finally:
        await producer.stop()


async def test_broker_does_not_create_topics_on_first_use(kafka_stack: Stack) -> None:
    """Topics are created explicitly; a typo in a topic name fails instead of making a topic."""
    bootstrap = kafka_stack.kafka.bootstrap_servers
    topic = f"no.such.topic.{uuid.uuid4().hex[:6]}"
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, request_timeout_ms=2000)
    await producer.start()
    try:
        with pytest.raises(UnknownTopicOrPartitionError):
            await producer.send_and_wait(topic, b"x")
    finally:
        await producer.stop()
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        assert topic not in await admin.list_topics()
    finally:
        await admin.close()
