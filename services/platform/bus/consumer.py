"""The idempotent consumer runner: each event's effect is applied once, however often it arrives.

For every record the runner opens one database transaction that checks the
``bus_processed_events`` table, runs the handler (the effect) and records the
event id; offsets are committed only after those transactions committed. A
redelivered record (consumer restart before commit, or an outbox duplicate)
finds its id already recorded and is skipped.

If the handler raises, its effect and its processed row roll back together.
A transient failure (see ``quarantine.is_transient``: a dependency is down)
leaves the offset uncommitted and rewinds the partition, so the record comes
again on the next fetch. A permanent failure (the record itself cannot be
applied) quarantines the record: one transaction writes its processed marker and
its ``bus_quarantined_events`` row, and the group moves past it. The marker makes
the quarantine exactly-once like an effect: a redelivered quarantined record is a
duplicate, never a second row. One bad record therefore never stops a projection.
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
from prometheus_client import CollectorRegistry

from .errors import CommitError, HandlerFailedError
from .port import BusConsumer, Record
from .quarantine import (
    TransientCheck,
    is_transient,
    position_event_id,
    quarantine_counter,
    quarantine_row,
    stored_event_id,
)
from .schema import (
    create_processed_events_table,
    processed_events_table,
    processed_metadata,
    quarantined_events_table,
)

Handler = Callable[[sa.Connection, Record], None]
"""Applies one record's effect on the given connection (inside the runner's transaction)."""

EventIdOf = Callable[[Record], str]

log = structlog.get_logger(__name__)


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
    quarantined: int = 0


@dataclass(slots=True)
class _Progress:
    """How far ``_apply_all`` got through a batch, and what stopped it."""

    applied: int = 0
    duplicates: int = 0
    quarantined: int = 0
    failure: Exception | None = None

    @property
    def done(self) -> int:
        return self.applied + self.duplicates + self.quarantined


class IdempotentConsumer:
    """Runs ``handler`` once per event id for consumer ``name``, committing after the effect.

    ``transient`` tells a failure worth retrying from a record to quarantine (default
    ``is_transient``). With a ``registry``, quarantined records are counted in
    ``bus_quarantined_events_total{consumer, topic}``.
    """

    def __init__(
        self,
        name: str,
        consumer: BusConsumer,
        engine: sa.Engine,
        handler: Handler,
        event_id: EventIdOf = value_digest,
        *,
        transient: TransientCheck = is_transient,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.name = name
        self.consumer = consumer
        self.engine = engine
        self.handler = handler
        self.event_id = event_id
        self.transient = transient
        self._quarantined = None if registry is None else quarantine_counter(registry)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"consumer-{name}")

    def close(self) -> None:
        """Stops the worker thread (the bus consumer is the caller's; see ``aclose``)."""
        self._executor.shutdown(wait=True)

    async def aclose(self) -> None:
        """Closes the bus consumer, then the worker thread (after ``run`` has returned)."""
        await self.consumer.close()
        self.close()

    async def process_batch(self, max_records: int = 500, timeout_s: float = 1.0) -> BatchOutcome:
        """Fetches one batch, applies (or quarantines) each new event in its own
        transaction, then commits.

        Raises ``HandlerFailedError`` on a transient failure: the records before it are
        done and committed; that record and the rest are fetched again.
        """
        records = await self.consumer.fetch(max_records=max_records, timeout_s=timeout_s)
        if not records:
            return BatchOutcome(0, 0)
        loop = asyncio.get_running_loop()
        progress = await loop.run_in_executor(self._executor, self._apply_all, records)
        done = records[: progress.done]
        await self.consumer.commit_records(done)
        if progress.failure is not None:
            rest = records[len(done) :]
            for (topic, partition), offset in _first_offsets(rest).items():
                await self.consumer.seek(topic, partition, offset)
            failed = rest[0]
            raise HandlerFailedError(
                f"{self.name}: transient failure on {failed.topic}/{failed.partition}"
                f"@{failed.offset}: {progress.failure!r}"
            ) from progress.failure
        return BatchOutcome(progress.applied, progress.duplicates, progress.quarantined)

    def _apply_all(self, records: Sequence[Record]) -> _Progress:
        progress = _Progress()
        for record in records:
            try:
                if self._apply(record):
                    progress.applied += 1
                else:
                    progress.duplicates += 1
                continue
            except Exception as exc:
                if self.transient(exc):
                    progress.failure = exc
                    return progress
                error = exc
            try:
                if self._quarantine(record, error):
                    progress.quarantined += 1
                else:
                    progress.duplicates += 1
            except Exception as exc:
                # The quarantine itself could not be written (the database went away):
                # nothing moved, so the record comes again like after a transient failure.
                log.warning(
                    "consumer.quarantine_failed",
                    consumer=self.name,
                    topic=record.topic,
                    partition=record.partition,
                    offset=record.offset,
                    error_type=type(exc).__name__,
                )
                progress.failure = exc
                return progress
        return progress

    def _seen(self, connection: sa.Connection, event_id: str) -> bool:
        table = processed_events_table
        found = connection.execute(
            sa.select(table.c.event_id).where(
                table.c.consumer == self.name, table.c.event_id == event_id
            )
        ).first()
        return found is not None

    def _mark_processed(self, connection: sa.Connection, event_id: str, record: Record) -> None:
        connection.execute(
            processed_events_table.insert().values(
                consumer=self.name,
                event_id=event_id,
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
                processed_at=datetime.now(UTC),
            )
        )

    def _apply(self, record: Record) -> bool:
        """One transaction: effect + processed row. False when the event was seen before."""
        event_id = stored_event_id(self.event_id(record))
        try:
            with self.engine.begin() as connection:
                if self._seen(connection, event_id):
                    return False
                self.handler(connection, record)
                self._mark_processed(connection, event_id, record)
        except sa.exc.IntegrityError:
            # Another member recorded this id meanwhile; our effect was rolled back.
            with self.engine.connect() as connection:
                if not self._seen(connection, event_id):
                    raise
            return False
        return True

    def _quarantine_id(self, record: Record) -> str:
        try:
            return stored_event_id(self.event_id(record))
        except Exception:
            return position_event_id(record)  # no readable id: the position names it

    def _quarantine(self, record: Record, error: Exception) -> bool:
        """One transaction: processed row + quarantine row. False when seen before."""
        event_id = self._quarantine_id(record)
        row = quarantine_row(self.name, event_id, record, error)
        try:
            with self.engine.begin() as connection:
                if self._seen(connection, event_id):
                    return False
                self._mark_processed(connection, event_id, record)
                connection.execute(quarantined_events_table.insert().values(**row))
        except sa.exc.IntegrityError:
            with self.engine.connect() as connection:
                if not self._seen(connection, event_id):
                    raise
            return False
        if self._quarantined is not None:
            self._quarantined.labels(consumer=self.name, topic=record.topic).inc()
        log.error(
            "consumer.record_quarantined",
            consumer=self.name,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            event_id=event_id,
            error_type=row["error_type"],
            error=row["error_message"],
            value_size=row["value_size"],
            value_sha256=row["value_sha256"],
        )
        return True

    async def run(self, stop: asyncio.Event, retry_delay_s: float = 1.0) -> None:
        """Processes batches until ``stop`` is set; a transient failure or a refused commit is
        retried after ``retry_delay_s``."""
        while not stop.is_set():
            try:
                await self.process_batch(timeout_s=0.5)
            except (HandlerFailedError, CommitError) as exc:
                # A commit refused by a rebalance loses nothing: what was not committed
                # comes again and is found processed.
                log.warning(
                    "consumer.retrying",
                    consumer=self.name,
                    error_type=type(exc).__name__,
                    error=str(exc),
                )
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
    "EventIdOf",
    "Handler",
    "IdempotentConsumer",
    "create_processed_events_table",
    "header_event_id",
    "processed_events_table",
    "processed_metadata",
    "quarantined_events_table",
    "value_digest",
]
