"""The identity service behind a real uvicorn server, on the embedded default
(SQLite, embedded log, in-process EVM) and on the real stack (PostgreSQL, Kafka, Geth)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from devstack.stack import Stack
from ehr.envelope.v1 import envelope_pb2
from ehr_client.identity import IdentityClient, Session
from ehr_client.keys import UserKeys
from eth_account import Account

from services.identity.main import IdentityRuntime, IdentitySettings, build
from services.platform.app.loopback import serve_in_thread
from services.platform.bus.embedded import EmbeddedEventBus
from services.platform.bus.kafka import KafkaEventBus
from services.platform.bus.port import EventBus
from services.platform.chain.geth import GethChain
from services.platform.events import envelope as events


@dataclass
class Served:
    backend: str
    runtime: IdentityRuntime
    client: IdentityClient
    admin: UserKeys
    admin_session: Session
    open_bus: Callable[[], EventBus]
    engine: sa.Engine

    def counts(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            return {
                table: int(conn.execute(sa.text(f"SELECT COUNT(*) FROM {table}")).scalar_one())
                for table in ("identity_accounts", "identity_sessions", "bus_outbox")
            }

    def bus_events(
        self, subject: str, until: Callable[[list[envelope_pb2.Envelope]], bool]
    ) -> list[envelope_pb2.Envelope]:
        """Decoded identity events about ``subject`` read from the bus, polled until
        ``until`` holds (or a 30 s deadline)."""

        async def read() -> list[envelope_pb2.Envelope]:
            bus = self.open_bus()
            await bus.start()
            seen: list[envelope_pb2.Envelope] = []
            try:
                consumer = bus.consumer(
                    f"test-{uuid.uuid4().hex[:8]}", ["identity.accounts.v1", "identity.sessions.v1"]
                )
                await consumer.start()
                deadline = time.monotonic() + 30
                try:
                    while time.monotonic() < deadline:
                        for record in await consumer.fetch(timeout_s=0.5):
                            envelope = events.decode(record.value)
                            if envelope.subject == subject:
                                seen.append(envelope)
                        if until(seen):
                            break
                finally:
                    await consumer.close()
            finally:
                await bus.close()
            return seen

        return asyncio.run(read())


@pytest.fixture(scope="module", params=["embedded", pytest.param("real", marks=pytest.mark.geth)])
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    data_dir: Path = tmp_path_factory.mktemp("identity")
    admin = UserKeys.generate()
    options: dict[str, object] = {"data_dir": data_dir, "bootstrap_admin_address": admin.address}
    drop: Callable[[], None] = lambda: None  # noqa: E731
    if request.param == "real":
        stack: Stack = request.getfixturevalue("test_stack")
        for name in ("kafka_stack", "geth_stack", "postgres_stack"):
            request.getfixturevalue(name)
        server_url = sa.make_url(
            stack.postgres.dsn().replace("postgresql://", "postgresql+psycopg://", 1)
        )
        database = f"identity_{uuid.uuid4().hex[:12]}"
        admin_engine = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
        with admin_engine.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{database}"'))

        def drop_database() -> None:
            with admin_engine.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE "{database}" WITH (FORCE)'))
            admin_engine.dispose()

        drop = drop_database
        registrar = Account.create()
        key_file = data_dir / "registrar.key"
        key_file.write_text(registrar.key.hex())
        key_file.chmod(0o600)
        faucet = GethChain(
            list(stack.geth.rpc_urls), stack.geth.chain_id, stack.geth.faucet_private_key()
        )
        with faucet:
            faucet.fund(registrar.address, 10**20)
        options.update(
            database_url=server_url.set(database=database).render_as_string(hide_password=False),
            kafka_bootstrap_servers=stack.kafka.bootstrap_servers,
            chain_rpc_urls=list(stack.geth.rpc_urls),
            chain_id=stack.geth.chain_id,
            chain_key_file=key_file,
        )
        bootstrap = stack.kafka.bootstrap_servers

        def open_bus() -> EventBus:
            return KafkaEventBus(bootstrap, metadata_timeout_s=5.0)
    else:

        def open_bus() -> EventBus:
            return EmbeddedEventBus(data_dir / "bus")

    settings = IdentitySettings(**options)
    runtime = build(settings)
    try:
        with serve_in_thread(runtime.app) as base_url, IdentityClient(base_url) as client:
            client.register(admin, name="Admin", role="admin")
            session = client.login(admin)
            yield Served(
                request.param,
                runtime,
                client,
                admin,
                session,
                open_bus,
                runtime.store.engine,
            )
    finally:
        runtime.store.engine.dispose()
        runtime.chain.close()
        drop()
