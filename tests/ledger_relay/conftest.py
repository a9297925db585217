"""Relay fixtures: a whole relay over one backend set.

``relay_env`` is parametrized: ``embedded`` (embedded log, in-process EVM,
SQLite) and ``real`` (Kafka, the Geth Clique network, PostgreSQL).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
import sqlalchemy as sa
from devstack.stack import Stack
from ehr.ledger.v1 import ledger_pb2
from ehr.vocabulary.v1 import vocabulary_pb2
from fixtures.chain import geth_chain
from prometheus_client import CollectorRegistry

from services.ledger_relay.adapters.anchor import AuditAnchorLedger
from services.ledger_relay.adapters.sql import SqlLogRepository
from services.ledger_relay.domain.policy import CheckpointPolicy
from services.ledger_relay.metrics import RelayMetrics
from services.ledger_relay.relay import LedgerRelay, RelayConfig
from services.platform.bus.embedded import EmbeddedEventBus
from services.platform.bus.kafka import KafkaEventBus
from services.platform.bus.outbox import OutboxPublisher
from services.platform.bus.port import EventBus
from services.platform.chain.inprocess import InProcessChain
from services.platform.chain.port import Chain
from services.platform.events.envelope import Actor, encode, new_envelope


def make_event(n: int) -> bytes:
    """A valid envelope (its id is what the proofs API looks up)."""
    payload = ledger_pb2.CheckpointAnchored(log_id=f"subject-{n % 7}", tree_size=n)
    envelope = new_envelope(
        payload, source="test", actor=Actor(id="tester", role=vocabulary_pb2.ROLE_SERVICE)
    )
    return encode(envelope)


@dataclass
class RelayEnv:
    name: str
    engine: sa.Engine
    chain: Chain
    anchor: AuditAnchorLedger
    config: RelayConfig
    bus_factory: object
    buses: list[EventBus] = field(default_factory=list)

    async def bus(self) -> EventBus:
        bus: EventBus = self.bus_factory()  # type: ignore[operator]
        await bus.start()
        self.buses.append(bus)
        return bus

    async def relay(self, **changes: object) -> tuple[LedgerRelay, RelayMetrics]:
        bus = await self.bus()
        repo = SqlLogRepository(self.engine)
        metrics = RelayMetrics(CollectorRegistry())
        repo.create_schema()
        outbox = OutboxPublisher(self.engine, bus)
        config = replace(self.config, **changes)  # type: ignore[arg-type]
        relay = LedgerRelay(repo, self.anchor, bus, config, metrics, outbox.publish_pending)
        await relay.open()
        return relay, metrics


@pytest.fixture(
    params=[
        "embedded",
        pytest.param("real", marks=[pytest.mark.kafka, pytest.mark.geth, pytest.mark.postgres]),
    ]
)
def relay_backends(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[str, sa.Engine, Chain, object, str]]:
    suffix = uuid.uuid4().hex[:8]
    if request.param == "embedded":
        engine = sa.create_engine(f"sqlite:///{tmp_path / 'ledger.sqlite3'}")
        chain: Chain = InProcessChain()
        log_dir = tmp_path / "log"
        yield "embedded", engine, chain, lambda: EmbeddedEventBus(log_dir), suffix
        engine.dispose()
        chain.close()
        return
    stack: Stack = request.getfixturevalue("test_stack")
    stack.up(["kafka", "geth", "postgres"])
    server_url = sa.make_url(
        stack.postgres.dsn().replace("postgresql://", "postgresql+psycopg://", 1)
    )
    database = f"ledger_{suffix}"
    admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{database}"'))
    engine = sa.create_engine(server_url.set(database=database))
    chain = geth_chain(stack)
    bootstrap = stack.kafka.bootstrap_servers
    yield "real", engine, chain, lambda: KafkaEventBus(bootstrap, metadata_timeout_s=3.0), suffix
    engine.dispose()
    chain.close()
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE "{database}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
async def relay_env(
    relay_backends: tuple[str, sa.Engine, Chain, object, str],
) -> AsyncIterator[RelayEnv]:
    name, engine, chain, bus_factory, suffix = relay_backends
    admin = chain.new_account()
    relay_account = chain.new_account()
    anchor = AuditAnchorLedger.deploy(chain, admin, relay_account)
    config = RelayConfig(
        group=f"ledger-relay-{suffix}",
        topics=(f"test.alpha{suffix}.v1", f"test.beta{suffix}.v1"),
        policy=CheckpointPolicy(max_events=100, max_delay_ms=200),
        settle_blocks=2 if name == "real" else 0,
    )
    env = RelayEnv(name, engine, chain, anchor, config, bus_factory)
    yield env
    for bus in env.buses:
        await bus.close()
