"""Records a consumer cannot apply are quarantined, once, and the group moves past them;
transient failures are retried. On SQLite and PostgreSQL, on the embedded log and Kafka.

The bad records are written straight to the bus, as a buggy or hostile producer would:
bytes that are not an envelope, a valid envelope breaking a domain rule, one the
database refuses, one without a readable event id, one too large to keep whole.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

import httpx
import pytest
import sqlalchemy as sa
from aiokafka import AIOKafkaProducer
from ehr.identity.v1 import identity_pb2
from ehr.vocabulary.v1 import vocabulary_pb2
from fixtures.bus import BusBackend
from prometheus_client import CollectorRegistry

from services.platform.app.factory import Degraded
from services.platform.bus import (
    BusConsumer,
    EventBus,
    HandlerFailedError,
    Message,
    Record,
    TopicSpec,
    TransientHandlerError,
)
from services.platform.bus.consumer import (
    IdempotentConsumer,
    create_processed_events_table,
    header_event_id,
    processed_events_table,
)
from services.platform.bus.quarantine import (
    MAX_KEPT_VALUE_BYTES,
    QuarantinedEvent,
    dismiss_quarantined,
    quarantine_readiness,
    quarantined,
    quarantined_count,
)
from services.platform.events import envelope as codec
from services.platform.events.errors import MalformedEvent

pytestmark = pytest.mark.asyncio(loop_scope="session")

KEY = "patient-1"  # one key: one partition, so "in order" is the bus's order

projection_metadata = sa.MetaData()
accounts = sa.Table(  # the projection under test
    "accounts",
    projection_metadata,
    sa.Column("n", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("account_id", sa.String(200), nullable=False),
    sa.CheckConstraint("length(account_id) <= 40", name="account_id_length"),
)


class BannedAccount(ValueError):
    """The projection's domain rule: a banned account is never projected."""


def registered(account_id: str) -> bytes:
    payload = identity_pb2.AccountRegistered(
        account_id=account_id, role=vocabulary_pb2.ROLE_PATIENT, signing_address="0x" + "11" * 20
    )
    actor = codec.Actor(id="identity", role=vocabulary_pb2.ROLE_SERVICE)
    return codec.encode(codec.new_envelope(payload, source="identity", actor=actor))


def project_account(connection: sa.Connection, record: Record) -> None:
    """Decodes the envelope, applies the domain rule, writes the row (the database checks
    the length): each step can refuse a record for good."""
    payload = codec.payload(codec.decode(record.value), identity_pb2.AccountRegistered)
    if payload.account_id.startswith("banned"):
        raise BannedAccount(f"account {payload.account_id} is banned")
    connection.execute(accounts.insert().values(account_id=payload.account_id))


def projected(engine: sa.Engine) -> list[str]:
    with engine.connect() as connection:
        return list(connection.scalars(sa.select(accounts.c.account_id).order_by(accounts.c.n)))


def processed_count(engine: sa.Engine) -> int:
    with engine.connect() as connection:
        return int(
            connection.scalar(sa.select(sa.func.count()).select_from(processed_events_table)) or 0
        )


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


async def run_until(
    runner: IdempotentConsumer, applied: int, duplicates: int, quarantined: int
) -> None:
    """Processes batches until the expected counts are reached, or fails at the deadline."""
    expected = (applied, duplicates, quarantined)
    seen = (0, 0, 0)
    deadline = time.monotonic() + 30
    while seen != expected:
        assert time.monotonic() < deadline, f"applied/duplicates/quarantined {seen}"
        outcome = await runner.process_batch(timeout_s=0.5)
        seen = (
            seen[0] + outcome.applied,
            seen[1] + outcome.duplicates,
            seen[2] + outcome.quarantined,
        )
        assert all(s <= e for s, e in zip(seen, expected, strict=True)), seen


@pytest.fixture
async def topic(event_bus: EventBus, unique_name: str, sql_engine: sa.Engine) -> str:
    create_processed_events_table(sql_engine)  # the quarantine comes with it
    projection_metadata.create_all(sql_engine)
    name = f"test.quarantine.{unique_name}"
    await event_bus.create_topics([TopicSpec(name, 3)])
    return name


async def test_bad_records_are_quarantined_once_and_the_good_ones_applied_in_order(
    event_bus: EventBus, sql_engine: sa.Engine, topic: str, unique_name: str
) -> None:
    group, name = f"g-{unique_name}", "accounts-projection"
    garbage = b"\xff\x00\x01 not an event envelope \xfe"
    bad = {
        garbage: MalformedEvent,
        registered("banned-mallory"): BannedAccount,
        registered("x" * 41): sa.exc.IntegrityError,  # the database's check refuses it
    }
    good = [registered(f"alice-{i}") for i in range(4)]
    values = [good[0], *list(bad)[:1], good[1], *list(bad)[1:], good[2], good[3]]
    await event_bus.publish_many(
        [Message(topic, KEY, v, (("trace", bytes([i, 0, 255])),)) for i, v in enumerate(values)]
    )
    registry = CollectorRegistry()
    ready = quarantine_readiness(sql_engine, name)
    await ready()  # nothing quarantined yet: ready

    # A first process applies them all but its commits never reach the group...
    async with CommitLosingConsumer(event_bus.consumer(group, [topic])) as lost:
        runner = IdempotentConsumer(name, lost, sql_engine, project_account, registry=registry)
        try:
            await run_until(runner, applied=4, duplicates=0, quarantined=3)
        finally:
            runner.close()
    assert projected(sql_engine) == [f"alice-{i}" for i in range(4)]
    rows = quarantined(sql_engine, name)
    assert [(r.value, r.offset) for r in rows] == [
        (v, offset) for offset, v in enumerate(values) if v in bad
    ]
    for row in rows:
        assert row.error_type.endswith(bad[row.value or b""].__qualname__), row
        assert row.error_message and row.value_size == len(row.value or b"")
        assert row.topic == topic and row.consumer == name
        assert row.headers == (("trace", bytes([row.offset, 0, 255])),)
        assert row.quarantined_at.tzinfo is not None
    assert "banned-mallory is banned" in rows[1].error_message
    assert (
        registry.get_sample_value(
            "bus_quarantined_events_total", {"consumer": name, "topic": topic}
        )
        == 3
    )
    with pytest.raises(Degraded, match=r"^3 records quarantined by consumer accounts-projection$"):
        await ready()

    # ...so the restarted process gets every record again: nothing applied or kept twice.
    async with event_bus.consumer(group, [topic]) as consumer:
        runner = IdempotentConsumer(name, consumer, sql_engine, project_account)
        try:
            await run_until(runner, applied=0, duplicates=7, quarantined=0)
        finally:
            runner.close()
    assert projected(sql_engine) == [f"alice-{i}" for i in range(4)]
    assert quarantined(sql_engine, name) == rows
    assert processed_count(sql_engine) == 7
    end = await event_bus.end_offsets([topic])
    assert await event_bus.committed_offsets(group, [topic]) == end  # committed past them

    # A third start resumes after them: only what is new is delivered.
    await event_bus.publish(topic, KEY, registered("alice-new"))
    async with event_bus.consumer(group, [topic]) as consumer:
        runner = IdempotentConsumer(name, consumer, sql_engine, project_account)
        try:
            await run_until(runner, applied=1, duplicates=0, quarantined=0)
            assert await consumer.fetch(timeout_s=0.5) == []
        finally:
            runner.close()
    assert projected(sql_engine)[-1] == "alice-new"
    assert quarantined_count(sql_engine, name) == 3

    # The operator dismisses them once dealt with; their markers stay.
    for row in rows:
        assert dismiss_quarantined(sql_engine, name, row.event_id)
    assert not dismiss_quarantined(sql_engine, name, rows[0].event_id)
    await ready()
    assert processed_count(sql_engine) == 8


def wrapped_outage() -> Exception:
    """A handler's own error raised from a connection failure: still an outage."""
    try:
        raise ConnectionResetError("peer reset")
    except ConnectionResetError as exc:
        try:
            raise LookupError("the directory did not answer") from exc
        except LookupError as wrapped:
            return wrapped


TRANSIENT: list[Callable[[], Exception]] = [
    lambda: sa.exc.OperationalError("INSERT", {}, Exception("server closed the connection")),
    lambda: sa.exc.OperationalError("UPDATE", {}, Exception("database is locked")),
    lambda: sa.exc.InterfaceError("SELECT", {}, Exception("connection already closed")),
    lambda: sa.exc.DisconnectionError("pool connection invalidated"),
    lambda: TransientHandlerError("the chain node is syncing"),
    lambda: httpx.ConnectError("connection refused"),
    lambda: TimeoutError("dependency too slow"),
    wrapped_outage,
]


async def test_transient_failures_are_retried_and_never_quarantined(
    event_bus: EventBus, sql_engine: sa.Engine, topic: str, unique_name: str
) -> None:
    name = "accounts-projection"
    await event_bus.publish_many([Message(topic, KEY, registered(f"alice-{i}")) for i in range(3)])
    outages = [make() for make in TRANSIENT]

    def flaky(connection: sa.Connection, record: Record) -> None:
        project_account(connection, record)  # written, then rolled back with the failure
        account = codec.payload(codec.decode(record.value), identity_pb2.AccountRegistered)
        if account.account_id == "alice-1" and outages:
            raise outages.pop(0)

    async with event_bus.consumer(f"g-{unique_name}", [topic]) as consumer:
        runner = IdempotentConsumer(name, consumer, sql_engine, flaky)
        try:
            failures: list[BaseException | None] = []
            deadline = time.monotonic() + 60
            while len(projected(sql_engine)) < 3:
                assert time.monotonic() < deadline, projected(sql_engine)
                try:
                    outcome = await runner.process_batch(timeout_s=0.5)
                except HandlerFailedError as exc:
                    failures.append(exc.__cause__)
                else:
                    assert outcome.quarantined == 0
        finally:
            runner.close()
    assert [type(f) for f in failures] == [type(make()) for make in TRANSIENT]
    assert projected(sql_engine) == ["alice-0", "alice-1", "alice-2"]
    assert quarantined_count(sql_engine, name) == 0
    assert processed_count(sql_engine) == 3


async def test_records_with_hostile_ids_values_and_messages_are_quarantined_bounded(
    event_bus: EventBus, sql_engine: sa.Engine, topic: str, unique_name: str
) -> None:
    """Whatever a producer puts in a record, its quarantine row can be written (PostgreSQL
    refuses NUL in text and over-long strings): ids are hashed or replaced by the position,
    messages escaped and truncated, large values kept as digest and size."""
    name = "by-header"
    huge = b"\x00" * (MAX_KEPT_VALUE_BYTES + 1)
    records = [
        Message(topic, KEY, b"no id header"),
        Message(topic, KEY, b"nul in id", (("event-id", b"id\x00with-nul"),)),
        Message(topic, KEY, b"long id", (("event-id", b"i" * 500),)),
        Message(topic, KEY, b"undecodable id", (("event-id", b"\xff\xfe"),)),
        Message(topic, KEY, huge, (("event-id", b"huge"),)),
        Message(topic, KEY, registered("alice-ok"), (("event-id", b"fine"),)),
    ]
    await event_bus.publish_many(records)

    def refuse_loudly(connection: sa.Connection, record: Record) -> None:
        if dict(record.headers).get("event-id") == b"fine":
            project_account(connection, record)
            return
        raise ValueError("bad \x00 bytes \udcff " + "m" * 5000)

    async with event_bus.consumer(f"g-{unique_name}", [topic]) as consumer:
        runner = IdempotentConsumer(
            name, consumer, sql_engine, refuse_loudly, header_event_id("event-id")
        )
        try:
            await run_until(runner, applied=1, duplicates=0, quarantined=5)
        finally:
            runner.close()
    assert projected(sql_engine) == ["alice-ok"]
    rows: dict[int, QuarantinedEvent] = {r.offset: r for r in quarantined(sql_engine, name)}
    assert sorted(rows) == [0, 1, 2, 3, 4]
    assert rows[0].event_id == f"position:{topic}/{rows[0].partition}@0"
    assert rows[0].error_type == "builtins.KeyError"  # the runner could not read the id
    assert rows[1].event_id.startswith("sha256:") and rows[2].event_id.startswith("sha256:")
    assert rows[3].event_id.startswith("position:")
    assert rows[4].event_id == "huge"
    assert rows[4].value is None and rows[4].value_size == len(huge)
    for row in rows.values():
        assert len(row.error_message) <= 1000
        assert "\x00" not in row.error_message
    assert rows[1].error_message.startswith("bad \\x00 bytes \\udcff mmm")


@pytest.mark.kafka
@pytest.mark.parametrize("bus_location", ["kafka"], indirect=True)
async def test_a_raw_kafka_record_with_a_binary_key_and_null_header_reaches_the_runner(
    event_bus: EventBus,
    bus_location: BusBackend,
    sql_engine: sa.Engine,
    topic: str,
    unique_name: str,
) -> None:
    """The broker takes what the port never writes (a key that is not UTF-8, a null
    header value); fetching must hand such a record to the runner, not fail forever."""
    producer = AIOKafkaProducer(bootstrap_servers=bus_location.bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(
            topic, b"\xff\xfe raw", key=KEY.encode() + b"\xff", headers=[("h", None)]
        )
        await producer.send_and_wait(topic, registered("alice-after"), key=KEY.encode() + b"\xff")
    finally:
        await producer.stop()
    name = "raw-kafka"
    async with event_bus.consumer(f"g-{unique_name}", [topic]) as consumer:
        runner = IdempotentConsumer(name, consumer, sql_engine, project_account)
        try:
            await run_until(runner, applied=1, duplicates=0, quarantined=1)
        finally:
            runner.close()
    (row,) = quarantined(sql_engine, name)
    assert row.value == b"\xff\xfe raw" and row.headers == (("h", b""),)
    assert projected(sql_engine) == ["alice-after"]
