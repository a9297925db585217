"""Composition root of the identity service: settings -> adapters -> app.

The only place that chooses adapters (the shared settings of
``services.platform.app.settings``):

- storage: ``EHR_DATABASE_URL`` (PostgreSQL, ``postgresql+psycopg://``), else SQLite in
  ``<data_dir>/identity.sqlite3``;
- bus: ``EHR_KAFKA_BOOTSTRAP_SERVERS``, else the embedded log in ``<data_dir>/bus``;
- chain: ``EHR_CHAIN_RPC_URLS`` + ``EHR_CHAIN_ID`` (Geth; the registrar key from
  ``EHR_CHAIN_KEY_FILE`` or ``EHR_CHAIN_PRIVATE_KEY``), else a chain passed in, else an
  in-process EVM with a key generated into ``<data_dir>/registrar.key``.

Run: ``python -m services.identity.main``; it refuses to start without the database,
Kafka and chain settings (``services.platform.runtime.run_service``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from fastapi import FastAPI
from pydantic import Field

from services.identity.adapters.event_codec import to_message
from services.identity.adapters.provider_registry import (
    ChainProviderRegistry,
    ensure_provider_registry,
)
from services.identity.adapters.signing_keys import JwtTokenIssuer, SigningKeyRing
from services.identity.adapters.sql_store import SqlIdentityStore
from services.identity.api.routes import ERROR_MAP, build_router
from services.identity.domain.service import IdentityPolicy, IdentityService
from services.platform.app.auth import TokenVerifier
from services.platform.app.factory import create_app
from services.platform.app.settings import JwtSettings, ServiceSettings
from services.platform.bus.choose import kafka_or_embedded
from services.platform.bus.outbox import OutboxPublisher
from services.platform.bus.port import EventBus, TopicSpec
from services.platform.chain.port import Chain
from services.platform.events.topics import IDENTITY_ACCOUNTS, IDENTITY_SESSIONS
from services.platform.runtime import (
    chain_account,
    chain_or_inprocess,
    database_engine,
    is_embedded_chain,
    run_service,
)

DEFAULT_AUDIENCES = ("identity", "consent", "records", "ledger", "audit")


class IdentitySettings(ServiceSettings):
    """Settings of identity (``EHR_`` prefix, the shared names for database, Kafka, chain)."""

    service_name: str = "identity"
    # identity verifies its own tokens from its key ring; the JWKS here stays empty
    jwt: JwtSettings = JwtSettings(issuer="ehr-identity", audience="identity", jwks={"keys": []})
    data_dir: Path = Path(".run/identity")
    provider_registry_address: str | None = Field(
        default=None, description="ProviderRegistry address; deployed once when unset"
    )
    bootstrap_admin_address: str | None = None
    audiences: tuple[str, ...] = DEFAULT_AUDIENCES
    login_domain: str = "ehr-ledger.local"
    login_uri: str = "https://ehr-ledger.local/identity"
    token_ttl_seconds: int = Field(default=900, ge=30, le=3600)
    challenge_ttl_seconds: int = Field(default=300, ge=5, le=3600)
    outbox_poll_seconds: float = Field(default=0.05, gt=0)
    deployed_requires = (*ServiceSettings.deployed_requires, "chain_key")


REGISTRAR_KEY_FILE = "registrar.key"


@dataclass
class IdentityRuntime:
    app: FastAPI
    service: IdentityService
    store: SqlIdentityStore
    bus: EventBus
    chain: Chain
    registry: ChainProviderRegistry
    keys: SigningKeyRing
    owns_chain: bool = True

    def close(self) -> None:
        """Releases what ``build`` opened (after the app's lifespan ended); a chain passed
        in is its owner's to close."""
        if self.owns_chain:
            self.chain.close()
        self.store.engine.dispose()


def build(
    settings: IdentitySettings, *, chain: Chain | None = None, bus: EventBus | None = None
) -> IdentityRuntime:
    """Wire the service. ``chain`` / ``bus`` may be passed in by a process that embeds
    several services (one in-process chain, one embedded log)."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    registrar = chain_account(
        settings, REGISTRAR_KEY_FILE, embedded=is_embedded_chain(settings, chain)
    )
    chain, owns_chain = chain_or_inprocess(settings, registrar, chain)
    contract = ensure_provider_registry(
        chain,
        registrar,
        settings.provider_registry_address,
        settings.data_dir / "contracts.json",
    )
    registry = ChainProviderRegistry(chain, contract, registrar)

    engine = database_engine(settings, "identity.sqlite3")
    store = SqlIdentityStore(engine, to_message)
    store.create_schema()
    if bus is None:
        bus = kafka_or_embedded(settings.kafka_bootstrap_servers, settings.data_dir)
    keys = SigningKeyRing(settings.data_dir / "jwt-keys")
    issuer = JwtTokenIssuer(
        keys, settings.jwt.issuer, timedelta(seconds=settings.token_ttl_seconds)
    )
    policy = IdentityPolicy(
        login_domain=settings.login_domain,
        login_uri=settings.login_uri,
        chain_id=chain.chain_id,
        audiences=tuple(settings.audiences),
        challenge_ttl=timedelta(seconds=settings.challenge_ttl_seconds),
        token_ttl=timedelta(seconds=settings.token_ttl_seconds),
        bootstrap_admin_address=settings.bootstrap_admin_address,
    )
    service = IdentityService(store, registry, issuer, policy)
    verifier = TokenVerifier.from_settings(
        settings.jwt.model_copy(update={"jwks_min_refresh_seconds": 0.0}), keys
    )
    event_bus = bus

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await event_bus.start()
        await event_bus.create_topics(
            [TopicSpec(IDENTITY_ACCOUNTS.name), TopicSpec(IDENTITY_SESSIONS.name)]
        )
        publisher = OutboxPublisher(engine, event_bus)
        stop = asyncio.Event()
        task = asyncio.create_task(publisher.run(stop, settings.outbox_poll_seconds))
        try:
            yield
        finally:
            stop.set()
            await task
            publisher.close()
            await event_bus.close()

    async def database() -> None:
        await asyncio.to_thread(store.ping)

    app = create_app(
        settings,
        [build_router(service, keys)],
        {"database": database},
        token_verifier=verifier,
        error_map=ERROR_MAP,
        lifespan=lifespan,
    )
    return IdentityRuntime(app, service, store, bus, chain, registry, keys, owns_chain)


def main() -> None:
    run_service(
        IdentitySettings,
        build,
        lambda runtime: print(json.dumps({"provider_registry": runtime.registry.contract.address})),
    )


if __name__ == "__main__":
    main()
