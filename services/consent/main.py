"""Composition root of the consent service: settings -> adapters -> app and workers.

The only place that chooses adapters:

- database: ``EHR_DATABASE_URL`` (PostgreSQL, ``postgresql+psycopg://``), else SQLite in
  ``<data_dir>/consent.sqlite3``;
- bus: ``EHR_KAFKA_BOOTSTRAP_SERVERS``, else the embedded log in ``<data_dir>/bus``;
- chain: ``EHR_CHAIN_RPC_URLS`` + ``EHR_CHAIN_ID`` (Geth), else a chain passed in, else
  the in-process chain.

The relay account pays the gas: ``EHR_CHAIN_PRIVATE_KEY`` (a secret from the
environment) or ``EHR_CHAIN_KEY_FILE`` (one is required with Geth), or on an
in-process chain a key generated into ``<data_dir>/relay.key`` (mode 0600) and funded.

Run: ``python -m services.consent.main``; it refuses to start without the database,
Kafka and chain settings (``services.platform.runtime.run_service``).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import structlog
from eth_account.signers.local import LocalAccount
from fastapi import FastAPI
from prometheus_client import CollectorRegistry, Counter
from pydantic import Field
from starlette.concurrency import run_in_threadpool

from services.consent.adapters.eip712 import Eip712SignatureVerifier
from services.consent.adapters.identity import handle_identity_event
from services.consent.adapters.registry import (
    REGISTRY_ADDRESS_STATE,
    ChainConsentRegistry,
    deploy_registry,
    registry_is_deployed,
)
from services.consent.adapters.sql import SqlConsentRepository, create_schema
from services.consent.api.errors import ERROR_MAP
from services.consent.api.routes import router
from services.consent.domain.ports import QuarantinedLog
from services.consent.domain.service import ConsentService
from services.platform.app.factory import Degraded, create_app
from services.platform.app.settings import ServiceSettings
from services.platform.app.workers import every, lifespan_of, stop_workers
from services.platform.bus.choose import kafka_or_embedded
from services.platform.bus.consumer import IdempotentConsumer
from services.platform.bus.outbox import OutboxPublisher
from services.platform.bus.port import EventBus, TopicSpec
from services.platform.bus.quarantine import quarantine_readiness
from services.platform.chain.port import Chain
from services.platform.events.topics import CONSENT_GRANTS, IDENTITY_ACCOUNTS
from services.platform.runtime import (
    chain_account,
    chain_or_inprocess,
    database_engine,
    is_embedded_chain,
    run_service,
)

log = structlog.get_logger(__name__)

RELAY_KEY_FILE = "relay.key"
IDENTITY_CONSUMER = "consent-identity"


class ConsentSettings(ServiceSettings):
    """Settings of the consent service (``EHR_`` prefix)."""

    service_name: str = "consent"
    data_dir: Path = Field(default=Path(".run/consent"), description="embedded state")
    registry_address: str | None = Field(
        default=None, description="ConsentRegistry address; deployed once when unset"
    )
    receipt_timeout_seconds: float = Field(default=60.0, gt=0)
    topic_partitions: int = Field(default=3, ge=1)
    publish_interval_seconds: float = Field(default=0.05, gt=0)
    sweep_interval_seconds: float = Field(default=0.5, gt=0)
    reconcile_interval_seconds: float = Field(default=2.0, gt=0)
    identity_consumer_group: str = "consent-identity"
    deployed_requires = (*ServiceSettings.deployed_requires, "chain_key")


def ensure_registry(
    chain: Chain,
    deployer: LocalAccount,
    configured: str | None,
    repository: SqlConsentRepository,
) -> str:
    """The registry address: the configured one, else the one this service deployed
    before (kept in ``consent_state``), else a new deployment. Idempotent.

    When the address differs from the one the projection mirrors (a new registry, or
    the in-process chain of a restarted embedded process), the projection is reset:
    it only ever mirrors one registry.
    """
    stored = repository.get_state(REGISTRY_ADDRESS_STATE)
    if configured is not None:
        address = configured
    elif stored is not None and registry_is_deployed(chain, stored):
        address = stored
    else:
        address = deploy_registry(chain, deployer)
        log.info("consent_registry_deployed", address=address)
    if stored is not None and stored.lower() != address.lower():
        repository.reset_projection()
    repository.set_state(REGISTRY_ADDRESS_STATE, address)
    return address


class ConsentRuntime:
    """Everything the service runs: adapters, use cases, the app and its workers."""

    def __init__(
        self,
        settings: ConsentSettings,
        *,
        chain: Chain | None = None,
        bus: EventBus | None = None,
    ) -> None:
        """``chain`` / ``bus`` may be passed in by a process that embeds several services
        (one in-process chain, one embedded log); the runtime then does not close them."""
        self.settings = settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.engine = database_engine(settings, "consent.sqlite3")
        create_schema(self.engine)
        self.repository = SqlConsentRepository(self.engine)

        self.bus: EventBus = bus or kafka_or_embedded(
            settings.kafka_bootstrap_servers, settings.data_dir
        )

        self.relay_account: LocalAccount = chain_account(
            settings, RELAY_KEY_FILE, embedded=is_embedded_chain(settings, chain)
        )
        self.chain: Chain
        self.chain, self._owns_chain = chain_or_inprocess(settings, self.relay_account, chain)
        address = ensure_registry(
            self.chain, self.relay_account, settings.registry_address, self.repository
        )
        self.registry = ChainConsentRegistry(
            self.chain,
            address,
            self.relay_account,
            receipt_timeout_s=settings.receipt_timeout_seconds,
        )
        self.metrics = CollectorRegistry()
        self.quarantined_total = Counter(
            "consent_quarantined_logs",
            "Registry logs the projection could not apply and set aside for an operator",
            ["kind"],
            registry=self.metrics,
        )
        self.service = ConsentService(
            self.repository,
            self.registry,
            Eip712SignatureVerifier(),
            time.time,
            on_quarantine=self._quarantined,
        )
        # The last chain sync's failure (None once one succeeds): /readyz reports it.
        self.sync_failure: str | None = None
        self.publisher = OutboxPublisher(self.engine, self.bus)
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._consumer: IdempotentConsumer | None = None
        self.app = self._build_app()

    def _build_app(self) -> FastAPI:
        async def database() -> None:
            await run_in_threadpool(self.repository.ping)

        async def chain() -> None:
            await run_in_threadpool(self.registry.latest_block)

        async def projection() -> None:
            quarantined = await run_in_threadpool(self.repository.quarantine_count)
            problems = []
            if quarantined:
                problems.append(
                    f"{quarantined} registry log(s) quarantined (GET /consent/quarantine)"
                )
            if self.sync_failure is not None:
                problems.append(f"chain sync failing: {self.sync_failure}")
            if problems:
                raise Degraded("; ".join(problems))

        app = create_app(
            self.settings,
            [router],
            {
                "database": database,
                "chain": chain,
                "projection": projection,
                "identity_consumer": quarantine_readiness(self.engine, IDENTITY_CONSUMER),
            },
            registry=self.metrics,
            error_map=ERROR_MAP,
            lifespan=lifespan_of(self.start, self.stop),
            # The routes carry /consent themselves: the document's paths are complete.
            servers_from_root_path=False,
        )
        app.state.consent_service = self.service
        return app

    async def start(self) -> None:
        """Starts the bus, catches the projection up with the chain, starts the workers."""
        self._stop.clear()
        await self.bus.start()
        specs = [TopicSpec(t.name, self.settings.topic_partitions) for t in (CONSENT_GRANTS,)]
        specs.append(TopicSpec(IDENTITY_ACCOUNTS.name, self.settings.topic_partitions))
        await self.bus.create_topics(specs)
        try:
            await self.sync()
        except Exception as failure:  # the service starts anyway; the worker retries
            log.warning("consent_startup_sync_failed", error=repr(failure))
        consumer = self.bus.consumer(
            self.settings.identity_consumer_group, [IDENTITY_ACCOUNTS.name]
        )
        await consumer.start()
        self._consumer = IdempotentConsumer(
            IDENTITY_CONSUMER, consumer, self.engine, handle_identity_event, registry=self.metrics
        )
        self._tasks = [
            asyncio.create_task(
                self.publisher.run(self._stop, self.settings.publish_interval_seconds)
            ),
            asyncio.create_task(self._consumer.run(self._stop)),
            asyncio.create_task(
                every(
                    self._stop,
                    self.settings.sweep_interval_seconds,
                    lambda: run_in_threadpool(self.service.sweep_expired),
                    "consent_sweep_failed",
                )
            ),
            asyncio.create_task(
                every(
                    self._stop,
                    self.settings.reconcile_interval_seconds,
                    self.sync,
                    "consent_reconcile_failed",
                )
            ),
        ]

    async def sync(self) -> None:
        """One chain sync (``reconcile``), remembering its failure for ``/readyz``."""
        try:
            await run_in_threadpool(self.service.reconcile)
        except Exception as failure:
            self.sync_failure = f"{type(failure).__name__}: {failure}"[:300]
            raise
        self.sync_failure = None

    def _quarantined(self, entry: QuarantinedLog) -> None:
        self.quarantined_total.labels(kind=entry.kind).inc()
        log.error(
            "consent_log_quarantined",
            block_number=entry.block_number,
            tx_hash=entry.tx_hash,
            log_index=entry.log_index,
            kind=entry.kind,
            reason=entry.reason,
        )

    async def stop(self) -> None:
        await stop_workers(self._stop, self._tasks)
        if self._consumer is not None:
            await self._consumer.aclose()
            self._consumer = None
        await self.publisher.publish_pending()
        await self.bus.close()

    def close(self) -> None:
        """Releases what ``__init__`` opened (after ``stop``)."""
        self.publisher.close()
        if self._owns_chain:
            self.chain.close()
        self.engine.dispose()


def build_app(settings: ConsentSettings | None = None) -> FastAPI:
    """The ASGI app (``uvicorn --factory services.consent.main:build_app``)."""
    return ConsentRuntime(settings or ConsentSettings()).app


def main() -> None:
    run_service(ConsentSettings, ConsentRuntime)


if __name__ == "__main__":
    main()
