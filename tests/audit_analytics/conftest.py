"""The audit store beside a real ledger relay, on each backend set.

``audit_stack`` is parametrized: ``embedded`` (embedded log, in-process EVM, SQLite)
and ``real`` (Kafka, the Geth Clique network, PostgreSQL). Topic names carry a
per-test prefix, so tests sharing the session's broker never see each other's events.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from audit_analytics import events as ev
from devstack.stack import Stack
from fixtures.chain import geth_chain
from prometheus_client import CollectorRegistry

from services.audit_analytics.adapters.consumer import audit_consumer
from services.audit_analytics.adapters.proofs import DirectEventProofs
from services.audit_analytics.adapters.sql import SqlAuditRepository
from services.audit_analytics.domain.anomalies import Detector
from services.audit_analytics.domain.integrity import IntegrityService
from services.audit_analytics.domain.service import AuditService
from services.ledger_relay.adapters.anchor import AuditAnchorLedger
from services.ledger_relay.adapters.sql import SqlLogRepository
from services.ledger_relay.domain.policy import CheckpointPolicy
from services.ledger_relay.domain.proofs import ProofService
from services.ledger_relay.metrics import RelayMetrics
from services.ledger_relay.relay import DOMAIN_TOPICS, LedgerRelay, RelayConfig
from services.platform.bus.embedded import EmbeddedEventBus
from services.platform.bus.kafka import KafkaEventBus
from services.platform.bus.outbox import OutboxPublisher
from services.platform.bus.port import EventBus, Message, TopicSpec
from services.platform.chain.inprocess import InProcessChain
from services.platform.chain.port import Chain
from services.platform.events.topics import TOPICS


async def until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


@dataclass
class AuditStack:
    name: str
    prefix: str
    relay_engine: sa.Engine
    audit_engine: sa.Engine
    chain: Chain
    anchor: AuditAnchorLedger
    bus_factory: Callable[[], EventBus]
    buses: list[EventBus] = field(default_factory=list)

    def topic(self, name: str) -> str:
        return f"{self.prefix}.{name}"

    @property
    def all_topics(self) -> list[str]:
        return [self.topic(t.name) for t in TOPICS]

    @property
    def store_group(self) -> str:
        return f"audit-{self.prefix}"

    @property
    def relay_group(self) -> str:
        return f"relay-{self.prefix}"

    @property
    def anchored_topics(self) -> frozenset[str]:
        return frozenset(self.topic(t) for t in DOMAIN_TOPICS)

    async def bus(self) -> EventBus:
        bus = self.bus_factory()
        await bus.start()
        self.buses.append(bus)
        return bus

    async def publish(self, raws: list[bytes]) -> None:
        bus = await self.bus()
        await bus.create_topics([TopicSpec(t, 3) for t in self.all_topics])
        await bus.publish_many(
            [Message(self.topic(ev.route(r)[0]), ev.route(r)[1], r) for r in raws]
        )

    @property
    def relay_repo(self) -> SqlLogRepository:
        return SqlLogRepository(self.relay_engine)

    @property
    def repo(self) -> SqlAuditRepository:
        return SqlAuditRepository(self.audit_engine)

    def service(self, **detector: Any) -> AuditService:
        integrity = IntegrityService(
            self.repo,
            DirectEventProofs(ProofService(self.relay_repo)),
            self.anchor,
            self.anchored_topics,
        )
        return AuditService(self.repo, integrity, Detector(**detector))

    async def run(
        self, expected_events: int, timeout_s: float = 120, store: bool = True, relay: bool = True
    ) -> None:
        """Runs the relay and the audit consumer until both hold ``expected_events``
        (only the relay with ``store=False``: the store then lags behind the bus; only the
        store with ``relay=False``: the relay's log then lags behind the store)."""
        relay_repo = self.relay_repo
        relay_repo.create_schema()
        self.repo.create_schema()
        relay_bus, audit_bus = await self.bus(), await self.bus()
        config = RelayConfig(
            group=self.relay_group,
            topics=tuple(sorted(self.anchored_topics)),
            policy=CheckpointPolicy(max_events=50, max_delay_ms=200),
            settle_blocks=2 if self.name == "real" else 0,
        )
        outbox = OutboxPublisher(self.relay_engine, relay_bus)
        ledger = LedgerRelay(
            relay_repo,
            self.anchor,
            relay_bus,
            config,
            RelayMetrics(CollectorRegistry()),
            outbox.publish_pending,
        )
        await ledger.open()
        consumer = audit_bus.consumer(self.store_group, self.all_topics)
        await consumer.start()
        consumer_runner = audit_consumer(consumer, self.audit_engine)
        stop = asyncio.Event()
        tasks = [asyncio.create_task(ledger.run(stop))] if relay else []
        if store:
            tasks.append(asyncio.create_task(consumer_runner.run(stop)))
        repo = self.repo
        try:
            await until(
                lambda: (
                    (
                        (not relay or ledger.anchored_size >= expected_events)
                        and (not store or len(repo.all_events()) >= expected_events)
                    )
                    or any(t.done() for t in tasks)
                ),
                timeout_s,
                f"{expected_events} events anchored and stored",
            )
            for t in tasks:
                if t.done():
                    t.result()
        finally:
            stop.set()
            await asyncio.wait_for(asyncio.gather(*tasks), 30)
            consumer_runner.close()
            await consumer.close()
            outbox.close()


@pytest.fixture(
    params=[
        "embedded",
        pytest.param("real", marks=[pytest.mark.kafka, pytest.mark.geth, pytest.mark.postgres]),
    ]
)
def audit_backends(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[str, sa.Engine, sa.Engine, Chain, Callable[[], EventBus]]]:
    if request.param == "embedded":
        relay_engine = sa.create_engine(f"sqlite:///{tmp_path / 'ledger.sqlite3'}")
        audit_engine = sa.create_engine(f"sqlite:///{tmp_path / 'audit.sqlite3'}")
        chain: Chain = InProcessChain()
        log_dir = tmp_path / "log"
        yield "embedded", relay_engine, audit_engine, chain, lambda: EmbeddedEventBus(log_dir)
        relay_engine.dispose()
        audit_engine.dispose()
        chain.close()
        return
    stack: Stack = request.getfixturevalue("test_stack")
    stack.up(["kafka", "geth", "postgres"])
    server_url = sa.make_url(
        stack.postgres.dsn().replace("postgresql://", "postgresql+psycopg://", 1)
    )
    suffix = uuid.uuid4().hex[:8]
    names = [f"ledger_{suffix}", f"audit_{suffix}"]
    admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        for name in names:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    relay_engine = sa.create_engine(server_url.set(database=names[0]))
    audit_engine = sa.create_engine(server_url.set(database=names[1]))
    chain = geth_chain(stack)
    bootstrap = stack.kafka.bootstrap_servers
    yield (
        "real",
        relay_engine,
        audit_engine,
        chain,
        lambda: KafkaEventBus(bootstrap, metadata_timeout_s=3.0),
    )
    relay_engine.dispose()
    audit_engine.dispose()
    chain.close()
    with admin.connect() as conn:
        for name in names:
            conn.execute(sa.text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
async def audit_stack(
    audit_backends: tuple[str, sa.Engine, sa.Engine, Chain, Callable[[], EventBus]],
) -> AsyncIterator[AuditStack]:
    name, relay_engine, audit_engine, chain, bus_factory = audit_backends
    anchor = AuditAnchorLedger.deploy(chain, chain.new_account(), chain.new_account())
    stack = AuditStack(
        name, f"t{uuid.uuid4().hex[:8]}", relay_engine, audit_engine, chain, anchor, bus_factory
    )
    yield stack
    for bus in stack.buses:
        await bus.close()
