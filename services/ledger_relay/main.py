"""Composition root of the ledger relay: settings -> adapters -> relay loop and proofs API.

The only place that chooses adapters:

- database: ``EHR_DATABASE_URL`` (PostgreSQL, ``postgresql+psycopg://``), else SQLite in
  ``<data_dir>/ledger.sqlite3``;
- bus: ``EHR_KAFKA_BOOTSTRAP_SERVERS``, else the embedded log in ``<data_dir>/bus``; with
  Kafka the relay reads the bus through a consumer in a child process
  (``EHR_FETCH_PROCESS``, on by default; ``services/platform/bus/process.py``);
- chain: ``EHR_CHAIN_RPC_URLS`` + ``EHR_CHAIN_ID`` (Geth), else a chain passed in, else
  the in-process chain.

The relay account signs the anchoring transactions. Its key is read from
``EHR_CHAIN_KEY_FILE`` or ``EHR_CHAIN_PRIVATE_KEY`` (one is required with Geth; the
account must be funded). On an in-process chain it defaults to ``<data_dir>/relay.key``,
generated on first start (mode 0600) and funded.

``AuditAnchor``: ``EHR_ANCHOR_ADDRESS``, else the contract this relay deployed
before (kept in ``ledger_state``), else a new deployment, recorded there. When the
contract changes (e.g. the in-process chain of a restarted embedded process), the
local checkpoints are forgotten and the whole log is anchored again on the new one.

Run: ``python -m services.ledger_relay`` (uvicorn; SIGTERM stops consuming, waits for
the loop and closes the bus); it refuses to start without the database, Kafka and chain
settings (``services.platform.runtime.run_service``).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from pathlib import Path
from typing import Literal

import structlog
from eth_account.signers.local import LocalAccount
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from pydantic import Field
from starlette.concurrency import run_in_threadpool

from services.ledger_relay.adapters.anchor import ARTIFACT_NAME, AuditAnchorLedger
from services.ledger_relay.adapters.sql import SqlLogRepository
from services.ledger_relay.api.errors import ERROR_MAP
from services.ledger_relay.api.routes import proofs_router
from services.ledger_relay.api.schemas import AnchorContract
from services.ledger_relay.domain.policy import CheckpointPolicy
from services.ledger_relay.domain.proofs import ProofService
from services.ledger_relay.metrics import RelayMetrics
from services.ledger_relay.relay import (
    CONSUMER_GROUP,
    DOMAIN_TOPICS,
    ConsumerFactory,
    CrashHook,
    LedgerRelay,
    RelayConfig,
)
from services.platform.app.factory import create_app
from services.platform.app.settings import ServiceSettings
from services.platform.app.workers import every, lifespan_of, stop_workers
from services.platform.bus.choose import kafka_or_embedded
from services.platform.bus.kafka import KafkaEventBus
from services.platform.bus.outbox import OutboxPublisher
from services.platform.bus.port import EventBus
from services.platform.bus.process import ProcessConsumer
from services.platform.chain.port import Chain, ChainError, load_artifact
from services.platform.runtime import (
    chain_account,
    chain_or_inprocess,
    database_engine,
    is_embedded_chain,
    run_service,
)

log = structlog.get_logger(__name__)

ANCHOR_ADDRESS_STATE = "anchor_address"
RELAY_KEY_FILE = "relay.key"


class LedgerRelaySettings(ServiceSettings):
    """Settings of the ledger relay (``EHR_`` prefix)."""

    service_name: str = "ledger-relay"
    data_dir: Path = Field(default=Path(".run/ledger-relay"), description="embedded state")
    anchor_address: str | None = Field(
        default=None, description="AuditAnchor address; deployed once and recorded when unset"
    )
    mode: Literal["checkpoint", "baseline"] = Field(
        default="checkpoint", description="baseline: one anchoring transaction per event"
    )
    checkpoint_events: int = Field(default=1000, ge=1, description="N: cut every N events")
    checkpoint_interval_ms: int = Field(default=1000, ge=0, description="T: or every T ms")
    max_in_flight: int = Field(default=8, ge=1, description="anchoring transactions at once")
    settle_blocks: int | None = Field(
        default=None, ge=0, description="blocks to wait on start for in-flight transactions"
    )
    fetch_max_records: int = Field(default=2000, ge=1)
    fetch_process: bool = Field(
        default=True,
        description="with Kafka, read the bus in a child process (fetching and decoding "
        "records, the costliest part of consuming, then run outside the relay's GIL); "
        "the embedded log is always read in the relay's process",
    )
    fetch_prefetch: int = Field(
        default=4,
        ge=1,
        description="with fetch_process, how many fetched batches the child keeps ready",
    )
    max_write_records: int = Field(
        default=20000, ge=1, description="at most this many events in one write of the log"
    )
    gc_threshold: int = Field(
        default=50_000,
        ge=0,
        description="Python's generation-0 collection threshold, set at start and given "
        "back at stop (0: keep Python's 700): consuming allocates several objects per "
        "event, and frequent young collections cost the relay about a fifth of its throughput",
    )
    consumer_group: str = CONSUMER_GROUP
    topics: list[str] = Field(default_factory=lambda: list(DOMAIN_TOPICS))
    topic_partitions: int = Field(default=3, ge=1)
    log_id: str = "ehr-audit-log"
    publish_interval_seconds: float = Field(default=0.2, gt=0)
    deployed_requires = (*ServiceSettings.deployed_requires, "chain_key")

    def policy(self) -> CheckpointPolicy:
        if self.mode == "baseline":
            return CheckpointPolicy(max_events=1, max_delay_ms=0)
        return CheckpointPolicy(self.checkpoint_events, self.checkpoint_interval_ms)


def anchor_is_deployed(chain: Chain, address: str) -> bool:
    """Whether this build's ``AuditAnchor`` is deployed at ``address`` on this chain.

    The code must be this build's: a data dir kept from an earlier version may
    record a contract with another storage layout and read API."""
    try:
        return chain.code(address) == load_artifact(ARTIFACT_NAME).runtime_code
    except (ChainError, ValueError):  # no chain answers, or not an address
        return False


def ensure_anchor(
    chain: Chain, account: LocalAccount, configured: str | None, repository: SqlLogRepository
) -> AuditAnchorLedger:
    """The anchor contract: configured, else recorded and still deployed, else new.

    Idempotent. A contract other than the recorded one holds none of the local
    checkpoints, so they are forgotten (the log itself is kept and anchored anew).
    """
    stored = repository.get_state(ANCHOR_ADDRESS_STATE)
    deployed = False
    if configured is not None:
        ledger = AuditAnchorLedger(chain, configured, account)
    elif stored is not None and anchor_is_deployed(chain, stored):
        ledger = AuditAnchorLedger(chain, stored, account)
    else:
        # A fresh chain may give the new contract the recorded address (same deployer
        # and nonce), so a deployment always means a contract without our checkpoints.
        ledger = AuditAnchorLedger.deploy(chain, account, account)
        deployed = True
        log.info("audit_anchor_deployed", address=ledger.address)
    if stored is not None and (deployed or stored.lower() != ledger.address.lower()):
        forgotten = repository.reset_checkpoints()
        log.warning("anchor_contract_changed", previous=stored, checkpoints_forgotten=forgotten)
    repository.set_state(ANCHOR_ADDRESS_STATE, ledger.address)
    return ledger


class LedgerRelayRuntime:
    """Everything the relay runs: adapters, the relay loop, the outbox, the app."""

    def __init__(
        self,
        settings: LedgerRelaySettings,
        *,
        crash_hook: CrashHook | None = None,
        chain: Chain | None = None,
        bus: EventBus | None = None,
    ) -> None:
        """``chain`` / ``bus`` may be passed in by a process that embeds several services
        (one in-process chain, one embedded log); the runtime then does not close them."""
        self.settings = settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.engine = database_engine(settings, "ledger.sqlite3")
        self.repository = SqlLogRepository(self.engine)
        self.repository.create_schema()

        self.bus: EventBus = bus or kafka_or_embedded(
            settings.kafka_bootstrap_servers, settings.data_dir
        )
        embedded_chain = is_embedded_chain(settings, chain)
        self.account: LocalAccount = chain_account(
            settings, RELAY_KEY_FILE, embedded=embedded_chain
        )
        self.chain: Chain
        self.chain, self._owns_chain = chain_or_inprocess(settings, self.account, chain)
        self.anchor = ensure_anchor(
            self.chain, self.account, settings.anchor_address, self.repository
        )
        settle = settings.settle_blocks
        if settle is None:
            settle = 0 if embedded_chain else 2
        self.config = RelayConfig(
            log_id=settings.log_id,
            group=settings.consumer_group,
            topics=tuple(settings.topics),
            partitions=settings.topic_partitions,
            policy=settings.policy(),
            max_in_flight=settings.max_in_flight,
            fetch_max_records=settings.fetch_max_records,
            max_write_records=settings.max_write_records,
            settle_blocks=settle,
            max_checkpoint_leaves=1 if settings.mode == "baseline" else None,
        )
        self.registry = CollectorRegistry()
        self.metrics = RelayMetrics(self.registry)
        self.publisher = OutboxPublisher(self.engine, self.bus)
        # One publish at a time: on PostgreSQL a publish holds its rows locked while its
        # single worker thread runs, so two concurrent publishes would wait on each other.
        self._outbox_lock = asyncio.Lock()
        self.relay = LedgerRelay(
            self.repository,
            self.anchor,
            self.bus,
            self.config,
            self.metrics,
            self.publish_outbox,
            crash_hook,
            self._consumer_factory(),
        )
        self.proofs = ProofService(self.repository)
        self.contract = AnchorContract(chain_id=self.anchor.chain_id, address=self.anchor.address)
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._gc_before: tuple[int, int, int] | None = None  # while started with gc_threshold
        self.app = self._build_app()

    def _consumer_factory(self) -> ConsumerFactory | None:
        """A consumer in a child process when reading Kafka with ``fetch_process``; else
        ``None`` (the bus's own consumer)."""
        bus = self.bus
        if not (self.settings.fetch_process and isinstance(bus, KafkaEventBus)):
            return None
        max_records, prefetch = self.settings.fetch_max_records, self.settings.fetch_prefetch

        def consumer(group: str, topics: list[str]) -> ProcessConsumer:
            return ProcessConsumer(
                bus.bootstrap_servers, group, topics, bus.client_id, max_records, prefetch
            )

        return consumer

    def _build_app(self) -> FastAPI:
        async def database() -> None:
            await run_in_threadpool(self.repository.ping)

        async def chain() -> None:
            await run_in_threadpool(self.anchor.block_number)

        async def relay_loop() -> None:
            failed = [t for t in self._tasks if t.done() and not t.cancelled() and t.exception()]
            if failed or not self._tasks:
                raise RuntimeError("the relay loop is not running")

        return create_app(
            self.settings,
            [proofs_router(self.proofs, self.contract)],
            {"database": database, "chain": chain, "relay": relay_loop},
            registry=self.registry,
            error_map=ERROR_MAP,
            lifespan=lifespan_of(self.start, self.stop),
        )

    async def start(self) -> None:
        """Starts the bus, reconciles the log with the chain, starts the loops."""
        self._stop.clear()
        if self.settings.gc_threshold and self._gc_before is None:
            self._gc_before = gc.get_threshold()
            gc.set_threshold(self.settings.gc_threshold, *self._gc_before[1:])
        await self.bus.start()
        await self.relay.open()
        self._tasks = [
            asyncio.create_task(self._run_relay()),
            # retries what the relay's own publish after each checkpoint could not send
            asyncio.create_task(
                every(
                    self._stop,
                    self.settings.publish_interval_seconds,
                    self.publish_outbox,
                    "outbox_publish_failed",
                )
            ),
        ]

    async def publish_outbox(self) -> int:
        """Publishes the pending checkpoint-anchored events (one publish at a time)."""
        async with self._outbox_lock:
            return await self.publisher.publish_pending()

    async def _run_relay(self) -> None:
        try:
            await self.relay.run(self._stop)
        except Exception:
            log.exception("relay_loop_failed")
            raise

    async def wait(self) -> None:
        """Returns when a loop ends (it only does on ``stop`` or a fatal error)."""
        await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)

    async def stop(self) -> None:
        """Stops the loops and the bus; gives the process back its collection threshold."""
        await stop_workers(self._stop, self._tasks)
        with contextlib.suppress(Exception):
            await self.publish_outbox()
        await self.bus.close()
        if self._gc_before is not None:
            gc.set_threshold(*self._gc_before)
            self._gc_before = None

    def close(self) -> None:
        """Releases what ``__init__`` opened (after ``stop``)."""
        self.publisher.close()
        if self._owns_chain:
            self.chain.close()
        self.engine.dispose()


def build_app(settings: LedgerRelaySettings | None = None) -> FastAPI:
    """The ASGI app (``uvicorn --factory services.ledger_relay.main:build_app``)."""
    return LedgerRelayRuntime(settings or LedgerRelaySettings()).app


def main(crash_hook: CrashHook | None = None) -> None:
    run_service(
        LedgerRelaySettings,
        lambda settings: LedgerRelayRuntime(settings, crash_hook=crash_hook),
    )


if __name__ == "__main__":
    main()
