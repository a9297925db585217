"""Reading the bus as columns (what the ledger relay reads): one contract for a bus's own
consumer (embedded log, Kafka) and for the Kafka consumer in a process of its own; then
what only the consumer process can do wrong (its parent or itself dying)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from devstack.stack import Stack
from fixtures.bus import BusBackend

from services.platform.bus import BusClosedError, BusError, EventBus, Message, TopicSpec
from services.platform.bus.port import ColumnConsumer, RecordColumns
from services.platform.bus.process import ProcessConsumer

pytestmark = pytest.mark.asyncio(loop_scope="session")

ConsumerOf = Callable[[EventBus, str, list[str]], ColumnConsumer]


@pytest.fixture(
    params=[
        "embedded",
        pytest.param("kafka", marks=pytest.mark.kafka),
        pytest.param("kafka-process", marks=pytest.mark.kafka),
    ]
)
def reader_location(
    request: pytest.FixtureRequest, tmp_path: Path
) -> tuple[BusBackend, ConsumerOf]:
    """Where the buses live and how the test's consumers are made: the bus's own
    consumer (embedded, Kafka) or a ``ProcessConsumer`` on the same broker."""
    if request.param == "embedded":
        return BusBackend("embedded", tmp_path / "log", None), _own_consumer
    bootstrap = request.getfixturevalue("kafka_stack").kafka.bootstrap_servers
    backend = BusBackend("kafka", None, bootstrap)
    if request.param == "kafka":
        return backend, _own_consumer

    def in_process(_bus: EventBus, group: str, topics: list[str]) -> ColumnConsumer:
        return ProcessConsumer(bootstrap, group, topics, max_records=40, prefetch=2)

    return backend, in_process


@pytest.fixture
async def reader(
    reader_location: tuple[BusBackend, ConsumerOf],
) -> AsyncIterator[tuple[BusBackend, ConsumerOf]]:
    yield reader_location
    await reader_location[0].close_all()


@pytest.fixture
async def kafka_backend(kafka_stack: Stack) -> AsyncIterator[BusBackend]:
    backend = BusBackend("kafka", None, kafka_stack.kafka.bootstrap_servers)
    yield backend
    await backend.close_all()


def _own_consumer(bus: EventBus, group: str, topics: list[str]) -> ColumnConsumer:
    return bus.consumer(group, topics)


async def _read(consumer: ColumnConsumer, count: int, timeout_s: float = 30.0) -> RecordColumns:
    parts: list[RecordColumns] = []
    seen = 0
    deadline = time.monotonic() + timeout_s
    while seen < count:
        assert time.monotonic() < deadline, f"got {seen} of {count} records"
        columns = await consumer.fetch_columns(max_records=40, timeout_s=0.5)
        parts.append(columns)
        seen += len(columns)
    return RecordColumns.concat(parts) if parts else RecordColumns([], [], [], [])


async def _topics(bus: EventBus, unique_name: str) -> list[str]:
    topics = [f"test.columns.a{unique_name}", f"test.columns.b{unique_name}"]
    await bus.create_topics([TopicSpec(t, 3) for t in topics])
    return topics


Published = dict[tuple[str, int, int], bytes]


async def _publish(bus: EventBus, topics: list[str], count: int) -> Published:
    messages = [
        Message(topics[n % 2], f"key-{n % 11}", f"event {n}\n".encode() + bytes([n % 256]) * n)
        for n in range(count)
    ]
    positions = await bus.publish_many(messages)
    return {
        (p.topic, p.partition, p.offset): m.value for p, m in zip(positions, messages, strict=True)
    }


async def _published(
    reader: tuple[BusBackend, ConsumerOf], unique_name: str, count: int
) -> tuple[EventBus, ConsumerOf, list[str], Published]:
    """A bus of the reader's backend, its consumer maker, two new topics and ``count``
    records published on them."""
    backend, consumer_of = reader
    bus = await backend.open()
    topics = await _topics(bus, unique_name)
    return bus, consumer_of, topics, await _publish(bus, topics, count)


async def test_every_record_arrives_once_byte_exact_in_offset_order_per_partition(
    reader: tuple[BusBackend, ConsumerOf], unique_name: str
) -> None:
    bus, consumer_of, topics, published = await _published(reader, unique_name, 300)
    async with consumer_of(bus, f"g-{unique_name}", topics) as consumer:
        columns = await _read(consumer, len(published))
        assert len(await consumer.fetch_columns(timeout_s=0.3)) == 0
    got = dict(zip(columns.positions(), columns.values, strict=True))
    assert len(got) == len(columns) == 300
    assert got == published
    by_partition: dict[tuple[str, int], list[int]] = {}
    for t, p, o in columns.positions():
        by_partition.setdefault((t, p), []).append(o)
    assert all(offsets == sorted(offsets) for offsets in by_partition.values())


async def test_committed_records_are_not_delivered_again_the_rest_are(
    reader: tuple[BusBackend, ConsumerOf], unique_name: str
) -> None:
    bus, consumer_of, topics, published = await _published(reader, unique_name, 200)
    group = f"g-{unique_name}"
    async with consumer_of(bus, group, topics) as consumer:
        first = await _read(consumer, 1)
        await consumer.commit(first.next_offsets())
        await _read(consumer, 20)  # fetched, never committed
    done = set(first.positions())
    async with consumer_of(bus, group, topics) as consumer:
        rest = await _read(consumer, len(published) - len(done))
        assert len(await consumer.fetch_columns(timeout_s=0.3)) == 0
    again = set(rest.positions())
    assert again.isdisjoint(done)
    assert again | done == set(published)


# -- the consumer process --------------------------------------------------------------

_PARENT = textwrap.dedent(
    """
    import asyncio, sys
    from services.platform.bus.process import ProcessConsumer

    async def main() -> None:
        consumer = ProcessConsumer(sys.argv[1], sys.argv[2], [sys.argv[3]], max_records=10)
        await consumer.start()
        while not len(await consumer.fetch_columns(timeout_s=0.5)):
            pass
        print(consumer.pid, flush=True)
        await asyncio.sleep(3600)

    asyncio.run(main())
    """
)


async def _on_kafka(backend: BusBackend, unique_name: str) -> tuple[str, EventBus, list[str]]:
    """The broker's address, a bus on it and two new topics."""
    assert backend.bootstrap is not None
    bus = await backend.open()
    return backend.bootstrap, bus, await _topics(bus, unique_name)


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


@pytest.mark.kafka
async def test_the_consumer_process_leaves_the_group_when_its_parent_is_killed(
    kafka_backend: BusBackend, unique_name: str
) -> None:
    bootstrap, bus, topics = await _on_kafka(kafka_backend, unique_name)
    topic = topics[0]
    published = await _publish(bus, [topic, topic], 50)
    group = f"g-{unique_name}"
    parent = subprocess.Popen(
        [sys.executable, "-c", _PARENT, bootstrap, group, topic],
        stdout=subprocess.PIPE,
    )
    try:
        assert parent.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(parent.stdout.readline), 60)
        child = int(line)
        assert _running(child)
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 20
        while _running(child):
            assert time.monotonic() < deadline, "the consumer process outlived its parent"
            await asyncio.sleep(0.1)
    finally:
        parent.kill()
        parent.wait()
    # It committed nothing and left the group: a new member gets every record at once
    # (not after the dead member's session times out).
    started = time.monotonic()
    async with ProcessConsumer(bootstrap, group, [topic]) as consumer:
        columns = await _read(consumer, len(published), timeout_s=9)
    assert set(columns.positions()) == set(published)
    assert time.monotonic() - started < 9


@pytest.mark.kafka
async def test_a_dead_consumer_process_is_reported_not_waited_for(
    kafka_backend: BusBackend, unique_name: str
) -> None:
    bootstrap, _, topics = await _on_kafka(kafka_backend, unique_name)
    async with ProcessConsumer(bootstrap, f"g-{unique_name}", topics) as consumer:
        assert consumer.pid is not None
        os.kill(consumer.pid, signal.SIGKILL)
        with pytest.raises(BusClosedError, match="ended"):
            await asyncio.wait_for(consumer.fetch_columns(timeout_s=0.2), 10)
        with pytest.raises(BusClosedError):
            await consumer.commit({(topics[0], 0): 1})


@pytest.mark.kafka
async def test_a_broker_that_cannot_be_reached_fails_the_start(
    kafka_backend: BusBackend, unique_name: str
) -> None:
    with socket.socket() as closed:  # bound, never listening: connections are refused
        closed.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{closed.getsockname()[1]}"
        consumer = ProcessConsumer(address, f"g-{unique_name}", ["test.columns.none"])
        with pytest.raises(BusError, match="bootstrap"):
            await asyncio.wait_for(consumer.start(), 60)
    assert consumer.pid is None


async def test_a_cancelled_start_stops_the_consumer_process(unique_name: str) -> None:
    with socket.socket() as closed:  # bound, never listening: the child keeps retrying
        closed.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{closed.getsockname()[1]}"
        consumer = ProcessConsumer(address, f"g-{unique_name}", ["test.columns.none"])
        starting = asyncio.create_task(consumer.start())
        deadline = time.monotonic() + 30
        while consumer.pid is None:
            assert time.monotonic() < deadline, "the child never started"
            await asyncio.sleep(0.01)
        pid = consumer.pid
        starting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await starting
    assert consumer.pid is None
    deadline = time.monotonic() + 30
    while _running(pid):
        assert time.monotonic() < deadline, "the consumer process outlived its cancelled start"
        await asyncio.sleep(0.05)


@pytest.mark.kafka
async def test_a_request_abandoned_before_its_answer_stops_the_consumer(
    kafka_backend: BusBackend, unique_name: str
) -> None:
    """A cancelled fetch's records would be skipped by the next commit if the consumer
    went on; it refuses instead (the relay closes it and starts a new one)."""
    bootstrap, _, topics = await _on_kafka(kafka_backend, unique_name)
    async with ProcessConsumer(bootstrap, f"g-{unique_name}", topics) as consumer:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(consumer.fetch_columns(timeout_s=5), 0.2)
        with pytest.raises(BusClosedError, match="cancelled"):
            await consumer.fetch_columns(timeout_s=0.1)
