"""The transactional outbox: a service stores its state and its outgoing events together.

``OutboxWriter.append`` inserts events into ``bus_outbox`` on the caller's own
connection, inside the caller's transaction: a rolled-back transaction leaves
no event behind, a committed one always publishes. ``OutboxPublisher`` then
publishes pending rows in id order with the bus (idempotent producer) and marks
them published. A crash between publish and mark republishes the same bytes
once more; idempotent consumers (``consumer.py``) absorb that duplicate.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import TypeVar

import sqlalchemy as sa

from .port import EventBus, Message, Position, decode_headers, encode_headers

T = TypeVar("T")

outbox_metadata = sa.MetaData()

outbox_table = sa.Table(
    "bus_outbox",
    outbox_metadata,
    sa.Column(
        "id",
        sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("topic", sa.String(249), nullable=False),
    sa.Column("key", sa.String(512), nullable=False),
    sa.Column("value", sa.LargeBinary(), nullable=False),
    sa.Column("headers", sa.LargeBinary(), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
    sa.Index("ix_bus_outbox_pending", "published_at", "id"),
)


def create_outbox_table(engine: sa.Engine) -> None:
    """Creates ``bus_outbox`` if it does not exist (services may use their own migrations)."""
    outbox_metadata.create_all(engine)


class OutboxWriter:
    """Adds outgoing events to the outbox inside the caller's transaction."""

    def append(self, connection: sa.Connection, messages: Sequence[Message]) -> None:
        if not messages:
            return
        now = datetime.now(UTC)
        connection.execute(
            outbox_table.insert(),
            [
                {
                    "topic": m.topic,
                    "key": m.key,
                    "value": bytes(m.value),
                    "headers": encode_headers(m.headers),
                    "created_at": now,
                }
                for m in messages
            ],
        )


class OutboxPublisher:
    """Publishes pending outbox rows in order and marks them published.

    On PostgreSQL the pending rows stay locked (``FOR UPDATE``) from selection to
    marking, so two publishers never publish the same rows concurrently. On
    SQLite (one process) the selection and the marking are short transactions,
    so the service's writers are never blocked during a publish.
    """

    def __init__(self, engine: sa.Engine, bus: EventBus, batch_size: int = 500) -> None:
        self.engine = engine
        self.bus = bus
        self.batch_size = batch_size
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="outbox")

    def close(self) -> None:
        self._executor.shutdown(wait=True)

    async def _in_thread(self, work: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, work)

    async def publish_pending(self) -> int:
        """Publishes everything pending now; returns how many rows were published."""
        total = 0
        while True:
            published = await self.publish_batch()
            total += published
            if published < self.batch_size:
                return total

    async def publish_batch(self) -> int:
        """Publishes up to ``batch_size`` pending rows; returns how many."""
        hold_lock = self.engine.dialect.name != "sqlite"
        connection = await self._in_thread(self.engine.connect)
        try:
            transaction = await self._in_thread(connection.begin)
            query = (
                sa.select(outbox_table)
                .where(outbox_table.c.published_at.is_(None))
                .order_by(outbox_table.c.id)
                .limit(self.batch_size)
            )
            if hold_lock:
                query = query.with_for_update()
            rows = await self._in_thread(lambda: connection.execute(query).all())
            if not hold_lock:
                await self._in_thread(transaction.commit)
            if not rows:
                return 0
            await self.publish_rows(rows)
            ids = [row.id for row in rows]

            def mark() -> None:
                if not hold_lock:
                    connection.begin()
                connection.execute(
                    outbox_table.update()
                    .where(outbox_table.c.id.in_(ids))
                    .values(published_at=datetime.now(UTC))
                )
                connection.commit()

            await self._in_thread(mark)
            return len(rows)
        finally:
            await self._in_thread(connection.close)  # rolls back anything left open

    async def publish_rows(self, rows: Sequence[sa.Row[tuple[object, ...]]]) -> list[Position]:
        return await self.bus.publish_many(
            [
                Message(row.topic, row.key, bytes(row.value), decode_headers(bytes(row.headers)))
                for row in rows
            ]
        )

    async def run(self, stop: asyncio.Event, poll_interval_s: float = 0.2) -> None:
        """Publishes until ``stop`` is set, polling the outbox every ``poll_interval_s``."""
        while not stop.is_set():
            if await self.publish_pending() == 0:
                try:
                    await asyncio.wait_for(stop.wait(), poll_interval_s)
                except TimeoutError:
                    continue
