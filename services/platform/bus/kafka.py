"""The Kafka adapter (aiokafka): idempotent producer, group consumers with manual commit."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    CommitFailedError,
    IllegalStateError,
    KafkaError,
    TopicAlreadyExistsError,
)

from .errors import BusClosedError, CommitError, PublishError, UnknownTopicError
from .port import BusConsumer, EventBus, Message, Position, Record, TopicSpec

Slot = tuple[str, int]


class KafkaEventBus(EventBus):
    """Publishes with an idempotent producer (``acks=all``) and hands out group consumers."""

    def __init__(
        self,
        bootstrap_servers: str,
        client_id: str = "ehr-ledger",
        replication_factor: int = 1,
        metadata_timeout_s: float = 10.0,
        linger_ms: int = 0,
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.client_id = client_id
        self.replication_factor = replication_factor
        self.metadata_timeout_s = metadata_timeout_s
        self.linger_ms = linger_ms
        self._producer: AIOKafkaProducer | None = None
        self._partitions: dict[str, int] = {}
        self._offsets: AIOKafkaConsumer | None = None  # group-less, for end offsets only

    async def start(self) -> None:
        if self._producer is not None:
            return
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap_servers,
            client_id=self.client_id,
            enable_idempotence=True,
            acks="all",
            linger_ms=self.linger_ms,
        )
        await producer.start()
        self._producer = producer

    async def close(self) -> None:
        if self._offsets is not None:
            offsets, self._offsets = self._offsets, None
            await offsets.stop()
        if self._producer is not None:
            producer, self._producer = self._producer, None
            await producer.stop()

    def _started(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise BusClosedError("the Kafka bus is not started")
        return self._producer

    async def create_topics(self, topics: Sequence[TopicSpec]) -> None:
        admin = AIOKafkaAdminClient(
            bootstrap_servers=self.bootstrap_servers, client_id=self.client_id
        )
        await admin.start()
        try:
            existing = set(await admin.list_topics())
            wanted = [
                NewTopic(spec.name, spec.partitions, self.replication_factor)
                for spec in topics
                if spec.name not in existing
            ]
            if wanted:
                response = await admin.create_topics(wanted)
                for topic_error in getattr(response, "topic_errors", []):
                    name, code = topic_error[0], topic_error[1]
                    if code not in (0, TopicAlreadyExistsError.errno):
                        raise PublishError(f"cannot create topic {name}: error code {code}")
        finally:
            await admin.close()
        for spec in topics:  # wait until the new topics are visible in the metadata
            await self.partitions(spec.name)

    async def partitions(self, topic: str) -> int:
        if topic in self._partitions:
            return self._partitions[topic]
        client: Any = self._started().client
        deadline = time.monotonic() + self.metadata_timeout_s
        client.add_topic(topic)
        while True:
            await client.force_metadata_update()
            found = client.cluster.partitions_for_topic(topic)
            if found:
                self._partitions[topic] = len(found)
                return len(found)
            if time.monotonic() > deadline:
                raise UnknownTopicError(topic)
            await asyncio.sleep(0.1)

    async def publish_many(self, messages: Sequence[Message]) -> list[Position]:
        producer = self._started()
        for topic in {m.topic for m in messages}:
            await self.partitions(topic)
        try:
            # Sent in order, acknowledged together; the idempotent producer keeps the
            # order per partition and drops its own retried duplicates.
            pending = [
                await producer.send(
                    m.topic, value=m.value, key=m.key.encode(), headers=list(m.headers)
                )
                for m in messages
            ]
            acks = await asyncio.gather(*pending)
        except KafkaError as exc:
            raise PublishError(f"publish failed: {exc!r}") from exc
        return [Position(a.topic, a.partition, a.offset) for a in acks]

    async def _partitions_of(self, topics: Sequence[str]) -> list[TopicPartition]:
        """Every partition of ``topics`` (each topic once), for the offset queries."""
        self._started()
        return [
            TopicPartition(topic, partition)
            for topic in dict.fromkeys(topics)
            for partition in range(await self.partitions(topic))
        ]

    async def end_offsets(self, topics: Sequence[str]) -> dict[Slot, int]:
        partitions = await self._partitions_of(topics)
        if not partitions:
            return {}
        if self._offsets is None:
            offsets = AIOKafkaConsumer(
                bootstrap_servers=self.bootstrap_servers,
                client_id=self.client_id,
                enable_auto_commit=False,
            )
            await offsets.start()
            self._offsets = offsets
        try:
            found = await self._offsets.end_offsets(partitions)
        except KafkaError as exc:
            raise PublishError(f"cannot read end offsets: {exc!r}") from exc
        return {(tp.topic, tp.partition): int(offset) for tp, offset in found.items()}

    async def committed_offsets(self, group: str, topics: Sequence[str]) -> dict[Slot, int]:
        partitions = await self._partitions_of(topics)
        if not partitions:
            return {}
        admin = AIOKafkaAdminClient(
            bootstrap_servers=self.bootstrap_servers, client_id=self.client_id
        )
        try:
            await admin.start()
            found = await admin.list_consumer_group_offsets(group, partitions=partitions)
        except KafkaError as exc:
            raise PublishError(f"cannot read the offsets of group {group}: {exc!r}") from exc
        finally:
            await admin.close()
        committed = {(tp.topic, tp.partition): int(meta.offset) for tp, meta in found.items()}
        return {
            (tp.topic, tp.partition): max(committed.get((tp.topic, tp.partition), 0), 0)
            for tp in partitions
        }

    def consumer(self, group: str, topics: Sequence[str]) -> KafkaConsumer:
        return KafkaConsumer(self, group, list(topics))


class KafkaConsumer(BusConsumer):
    """A group member with auto-commit disabled: offsets move only through ``commit``."""

    def __init__(self, bus: KafkaEventBus, group: str, topics: list[str]) -> None:
        self.bus = bus
        self.group = group
        self.topics = topics
        self._consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        if self._consumer is not None:
            return
        consumer = AIOKafkaConsumer(
            *self.topics,
            bootstrap_servers=self.bus.bootstrap_servers,
            client_id=self.bus.client_id,
            group_id=self.group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        await consumer.start()
        self._consumer = consumer

    async def close(self) -> None:
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            await consumer.stop()

    def _started(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            raise BusClosedError(f"consumer of group {self.group} is not started")
        return self._consumer

    async def fetch(self, max_records: int = 500, timeout_s: float = 1.0) -> list[Record]:
        consumer = self._started()
        batches = await consumer.getmany(timeout_ms=int(timeout_s * 1000), max_records=max_records)
        records: list[Record] = []
        for batch in batches.values():
            records.extend(
                Record(
                    topic=m.topic,
                    partition=m.partition,
                    offset=m.offset,
                    # Anyone can write to the broker: a key that is not UTF-8 or a null
                    # header value must reach the consumer, not fail every fetch.
                    key=(m.key or b"").decode("utf-8", "replace"),
                    value=m.value or b"",
                    headers=tuple((name, bytes(value or b"")) for name, value in m.headers),
                    timestamp_ms=m.timestamp,
                )
                for m in batch
            )
        return records

    async def commit(self, offsets: Mapping[Slot, int]) -> None:
        consumer = self._started()
        try:
            await consumer.commit(
                {TopicPartition(topic, part): off for (topic, part), off in offsets.items()}
            )
        except (CommitFailedError, IllegalStateError) as exc:
            raise CommitError(f"commit failed: {exc!r}") from exc

    async def seek(self, topic: str, partition: int, offset: int) -> None:
        try:
            self._started().seek(TopicPartition(topic, partition), offset)
        except IllegalStateError as exc:
            raise CommitError(f"partition {topic}/{partition} is not assigned: {exc}") from exc

    async def assignment(self) -> set[Slot]:
        return {(tp.topic, tp.partition) for tp in self._started().assignment()}
