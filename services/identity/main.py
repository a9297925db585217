"""Composition root of the identity service: settings -> adapters -> app.

The only place that chooses embedded or real adapters:

- storage: ``EHR_IDENTITY__DATABASE_URL`` (PostgreSQL, ``postgresql+psycopg://``),
  else SQLite in the data dir;
- bus: ``EHR_IDENTITY__KAFKA_BOOTSTRAP``, else the embedded log in the data dir;
- chain: ``EHR_IDENTITY__CHAIN_RPC_URLS`` (Geth), else an in-process EVM.

Run: ``python -m services.identity.main``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import sqlalchemy as sa
from eth_account.signers.local import LocalAccount
from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field

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
from services.platform.app.factory import create_app, serve
from services.platform.app.logging import configure_logging
from services.platform.app.settings import JwtSettings, ServiceSettings
from services.platform.bus.choose import kafka_or_embedded
from services.platform.bus.outbox import OutboxPublisher
from services.platform.bus.port import EventBus, TopicSpec
from services.platform.chain.geth import GethChain
from services.platform.chain.inprocess import InProcessChain
from services.platform.chain.keyfile import load_or_create_account
from services.platform.chain.port import Chain
from services.platform.events.topics import IDENTITY_ACCOUNTS, IDENTITY_SESSIONS

DEFAULT_AUDIENCES = ("identity", "consent", "records", "ledger", "audit")


class IdentityOptions(BaseModel):
    """``EHR_IDENTITY__*`` settings of the identity service."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    data_dir: Path = Path(".run/identity")
    database_url: str | None = None
    kafka_bootstrap: str | None = None
    chain_rpc_urls: list[str] | None = None
    chain_id: int | None = None
    registrar_key_file: Path | None = Field(
        default=None, description="hex private key of identity's chain account"
    )
    provider_registry_address: str | None = None
    bootstrap_admin_address: str | None = None
    audiences: tuple[str, ...] = DEFAULT_AUDIENCES
    login_domain: str = "ehr-ledger.local"
    login_uri: str = "https://ehr-ledger.local/identity"
    token_ttl_seconds: int = Field(default=900, ge=30, le=3600)
    challenge_ttl_seconds: int = Field(default=300, ge=5, le=3600)
    outbox_poll_seconds: float = Field(default=0.05, gt=0)


class IdentitySettings(ServiceSettings):
    service_name: str = "identity"
    # identity verifies its own tokens from its key ring; the JWKS here stays empty
    jwt: JwtSettings = JwtSettings(issuer="ehr-identity", audience="identity", jwks={"keys": []})
    identity: IdentityOptions = IdentityOptions()


def registrar_account(options: IdentityOptions) -> LocalAccount:
    """Identity's chain key: from the configured file, else generated into the data dir."""
    return load_or_create_account(options.registrar_key_file or options.data_dir / "registrar.key")


@dataclass
class IdentityRuntime:
    app: FastAPI
    service: IdentityService
    store: SqlIdentityStore
    bus: EventBus
    chain: Chain
    registry: ChainProviderRegistry
    keys: SigningKeyRing


def build(
    settings: IdentitySettings, *, chain: Chain | None = None, bus: EventBus | None = None
) -> IdentityRuntime:
    """Wire the service. ``chain`` / ``bus`` may be passed in (tests sharing a chain)."""
    options = settings.identity
    options.data_dir.mkdir(parents=True, exist_ok=True)
    registrar = registrar_account(options)
    if chain is None:
        if options.chain_rpc_urls:
            if options.chain_id is None:
                raise ValueError("EHR_IDENTITY__CHAIN_ID is required with CHAIN_RPC_URLS")
            chain = GethChain(options.chain_rpc_urls, options.chain_id, registrar.key.hex())
        else:
            chain = InProcessChain()
            chain.fund(registrar.address, 10**21)
    contract = ensure_provider_registry(
        chain,
        registrar,
        options.provider_registry_address,
        options.data_dir / "contracts.json",
    )
    registry = ChainProviderRegistry(chain, contract, registrar)

    url = options.database_url or f"sqlite:///{options.data_dir / 'identity.sqlite3'}"
    engine = sa.create_engine(url)
    store = SqlIdentityStore(engine, to_message)
    store.create_schema()
    if bus is None:
        bus = kafka_or_embedded(options.kafka_bootstrap, options.data_dir)
    keys = SigningKeyRing(options.data_dir / "jwt-keys")
    issuer = JwtTokenIssuer(keys, settings.jwt.issuer, timedelta(seconds=options.token_ttl_seconds))
    policy = IdentityPolicy(
        login_domain=options.login_domain,
        login_uri=options.login_uri,
        chain_id=chain.chain_id,
        audiences=tuple(options.audiences),
        challenge_ttl=timedelta(seconds=options.challenge_ttl_seconds),
        token_ttl=timedelta(seconds=options.token_ttl_seconds),
        bootstrap_admin_address=options.bootstrap_admin_address,
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
        task = asyncio.create_task(publisher.run(stop, options.outbox_poll_seconds))
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
    return IdentityRuntime(app, service, store, bus, chain, registry, keys)


def main() -> None:
    settings = IdentitySettings()
    configure_logging(settings.service_name, settings.log_level)
    runtime = build(settings)
    serve(runtime.app, settings)
    print(json.dumps({"provider_registry": runtime.registry.contract.address}))


if __name__ == "__main__":
    main()
