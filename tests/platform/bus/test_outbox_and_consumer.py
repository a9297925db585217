"""The outbox and the idempotent consumer runner, on SQLite and PostgreSQL, on both buses."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence

import pytest
import sqlalchemy as sa

from services.platform.bus import (
    BusConsumer,
    EventBus,
    HandlerFailedError,
    Message,
    Position,
    Record,
    TopicSpec,
)
from services.platform.bus.consumer import (
    IdempotentConsumer,
    create_processed_events_table,
    processed_events_table,
)
from services.platform.bus.errors import TransientHandlerError
from services.platform.bus.outbox import (
    OutboxPublisher,
    OutboxWriter,
    create_outbox_table,
    outbox_table,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")

service_metadata = sa.MetaData()
accounts = sa.Table(  # the state of a service under test
    "accounts", service_metadata, sa.Column("id", sa.String(50), primary_key=True)
)
effects = sa.Table(  # the effect of a consumer under test
    "effects",
    service_metadata,
    sa.Column("n", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("value", sa.LargeBinary, nullable=False),
)


class CrashAfterPublishBus(EventBus):
    """The project's bus port, crashing right after the broker acknowledged a publish."""

    def __init__(self, inner: EventBus) -> None:
        self.inner = inner

    async def start(self) -> None: ...
    async def close(self) -> None: ...

    async def create_topics(self, topics: Sequence[TopicSpec]) -> None:
        await self.inner.create_topics(topics)

    async def partitions(self, topic: str) -> int:
        return await self.inner.partitions(topic)

    async def publish_many(self, messages: Sequence[Message]) -> list[Position]:
        await self.inner.publish_many(messages)
        raise RuntimeError("process crashed before marking the outbox")

    async def end_offsets(self, topics: Sequence[str]) -> dict[tuple[str, int], int]:
        return await self.inner.end_offsets(topics)

    async def committed_offsets(
        self, group: str, topics: Sequence[str]
    ) -> dict[tuple[str, int], int]:
        return await self.inner.committed_offsets(group, topics)

    def consumer(self, group: str, topics: Sequence[str]) -> BusConsumer:
        return self.inner.consumer(group, topics)


async def consume(consumer: BusConsumer, count: int, timeout_s: float = 30.0) -> list[Record]:
    records: list[Record] = []
    deadline = time.monotonic() + timeout_s
    while len(records) < count:
        assert time.monotonic() < deadline, f"got {len(records)} of {count} records"
        records.extend(await consumer.fetch(max_records=count - len(records), timeout_s=0.5))
    return records


async def run_until(runner: IdempotentConsumer, applied: int, duplicates: int) -> None:
    """Processes batches until the expected counts are reached, or fails at the deadline."""
    seen = [0, 0]
    deadline = time.monotonic() + 30
    while seen != [applied, duplicates]:
        assert time.monotonic() < deadline, f"applied/duplicates {seen}"
        outcome = await runner.process_batch(timeout_s=0.5)
        seen = [seen[0] + outcome.applied, seen[1] + outcome.duplicates]
        assert seen[0] <= applied and seen[1] <= duplicates, seen


def record_effect(connection: sa.Connection, record: Record) -> None:
    connection.execute(effects.insert().values(value=record.value))


def effect_values(engine: sa.Engine) -> list[bytes]:
    with engine.connect() as connection:
        return [bytes(v) for v in connection.scalars(sa.select(effects.c.value))]


@pytest.fixture
async def topic(event_bus: EventBus, unique_name: str, sql_engine: sa.Engine) -> str:
    create_outbox_table(sql_engine)
    create_processed_events_table(sql_engine)
    service_metadata.create_all(sql_engine)
    name = f"test.outbox.{unique_name}"
    await event_bus.create_topics([TopicSpec(name, 3)])
    return name


async def test_state_and_event_commit_together_or_not_at_all(
    event_bus: EventBus, sql_engine: sa.Engine, topic: str, unique_name: str
) -> None:
    writer = OutboxWriter()
    with pytest.raises(ValueError), sql_engine.begin() as connection:
        connection.execute(accounts.insert().values(id="rolled-back"))
        writer.append(connection, [Message(topic, "rolled-back", b"never")])
        raise ValueError("the use case failed after writing")
    with sql_engine.begin() as connection:
        connection.execute(accounts.insert().values(id="alice"))
        writer.append(connection, [Message(topic, "alice", b"\x00registered\xff", (("t", b"1"),))])

    publisher = OutboxPublisher(sql_engine, event_bus)
    try:
        assert await publisher.publish_pending() == 1
        assert await publisher.publish_pending() == 0  # marked published
    finally:
        publisher.close()
    async with event_bus.consumer(f"g-{unique_name}", [topic]) as consumer:
        (record,) = await consume(consumer, 1)
        assert await consumer.fetch(timeout_s=0.5) == []
    assert (record.key, record.value, record.headers) == (
        "alice",
        b"\x00registered\xff",
        (("t", b"1"),),
    )
    with sql_engine.connect() as connection:
        assert connection.scalars(sa.select(accounts.c.id)).all() == ["alice"]
        assert (
            connection.scalar(
                sa.select(sa.func.count()).where(outbox_table.c.published_at.is_(None))
            )
            == 0
        )


async def test_publisher_publishes_in_order_exactly_the_stored_bytes(
    event_bus: EventBus, sql_engine: sa.Engine, topic: str, unique_name: str
) -> None:
    writer = OutboxWriter()
    values = [f"event-{i}".encode() + bytes([i]) for i in range(30)]
    for start in range(0, 30, 4):  # several transactions
        with sql_engine.begin() as connection:
            writer.append(
                connection, [Message(topic, "patient-7", v) for v in values[start : start + 4]]
            )
    publisher = OutboxPublisher(sql_engine, event_bus, batch_size=7)
    try:
        assert await publisher.publish_pending() == 30
    finally:
        publisher.close()
    async with event_bus.consumer(f"g-{unique_name}", [topic]) as consumer:
        records = await consume(consumer, 30)
    assert [r.value for r in records] == values  # one key: one partition, outbox order


async def test_crash_between_publish_and_mark_is_absorbed_by_the_idempotent_consumer(
    event_bus: EventBus, sql_engine: sa.Engine, topic: str, unique_name: str
) -> None:
    with sql_engine.begin() as connection:
        OutboxWriter().append(
            connection, [Message(topic, f"k{i}", f"e{i}".encode()) for i in range(5)]
        )
    crashing = OutboxPublisher(sql_engine, CrashAfterPublishBus(event_bus))
    try:
        with pytest.raises(RuntimeError):
            await crashing.publish_pending()
    finally:
        crashing.close()
    restarted = OutboxPublisher(sql_engine, event_bus)
    try:
        assert await restarted.publish_pending() == 5  # still pending: published again
    finally:
        restarted.close()

    async with event_bus.consumer(f"g-{unique_name}", [topic]) as consumer:
        runner = IdempotentConsumer("projector", consumer, sql_engine, record_effect)
        try:
            await run_until(runner, applied=5, duplicates=5)
        finally:
            runner.close()
    assert sorted(effect_values(sql_engine)) == [f"e{i}".encode() for i in range(5)]


class CommitLosingConsumer(BusConsumer):
    """The project's consumer port, crashing before any commit reaches the group."""

    def __init__(self, inner: BusConsumer) -> None:
        self.inner = inner

    async def start(self) -> None:
        await self.inner.start()

    async def close(self) -> None:
        await self.inner.close()

    async def fetch(self, max_records: int = 500, timeout_s: float = 1.0) -> list[Record]:
        return await self.inner.fetch(max_records, timeout_s)

    async def commit(self, offsets: Mapping[tuple[str, int], int]) -> None:
        return None

    async def seek(self, topic: str, partition: int, offset: int) -> None:
        await self.inner.seek(topic, partition, offset)

    async def assignment(self) -> set[tuple[str, int]]:
        return await self.inner.assignment()


async def test_a_redelivered_event_is_applied_once(
    event_bus: EventBus, sql_engine: sa.Engine, topic: str, unique_name: str
) -> None:
    group = f"g-{unique_name}"
    await event_bus.publish_many([Message(topic, f"k{i}", f"e{i}".encode()) for i in range(6)])
    async with CommitLosingConsumer(event_bus.consumer(group, [topic])) as lost:
        runner = IdempotentConsumer("projector", lost, sql_engine, record_effect)
        try:
            await run_until(runner, applied=6, duplicates=0)
        finally:
            runner.close()
    async with event_bus.consumer(group, [topic]) as consumer:  # the restarted process
        runner = IdempotentConsumer("projector", consumer, sql_engine, record_effect)
        try:
            await run_until(runner, applied=0, duplicates=6)  # redelivered, not re-applied
            await event_bus.publish(topic, "k-next", b"next")
            await run_until(runner, applied=1, duplicates=0)  # committed ones stay done
        finally:
            runner.close()
    assert sorted(effect_values(sql_engine)) == sorted(
        [f"e{i}".encode() for i in range(6)] + [b"next"]
    )


async def test_a_failing_handler_rolls_back_effect_and_processed_row_and_keeps_the_offset(
    event_bus: EventBus, sql_engine: sa.Engine, topic: str, unique_name: str
) -> None:
    group = f"g-{unique_name}"
    await event_bus.publish_many([Message(topic, "one-key", f"e{i}".encode()) for i in range(4)])

    def fail_on_e2(connection: sa.Connection, record: Record) -> None:
        record_effect(connection, record)  # written, then rolled back with the failure
        if record.value == b"e2":
            raise TransientHandlerError("downstream unavailable")

    async with event_bus.consumer(group, [topic]) as consumer:
        runner = IdempotentConsumer("projector", consumer, sql_engine, fail_on_e2)
        try:
            with pytest.raises(HandlerFailedError):
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    await runner.process_batch(timeout_s=0.5)
        finally:
            runner.close()
    assert effect_values(sql_engine) == [b"e0", b"e1"]
    with sql_engine.connect() as connection:
        assert (
            connection.scalar(sa.select(sa.func.count()).select_from(processed_events_table)) == 2
        )

    async with event_bus.consumer(group, [topic]) as consumer:  # restarted with a fixed handler
        runner = IdempotentConsumer("projector", consumer, sql_engine, record_effect)
        try:
            records = await consume(consumer, 2)
            assert [r.value for r in records] == [b"e2", b"e3"]  # offset of e2 was not committed
            await consumer.seek(topic, records[0].partition, records[0].offset)
            await run_until(runner, applied=2, duplicates=0)
        finally:
            runner.close()
    assert effect_values(sql_engine) == [b"e0", b"e1", b"e2", b"e3"]


async def test_the_same_runner_retries_the_failed_record_on_its_next_batch(
    event_bus: EventBus, sql_engine: sa.Engine, topic: str, unique_name: str
) -> None:
    await event_bus.publish_many([Message(topic, "one-key", f"e{i}".encode()) for i in range(3)])
    failures = [sa.exc.OperationalError("INSERT", {}, OSError("connection reset"))]

    def flaky(connection: sa.Connection, record: Record) -> None:
        if record.value == b"e1" and failures:
            raise failures.pop()
        record_effect(connection, record)

    async with event_bus.consumer(f"g-{unique_name}", [topic]) as consumer:
        runner = IdempotentConsumer("projector", consumer, sql_engine, flaky)
        try:
            failed = 0
            deadline = time.monotonic() + 30
            while len(effect_values(sql_engine)) < 3:
                assert time.monotonic() < deadline, effect_values(sql_engine)
                try:
                    await runner.process_batch(timeout_s=0.5)
                except HandlerFailedError:
                    failed += 1
            assert failed == 1
        finally:
            runner.close()
    assert effect_values(sql_engine) == [b"e0", b"e1", b"e2"]


class CloseRecordingConsumer(CommitLosingConsumer):
    """The project's consumer port, noting when it is closed (commits are lost too)."""

    closed = False

    async def close(self) -> None:
        self.closed = True
        await self.inner.close()


def runner_threads(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(f"consumer-{name}")]


async def test_aclose_closes_the_bus_consumer_and_the_worker_thread(
    event_bus: EventBus, sql_engine: sa.Engine, topic: str, unique_name: str
) -> None:
    await event_bus.publish(topic, "k", b"one")
    consumer = CloseRecordingConsumer(event_bus.consumer(f"g-{unique_name}", [topic]))
    await consumer.start()
    runner = IdempotentConsumer(f"closing-{unique_name}", consumer, sql_engine, record_effect)
    await run_until(runner, applied=1, duplicates=0)
    assert runner_threads(runner.name), "the runner applies effects on its own thread"

    await runner.aclose()

    assert consumer.closed
    assert runner_threads(runner.name) == []
