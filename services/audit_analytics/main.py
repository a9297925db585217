"""Composition root of audit-analytics: settings -> adapters -> consumer, loops and API.

The only place that chooses adapters:

- database: ``EHR_DATABASE_URL`` (PostgreSQL), else SQLite in ``<data_dir>/audit.sqlite3``;
- bus: ``EHR_KAFKA_BOOTSTRAP_SERVERS``, else the embedded log in ``<data_dir>/bus``;
- proofs (``EventProofs``): ``EHR_LEDGER_URL`` (the relay's HTTP API, with the service
  token in ``EHR_LEDGER_TOKEN_FILE``), else ``EHR_LEDGER_DATABASE_URL`` (the relay's
  repository read directly), else an instance passed in by the embedded stack;
- chain: ``EHR_CHAIN_RPC_URLS`` (the first; read-only JSON-RPC) + ``EHR_ANCHOR_ADDRESS``,
  else a reader passed in (the embedded stack's in-process chain).

Run: ``python -m services.audit_analytics.main``; it refuses to start without the
database, Kafka, chain, anchor and ledger settings
(``services.platform.runtime.run_service``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import structlog
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from services.audit_analytics.adapters.consumer import CONSUMER_NAME, position_id, store_record
from services.audit_analytics.adapters.proofs import DirectEventProofs, HttpEventProofs
from services.audit_analytics.adapters.sql import SqlAuditRepository
from services.audit_analytics.api.errors import ERROR_MAP
from services.audit_analytics.api.routes import audit_router
from services.audit_analytics.domain.anomalies import Detector, Person, Thresholds
from services.audit_analytics.domain.integrity import IntegrityService
from services.audit_analytics.domain.ports import CheckpointReader, EventProofs
from services.audit_analytics.domain.service import AuditService
from services.ledger_relay.adapters.sql import SqlLogRepository
from services.ledger_relay.domain.proofs import ProofService
from services.platform.app.factory import create_app
from services.platform.app.settings import ServiceSettings
from services.platform.app.workers import every, lifespan_of, stop_workers
from services.platform.bus.choose import kafka_or_embedded
from services.platform.bus.consumer import IdempotentConsumer
from services.platform.bus.outbox import OutboxPublisher
from services.platform.bus.port import EventBus, TopicSpec
from services.platform.bus.quarantine import quarantine_readiness
from services.platform.events.topics import DOMAIN_TOPICS, TOPICS
from services.platform.events.topics import LEDGER_RELAY_CONSUMER_GROUP as LEDGER_CONSUMER_GROUP
from services.platform.runtime import SettingRefused, database_engine, run_service

log = structlog.get_logger(__name__)

ALL_TOPICS: tuple[str, ...] = tuple(t.name for t in TOPICS)


class AnomalySettings(BaseModel):
    """Thresholds of the anomaly rules (``EHR_ANOMALY__...``)."""

    work_start_hour: int = Field(default=7, ge=0, le=23)
    work_end_hour: int = Field(default=19, ge=0, le=24)
    volume_factor: float = Field(default=3.0, gt=1)
    volume_min_reads: int = Field(default=40, ge=1)
    volume_min_history_days: int = Field(default=3, ge=1)
    distinct_patients: int = Field(default=30, ge=1)
    distinct_window_minutes: int = Field(default=60, ge=1)
    failed_logins: int = Field(default=5, ge=2)
    failed_login_window_minutes: int = Field(default=10, ge=1)
    justification_min_chars: int = Field(default=12, ge=0)
    break_glass_review_hours: int = Field(default=72, ge=1)

    def thresholds(self) -> Thresholds:
        return Thresholds(**self.model_dump())


class AuditAnalyticsSettings(ServiceSettings):
    """Settings of audit-analytics (``EHR_`` prefix)."""

    service_name: str = "audit-analytics"
    data_dir: Path = Field(default=Path(".run/audit-analytics"))
    topics: list[str] = Field(default_factory=lambda: list(ALL_TOPICS))
    topic_partitions: int = Field(default=3, ge=1)
    consumer_group: str = CONSUMER_NAME
    anchored_topics: list[str] = Field(
        default_factory=lambda: list(DOMAIN_TOPICS),
        description="the topics the ledger relay anchors",
    )
    ledger_url: str | None = Field(default=None, description="the relay's HTTP API")
    ledger_token_file: Path | None = Field(default=None, description="service token for it")
    ledger_database_url: str | None = Field(default=None, description="the relay's database")
    ledger_consumer_group: str = Field(
        default=LEDGER_CONSUMER_GROUP,
        description="the relay's consumer group: its committed offsets tell what it has logged",
    )
    anchor_address: str | None = None
    anomaly: AnomalySettings = Field(default_factory=AnomalySettings)
    directory_file: Path | None = Field(
        default=None,
        description="JSON {account or patient id: {surname, address}} for the family rule",
    )
    proof_interval_seconds: float = Field(default=1.0, gt=0)
    detect_interval_seconds: float = Field(default=30.0, gt=0)
    # read-only chain access: no chain id, no key
    deployed_requires = (
        "database_url",
        "kafka_bootstrap_servers",
        "chain_rpc_urls",
        "anchor_address",
    )

    def missing_for_service(self) -> list[str]:
        missing = super().missing_for_service()
        if not (self.ledger_url or self.ledger_database_url):
            missing.append("EHR_LEDGER_URL (or EHR_LEDGER_DATABASE_URL)")
        return missing


class AuditAnalyticsRuntime:
    """Adapters, the store's consumer, the proof / detection / outbox loops, the app."""

    def __init__(
        self,
        settings: AuditAnalyticsSettings,
        *,
        proofs: EventProofs | None = None,
        reader: CheckpointReader | None = None,
        bus: EventBus | None = None,
    ) -> None:
        self.settings = settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.engine = database_engine(settings, "audit.sqlite3")
        self.repository = SqlAuditRepository(self.engine)
        self.repository.create_schema()
        self.bus: EventBus = bus or kafka_or_embedded(
            settings.kafka_bootstrap_servers, settings.data_dir
        )
        self._owns_bus = bus is None
        self._closers: list[Any] = []
        self.proofs = proofs or self._proofs()
        self.reader = reader or self._reader()
        directory: dict[str, Person] = {}
        if settings.directory_file is not None:
            raw = json.loads(settings.directory_file.read_text())
            directory = {k: Person(**v) for k, v in raw.items()}
        self.integrity = IntegrityService(
            self.repository, self.proofs, self.reader, frozenset(settings.anchored_topics)
        )
        self.service = AuditService(
            self.repository, self.integrity, Detector(settings.anomaly.thresholds(), directory)
        )
        self.publisher = OutboxPublisher(self.engine, self.bus)
        self.registry = CollectorRegistry()
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.app = self._build_app()

    def _proofs(self) -> EventProofs:
        s = self.settings
        if s.ledger_url:
            if s.ledger_token_file is None:
                raise SettingRefused("EHR_LEDGER_TOKEN_FILE is required with EHR_LEDGER_URL")
            token_file = s.ledger_token_file
            http = HttpEventProofs(s.ledger_url, lambda: token_file.read_text().strip())
            self._closers.append(http.close)
            return http
        if s.ledger_database_url:
            engine = sa.create_engine(s.ledger_database_url, pool_pre_ping=True)
            self._closers.append(engine.dispose)
            return DirectEventProofs(ProofService(SqlLogRepository(engine)))
        raise SettingRefused(
            "set EHR_LEDGER_URL or EHR_LEDGER_DATABASE_URL, or pass the proofs port"
        )

    def _reader(self) -> CheckpointReader:
        s = self.settings
        if not (s.chain_rpc_urls and s.anchor_address):
            raise SettingRefused("set EHR_CHAIN_RPC_URLS and EHR_ANCHOR_ADDRESS, or pass a reader")
        from ehr_protocol.verify import Web3CheckpointReader

        return Web3CheckpointReader(s.chain_rpc_urls[0], s.anchor_address)

    def _build_app(self) -> FastAPI:
        async def database() -> None:
            await run_in_threadpool(self.repository.ping)

        return create_app(
            self.settings,
            [
                audit_router(
                    self.service, self.end_offsets, self.logged_offsets, self.consumed_offsets
                )
            ],
            {
                "database": database,
                "store_consumer": quarantine_readiness(self.engine, CONSUMER_NAME),
            },
            registry=self.registry,
            error_map=ERROR_MAP,
            lifespan=lifespan_of(self.start, self.stop),
        )

    async def end_offsets(self) -> dict[tuple[str, int], int]:
        """The bus's end offsets of the consumed topics (for reconciliation)."""
        return await self.bus.end_offsets(list(self.settings.topics))

    async def consumed_offsets(self) -> dict[tuple[str, int], int]:
        """How far the store's own consumer group has committed (for reconciliation)."""
        return await self.bus.committed_offsets(
            self.settings.consumer_group, list(self.settings.topics)
        )

    async def logged_offsets(self) -> dict[tuple[str, int], int]:
        """How far the ledger relay has consumed the anchored topics (for reconciliation)."""
        return await self.bus.committed_offsets(
            self.settings.ledger_consumer_group, list(self.settings.anchored_topics)
        )

    async def start(self) -> None:
        self._stop.clear()
        if self._owns_bus:
            await self.bus.start()
        await self.bus.create_topics(
            [TopicSpec(t, self.settings.topic_partitions) for t in self.settings.topics]
        )
        consumer = self.bus.consumer(self.settings.consumer_group, list(self.settings.topics))
        await consumer.start()
        self.consumer = IdempotentConsumer(
            CONSUMER_NAME, consumer, self.engine, store_record, position_id, registry=self.registry
        )
        self._tasks = [
            asyncio.create_task(self.consumer.run(self._stop)),
            asyncio.create_task(
                every(
                    self._stop,
                    self.settings.proof_interval_seconds,
                    self._proofs_once,
                    "audit_proofs_failed",
                )
            ),
            asyncio.create_task(
                every(
                    self._stop,
                    self.settings.detect_interval_seconds,
                    self._detect_once,
                    "audit_detection_failed",
                )
            ),
            asyncio.create_task(
                every(self._stop, 0.2, self.publisher.publish_pending, "outbox_publish_failed")
            ),
        ]

    async def _proofs_once(self) -> None:
        await run_in_threadpool(self.integrity.attach_proofs)

    async def _detect_once(self) -> None:
        await run_in_threadpool(self.service.detect)

    async def stop(self) -> None:
        await stop_workers(self._stop, self._tasks)
        with contextlib.suppress(Exception):
            await self.publisher.publish_pending()
        if hasattr(self, "consumer"):
            await self.consumer.aclose()
        if self._owns_bus:
            await self.bus.close()

    def close(self) -> None:
        self.publisher.close()
        for close in self._closers:
            close()
        self.engine.dispose()


def main() -> None:
    run_service(AuditAnalyticsSettings, AuditAnalyticsRuntime)


if __name__ == "__main__":
    main()
