"""Identity and consent served side by side by uvicorn on 127.0.0.1, on ONE bus and
ONE chain, the way they are deployed: consent verifies identity-issued tokens through
identity's real JWKS URL and learns accounts from identity's events on the bus.

- ``embedded``: one embedded log (both services open the same durable log directory),
  one in-process chain (identity gets a client of consent's chain), SQLite each.
- ``real``: Kafka, Geth and one PostgreSQL database per service, from the test stack.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from devstack.stack import Stack
from ehr.envelope.v1 import envelope_pb2
from ehr_client.keys import UserKeys
from eth_account import Account

from services.consent.main import ConsentRuntime, ConsentSettings
from services.identity.main import IdentityRuntime, IdentitySettings, build
from services.platform.app.loopback import bind_loopback, serve_in_thread, url_of
from services.platform.bus.embedded import EmbeddedEventBus
from services.platform.bus.kafka import KafkaEventBus
from services.platform.bus.port import EventBus
from services.platform.chain.geth import GethChain
from services.platform.chain.inprocess import InProcessChain
from services.platform.events import envelope as codec
from services.platform.events.topics import CONSENT_GRANTS, IDENTITY_ACCOUNTS, IDENTITY_SESSIONS

ISSUER = "ehr-identity"
TOPICS = (IDENTITY_ACCOUNTS.name, IDENTITY_SESSIONS.name, CONSENT_GRANTS.name)
FUNDING_WEI = 10**20


@dataclass
class Deployment:
    """Both services, started and reachable over HTTP, and a way to read the bus."""

    backend: str
    identity_url: str
    consent_url: str
    admin: UserKeys
    identity: IdentityRuntime
    consent: ConsentRuntime
    open_bus: Callable[[], EventBus]

    def events(
        self,
        subjects: set[str],
        until: Callable[[list[envelope_pb2.Envelope]], bool],
        timeout_s: float = 30.0,
    ) -> list[envelope_pb2.Envelope]:
        """Envelopes about ``subjects`` on the three topics, decoded with the envelope
        codec, read with a fresh consumer group until ``until`` holds (or the deadline)."""

        async def read() -> list[envelope_pb2.Envelope]:
            bus = self.open_bus()
            await bus.start()
            seen: list[envelope_pb2.Envelope] = []
            try:
                consumer = bus.consumer(f"e2e-{uuid.uuid4().hex[:8]}", list(TOPICS))
                await consumer.start()
                deadline = time.monotonic() + timeout_s
                try:
                    while not until(seen) and time.monotonic() < deadline:
                        for record in await consumer.fetch(timeout_s=0.5):
                            envelope = codec.decode(record.value)
                            if envelope.subject in subjects:
                                seen.append(envelope)
                finally:
                    await consumer.close()
            finally:
                await bus.close()
            return seen

        return asyncio.run(read())


def _create_database(stack: Stack, prefix: str) -> tuple[str, Callable[[], None]]:
    server = sa.make_url(stack.postgres.dsn().replace("postgresql://", "postgresql+psycopg://", 1))
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()

    return server.set(database=name).render_as_string(hide_password=False), drop


def _key_file(path: Path, key: bytes) -> Path:
    path.touch(mode=0o600)
    path.write_text(key.hex())
    return path


@contextlib.contextmanager
def deploy(backend: str, data_dir: Path, stack: Stack | None = None) -> Iterator[Deployment]:
    """Start identity and consent on ``backend`` ("embedded" or "real"), stop them after."""
    admin = UserKeys.generate()
    identity_socket, consent_socket = bind_loopback(), bind_loopback()
    identity_url = url_of(identity_socket)
    jwt = {
        "issuer": ISSUER,
        "audience": "consent",
        "jwks_url": f"{identity_url}/.well-known/jwks.json",
        "jwks_min_refresh_seconds": 0.0,
    }
    registrar = Account.create()
    options: dict[str, Any] = {
        "data_dir": data_dir / "identity",
        "bootstrap_admin_address": admin.address,
        "chain_key_file": _key_file(data_dir / "registrar.key", bytes(registrar.key)),
    }
    consent_options: dict[str, Any] = {
        "jwt": jwt,
        "data_dir": data_dir / "consent",
        "identity_consumer_group": f"consent-identity-{uuid.uuid4().hex[:8]}",
    }
    cleanups: list[Callable[[], None]] = []
    open_bus: Callable[[], EventBus]
    if backend == "real":
        assert stack is not None
        identity_db, drop_identity = _create_database(stack, "e2e_identity")
        consent_db, drop_consent = _create_database(stack, "e2e_consent")
        cleanups += [drop_identity, drop_consent]
        relay = Account.create()
        geth = stack.geth
        with GethChain(list(geth.rpc_urls), geth.chain_id, geth.faucet_private_key()) as faucet:
            faucet.fund(registrar.address, FUNDING_WEI)
            faucet.fund(relay.address, FUNDING_WEI)
        bootstrap = stack.kafka.bootstrap_servers
        options.update(
            database_url=identity_db,
            kafka_bootstrap_servers=bootstrap,
            chain_rpc_urls=list(geth.rpc_urls),
            chain_id=geth.chain_id,
        )
        consent_options.update(
            database_url=consent_db,
            kafka_bootstrap_servers=bootstrap,
            chain_rpc_urls=list(geth.rpc_urls),
            chain_id=geth.chain_id,
            chain_private_key=relay.key.hex(),
        )

        def open_kafka() -> EventBus:
            return KafkaEventBus(bootstrap, metadata_timeout_s=5.0)

        open_bus = open_kafka
    else:
        log_dir = data_dir / "consent" / "bus"  # consent's embedded log, opened by both

        def open_log() -> EventBus:
            return EmbeddedEventBus(log_dir)

        open_bus = open_log

    consent = ConsentRuntime(ConsentSettings(**consent_options))
    shared_chain: InProcessChain | None = None
    bus: EventBus | None = None
    if backend == "embedded":
        assert isinstance(consent.chain, InProcessChain)
        shared_chain = consent.chain.new_client()
        shared_chain.fund(registrar.address, FUNDING_WEI)
        bus = open_bus()
    identity = build(
        IdentitySettings(**options),
        chain=shared_chain,
        bus=bus,
    )
    try:
        with (
            serve_in_thread(identity.app, identity_socket) as served_identity,
            serve_in_thread(consent.app, consent_socket) as consent_url,
        ):
            assert served_identity == identity_url
            yield Deployment(backend, identity_url, consent_url, admin, identity, consent, open_bus)
    finally:
        consent.close()
        identity.close()
        for cleanup in cleanups:
            cleanup()


def types_in_order(envelopes: Sequence[envelope_pb2.Envelope]) -> list[tuple[str, str]]:
    """(type, subject) of ``envelopes`` in the order they happened (UUIDv7 ids sort by
    time; the event time breaks nothing since each step waits for the previous one)."""
    ordered = sorted(envelopes, key=lambda e: (codec.event_time(e), e.id))
    return [(e.type, e.subject) for e in ordered]
