"""Composition root of the record store: settings -> adapters -> app and workers.

The only place that chooses adapters:

- database: ``EHR_DATABASE_URL`` (PostgreSQL, ``postgresql+psycopg://``), else SQLite in
  ``<data_dir>/records.sqlite3``;
- bus: ``EHR_KAFKA_BOOTSTRAP_SERVERS``, else the embedded log in ``<data_dir>/bus``;
- chain: ``EHR_CHAIN_RPC_URLS`` + ``EHR_CHAIN_ID`` (Geth), else a chain passed in by the
  process that embeds the services (the in-process chain identity deployed to);
- consent: ``EHR_CONSENT_URL`` (the consent service's base URL), asked with the tokens
  identity issues to the service account (``EHR_IDENTITY_URL``).

Secrets: ``EHR_ESCROW_PRIVATE_KEY`` (X25519, hex) and ``EHR_SERVICE_SIGNING_KEY``
(secp256k1, hex: the service account's login key) come from the environment, else are
generated at run time into the data dir (mode 0600).

Run: ``python -m services.record_store.main``; it refuses to start without the database,
Kafka and chain settings (``services.platform.runtime.run_service``).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from pathlib import Path

from fastapi import FastAPI
from pydantic import Field, SecretStr
from starlette.concurrency import run_in_threadpool

from services.platform.app.factory import create_app
from services.platform.app.settings import ServiceSettings
from services.platform.app.workers import lifespan_of, stop_workers
from services.platform.bus.choose import kafka_or_embedded
from services.platform.bus.consumer import IdempotentConsumer
from services.platform.bus.outbox import OutboxPublisher
from services.platform.bus.port import EventBus, TopicSpec
from services.platform.bus.quarantine import quarantine_readiness
from services.platform.chain.port import Chain
from services.platform.events.topics import IDENTITY_ACCOUNTS, RECORDS_ACCESS, RECORDS_RECORDS
from services.platform.runtime import database_engine, geth_chain, run_service
from services.record_store.adapters.chain import ChainProviderVerification
from services.record_store.adapters.consent_http import HttpConsentCheck
from services.record_store.adapters.identity import handle_identity_event
from services.record_store.adapters.identity_directory import HttpAccountDirectory
from services.record_store.adapters.keys import Eip191ProvenanceVerifier, X25519EscrowKey
from services.record_store.adapters.service_account import (
    ServiceAccount,
    load_or_create_signing_key,
)
from services.record_store.adapters.sql import SqlRecordRepository, create_schema
from services.record_store.api.errors import ERROR_MAP
from services.record_store.api.routes import router
from services.record_store.domain.ports import ConsentCheck
from services.record_store.domain.service import RecordPolicy, RecordService

IDENTITY_CONSUMER = "record-store-identity"


class RecordStoreSettings(ServiceSettings):
    """Settings of the record store (``EHR_`` prefix)."""

    service_name: str = "record-store"
    max_body_bytes: int = Field(default=2 * 1_048_576, gt=0)
    data_dir: Path = Field(default=Path(".run/record-store"), description="embedded state")
    provider_registry_address: str = Field(description="ProviderRegistry address")
    consent_url: str = Field(description="base URL of the consent service")
    identity_url: str = Field(description="base URL of identity (the service account logs in)")
    escrow_private_key: SecretStr | None = None
    service_signing_key: SecretStr | None = Field(
        default=None, description="hex secp256k1 key of the service account; else generated"
    )
    service_account_name: str = "record-store"
    max_ciphertext_bytes: int = Field(default=1_048_576 + 64, gt=0)
    break_glass_seconds: float = Field(default=3600.0, gt=0)
    topic_partitions: int = Field(default=3, ge=1)
    publish_interval_seconds: float = Field(default=0.05, gt=0)
    identity_consumer_group: str = "record-store-identity"


class RecordStoreRuntime:
    """Everything the service runs: adapters, use cases, the app and its workers."""

    def __init__(
        self,
        settings: RecordStoreSettings,
        *,
        chain: Chain | None = None,
        bus: EventBus | None = None,
        consent: ConsentCheck | None = None,
    ) -> None:
        self.settings = settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.engine = database_engine(settings, "records.sqlite3")
        create_schema(self.engine)
        self.repository = SqlRecordRepository(self.engine)
        self.bus: EventBus = bus or kafka_or_embedded(
            settings.kafka_bootstrap_servers, settings.data_dir
        )
        self._owns_chain = chain is None
        if chain is None:
            # read-only calls: a throwaway key that never holds funds
            chain = geth_chain(settings, "0x" + secrets.token_hex(32))
        self.chain = chain
        self.escrow = (
            X25519EscrowKey.from_hex(settings.escrow_private_key.get_secret_value())
            if settings.escrow_private_key is not None
            else X25519EscrowKey.load_or_create(settings.data_dir / "escrow.key")
        )
        self.account = ServiceAccount(
            settings.identity_url,
            settings.service_signing_key.get_secret_value()
            if settings.service_signing_key is not None
            else load_or_create_signing_key(settings.data_dir / "service-account.key"),
            self.escrow.public_key_hex,
            name=settings.service_account_name,
        )
        self._http_consent = (
            HttpConsentCheck(settings.consent_url, self.account) if consent is None else None
        )
        self.directory = HttpAccountDirectory(settings.identity_url, self.account)
        self.service = RecordService(
            self.repository,
            consent or self._http_consent,  # type: ignore[arg-type]
            ChainProviderVerification(self.chain, settings.provider_registry_address),
            Eip191ProvenanceVerifier(),
            self.escrow,
            time.time,
            RecordPolicy(
                max_ciphertext_bytes=settings.max_ciphertext_bytes,
                break_glass_seconds=settings.break_glass_seconds,
            ),
            self.directory,
        )
        self.publisher = OutboxPublisher(self.engine, self.bus)
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._consumer: IdempotentConsumer | None = None
        self.app = self._build_app()

    def _build_app(self) -> FastAPI:
        async def database() -> None:
            await run_in_threadpool(self.repository.ping)

        app = create_app(
            self.settings,
            [router],
            {
                "database": database,
                "identity_consumer": quarantine_readiness(self.engine, IDENTITY_CONSUMER),
            },
            error_map=ERROR_MAP,
            lifespan=lifespan_of(self.start, self.stop),
            # the routes carry /records themselves: no servers entry from the gateway
            servers_from_root_path=False,
        )
        app.state.record_service = self.service
        app.state.service_registration = self.account.registration
        self.account.count_logins_on(app.state.metrics_registry)
        return app

    async def start(self) -> None:
        self._stop.clear()
        await self.bus.start()
        await self.bus.create_topics(
            [
                TopicSpec(t.name, self.settings.topic_partitions)
                for t in (RECORDS_RECORDS, RECORDS_ACCESS, IDENTITY_ACCOUNTS)
            ]
        )
        consumer = self.bus.consumer(
            self.settings.identity_consumer_group, [IDENTITY_ACCOUNTS.name]
        )
        await consumer.start()
        self._consumer = IdempotentConsumer(
            IDENTITY_CONSUMER,
            consumer,
            self.engine,
            handle_identity_event,
            registry=self.app.state.metrics_registry,
        )
        self._tasks = [
            asyncio.create_task(
                self.publisher.run(self._stop, self.settings.publish_interval_seconds)
            ),
            asyncio.create_task(self._consumer.run(self._stop)),
        ]

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
        if self._http_consent is not None:
            self._http_consent.close()
        self.directory.close()
        self.account.close()
        if self._owns_chain:
            self.chain.close()
        self.engine.dispose()


def main() -> None:
    run_service(RecordStoreSettings, RecordStoreRuntime)


if __name__ == "__main__":
    main()
