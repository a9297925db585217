"""The idempotent consumer runner: each event's effect is applied once, however often it arrives.

For every record the runner opens one database transaction that checks the
``bus_processed_events`` table, runs the handler (the effect) and records the
event id; offsets are committed only after those transactions committed. A
redelivered record (consumer restart before commit, or an outbox duplicate)
finds its id already recorded and is skipped. If the handler raises, its
effect and its processed row roll back together, the offset is not committed
and the partition is rewound, so the record comes again on the next fetch.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
import structlog

from .errors import HandlerFailedError
from .port import BusConsumer, Record

processed_metadata = sa.MetaData()

processed_events_table = sa.Table(
    "bus_processed_events",
    processed_metadata,
    sa.Column("consumer", sa.String(200), primary_key=True),
    sa.Column("event_id", sa.String(200), primary_key=True),
    sa.Column("topic", sa.String(249), nullable=False),
    sa.Column("partition", sa.Integer(), nullable=False),
    sa.Column("offset", sa.BigInteger(), nullable=False),
    sa.Column("processed_at", sa.DateTime(timezone=True), nullable=False),
)

Handler = Callable[[sa.Connection, Record], None]
"""Applies one record's effect on the given connection (inside the runner's transaction)."""

EventIdOf = Callable[[Record], str]

log = structlog.get_logger(__name__)


def create_processed_events_table(engine: sa.Engine) -> None:
    processed_metadata.create_all(engine)


def value_digest(record: Record) -> str:
    """SHA-256 of the published bytes: an outbox duplicate carries the very same bytes."""
    return hashlib.sha256(record.value).hexdigest()


def header_event_id(name: str) -> EventIdOf:
    """Reads the event id from header ``name``."""

    def event_id(record: Record) -> str:
        return dict(record.headers)[name].decode()

    return event_id


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    """What one ``process_batch`` did."""

    applied: int
    duplicates: int


class IdempotentConsumer:
    """Runs ``handler`` once per event id for consumer ``name``, committing after the effect."""

    def __init__(
        self,
        name: str,
        consumer: BusConsumer,
        engine: sa.Engine,
        handler: Handler,
        event_id: EventIdOf = value_digest,
    ) -> None:
        self.name = name
        self.consumer = consumer
        self.engine = engine
        self.handler = handler
        self.event_id = event_id
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"consumer-{name}")

    def close(self) -> None:
        """Stops the worker thread (the bus consumer is the caller's; see ``aclose``)."""
        self._executor.shutdown(wait=True)

    async def aclose(self) -> None:
        """Closes the bus consumer, then the worker thread (after ``run`` has returned)."""
        await self.consumer.close()
        self.close()

    async def process_batch(self, max_records: int = 500, timeout_s: float = 1.0) -> BatchOutcome:
        """Fetches one batch, applies each new event in its own transaction, then commits.

        Raises ``HandlerFailedError`` when a handler fails: the records before it
        are done and committed; that record and the rest are fetched again.
        """
        records = await self.consumer.fetch(max_records=max_records, timeout_s=timeout_s)
        if not records:
            return BatchOutcome(0, 0)
        loop = asyncio.get_running_loop()
        applied, duplicates, failure = await loop.run_in_executor(
            self._executor, self._apply_all, records
        )
        done = records[: applied + duplicates]
        await self.consumer.commit_records(done)
        if failure is not None:
            rest = records[len(done) :]
            for (topic, partition), offset in _first_offsets(rest).items():
                await self.consumer.seek(topic, partition, offset)
            failed = rest[0]
            raise HandlerFailedError(
                f"{self.name}: handler failed on {failed.topic}/{failed.partition}"
                f"@{failed.offset}: {failure!r}"
            ) from failure
        return BatchOutcome(applied, duplicates)

    def _apply_all(self, records: Sequence[Record]) -> tuple[int, int, Exception | None]:
        applied = duplicates = 0
        for record in records:
            try:
                if self._apply(record):
                    applied += 1
                else:
                    duplicates += 1
            except Exception as exc:
                return applied, duplicates, exc
        return applied, duplicates, None

    def _apply(self, record: Record) -> bool:
        """One transaction: effect + processed row. False when the event was seen before."""
        event_id = self.event_id(record)
        table = processed_events_table
        try:
            with self.engine.begin() as connection:
                seen = connection.execute(
                    sa.select(table.c.event_id).where(
                        table.c.consumer == self.name, table.c.event_id == event_id
                    )
                ).first()
                if seen is not None:
                    return False
                self.handler(connection, record)
                connection.execute(
                    table.insert().values(
                        consumer=self.name,
                        event_id=event_id,
                        topic=record.topic,
                        partition=record.partition,
                        offset=record.offset,
                        processed_at=datetime.now(UTC),
                    )
                )
        except sa.exc.IntegrityError:
            # Another member recorded this id meanwhile; our effect was rolled back.
            with self.engine.connect() as connection:
                seen = connection.execute(
                    sa.select(table.c.event_id).where(
                        table.c.consumer == self.name, table.c.event_id == event_id
                    )
                ).first()
            if seen is None:
                raise
            return False
        return True

    async def run(self, stop: asyncio.Event, retry_delay_s: float = 1.0) -> None:
        """Processes batches until ``stop`` is set; a failed handler is retried later."""
        while not stop.is_set():
            try:
                await self.process_batch(timeout_s=0.5)
            except HandlerFailedError as exc:
                log.warning("consumer.handler_failed", consumer=self.name, error=str(exc))
                try:
                    await asyncio.wait_for(stop.wait(), retry_delay_s)
                except TimeoutError:
                    continue


def _first_offsets(records: Sequence[Record]) -> dict[tuple[str, int], int]:
    first: dict[tuple[str, int], int] = {}
    for record in records:
        first.setdefault((record.topic, record.partition), record.offset)
    return first


__all__ = [
    "BatchOutcome",
    "Handler",
    "IdempotentConsumer",
    "create_processed_events_table",
    "header_event_id",
    "processed_events_table",
    "value_digest",
]
