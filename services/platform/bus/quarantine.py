"""Records a consumer cannot apply: how failures are told apart, kept, counted and listed.

A handler failure is *transient* when a dependency is unavailable for now (the
database, the network, a timeout, or a handler's explicit ``TransientHandlerError``):
the record is retried, as the outage will pass. Every other failure is *permanent*:
the record itself cannot be applied (undecodable bytes, an invalid envelope, a value
the database refuses, a broken domain rule), and retrying it would only stop the
consumer group for good. The runner quarantines such a record: a row here, written
in the same transaction as its processed marker, and the group moves past it.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import weakref
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from prometheus_client import CollectorRegistry, Counter

from services.platform.readiness import Degraded

from .errors import TransientHandlerError
from .port import Headers, Record
from .schema import (
    MAX_ERROR_MESSAGE_CHARS,
    MAX_ERROR_TYPE_CHARS,
    MAX_EVENT_ID_CHARS,
    quarantined_events_table,
)

MAX_KEPT_VALUE_BYTES = 64 * 1024
"""A quarantined value up to this size is kept whole; a larger one by its digest and size."""

MAX_KEPT_HEADERS_CHARS = 16 * 1024
"""Headers whose JSON form is longer are not kept (the value's digest still identifies it)."""


def _transient_types() -> tuple[type[BaseException], ...]:
    types: list[type[BaseException]] = [
        TransientHandlerError,
        sa.exc.OperationalError,  # connection lost, database locked, deadlock, serialization
        sa.exc.InterfaceError,
        sa.exc.DisconnectionError,
        sa.exc.TimeoutError,  # no pooled connection in time
        OSError,
        TimeoutError,
    ]
    try:
        import httpx
    except ImportError:  # pragma: no cover - httpx is a dependency of the services
        pass
    else:
        types.append(httpx.TransportError)
    return tuple(types)


TRANSIENT_ERRORS: tuple[type[BaseException], ...] = _transient_types()


def _chain(error: BaseException) -> Iterator[BaseException]:
    """``error`` and what it was raised from or while handling, as a traceback shows them."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        if current.__cause__ is not None:
            current = current.__cause__
        elif not current.__suppress_context__:
            current = current.__context__
        else:
            current = None


def is_transient(error: BaseException) -> bool:
    """True when ``error``, or the error it was raised from, says a dependency is down.

    A handler that wraps an outage in its own error (``raise Unavailable() from exc``)
    stays transient; a database error that invalidated the connection is transient too.
    """
    for link in _chain(error):
        if isinstance(link, TRANSIENT_ERRORS):
            return True
        if isinstance(link, sa.exc.DBAPIError) and link.connection_invalidated:
            return True
    return False


TransientCheck = Callable[[BaseException], bool]


def stored_event_id(event_id: str) -> str:
    """The event id as stored: itself when short and printable, else its SHA-256.

    A producer chooses the ids (a header, a payload field); one too long for the column
    or carrying NUL or control characters must not make the marker itself unwritable.
    """
    if 0 < len(event_id) <= MAX_EVENT_ID_CHARS and event_id.isprintable():
        return event_id
    return "sha256:" + hashlib.sha256(event_id.encode("utf-8", "surrogatepass")).hexdigest()


def position_event_id(record: Record) -> str:
    """The id of a record whose own id cannot be read: its position on the bus."""
    return stored_event_id(f"position:{record.topic}/{record.partition}@{record.offset}")


def _bounded_text(text: str, limit: int) -> str:
    """``text`` with NUL, control characters and lone surrogates escaped, at most ``limit``."""
    safe = "".join(
        c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
        for c in text.encode("utf-8", "backslashreplace").decode("utf-8")
    )
    if len(safe) <= limit:
        return safe
    return safe[: limit - 1] + "…"


def _headers_json(headers: Headers) -> str | None:
    text = json.dumps([[name, base64.b64encode(value).decode("ascii")] for name, value in headers])
    return text if len(text) <= MAX_KEPT_HEADERS_CHARS else None


def quarantine_row(
    consumer: str, event_id: str, record: Record, error: BaseException
) -> dict[str, Any]:
    """The quarantine row of ``record``: every field bounded, so it can always be written."""
    error_type = type(error)
    return {
        "consumer": consumer,
        "event_id": event_id,
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "error_type": _bounded_text(
            f"{error_type.__module__}.{error_type.__qualname__}", MAX_ERROR_TYPE_CHARS
        ),
        "error_message": _bounded_text(str(error), MAX_ERROR_MESSAGE_CHARS),
        "value": record.value if len(record.value) <= MAX_KEPT_VALUE_BYTES else None,
        "value_size": len(record.value),
        "value_sha256": hashlib.sha256(record.value).hexdigest(),
        "headers": _headers_json(record.headers),
        "quarantined_at": datetime.now(UTC),
    }


@dataclass(frozen=True, slots=True)
class QuarantinedEvent:
    """One record a consumer could not apply and moved past."""

    consumer: str
    event_id: str
    topic: str
    partition: int
    offset: int
    error_type: str
    error_message: str
    value: bytes | None
    """The exact bytes, or None when larger than ``MAX_KEPT_VALUE_BYTES``."""
    value_size: int
    value_sha256: str
    headers: Headers | None
    """The record's headers, or None when too large to keep."""
    quarantined_at: datetime


def _event_of(row: sa.Row[Any]) -> QuarantinedEvent:
    headers: Headers | None = None
    if row.headers is not None:
        headers = tuple((name, base64.b64decode(value)) for name, value in json.loads(row.headers))
    at: datetime = row.quarantined_at
    return QuarantinedEvent(
        consumer=row.consumer,
        event_id=row.event_id,
        topic=row.topic,
        partition=row.partition,
        offset=row.offset,
        error_type=row.error_type,
        error_message=row.error_message,
        value=None if row.value is None else bytes(row.value),
        value_size=row.value_size,
        value_sha256=row.value_sha256,
        headers=headers,
        quarantined_at=at if at.tzinfo is not None else at.replace(tzinfo=UTC),
    )


def quarantined(engine: sa.Engine, consumer: str, limit: int = 100) -> list[QuarantinedEvent]:
    """The records ``consumer`` quarantined, oldest first (at most ``limit``)."""
    table = quarantined_events_table
    with engine.connect() as connection:
        rows = connection.execute(
            sa.select(table)
            .where(table.c.consumer == consumer)
            .order_by(table.c.quarantined_at, table.c.topic, table.c.partition, table.c.offset)
            .limit(limit)
        ).all()
    return [_event_of(row) for row in rows]


def quarantined_count(engine: sa.Engine, consumer: str) -> int:
    """How many records ``consumer`` has quarantined and the operator has not dismissed."""
    table = quarantined_events_table
    with engine.connect() as connection:
        count = connection.scalar(
            sa.select(sa.func.count()).select_from(table).where(table.c.consumer == consumer)
        )
    return int(count or 0)


def dismiss_quarantined(engine: sa.Engine, consumer: str, event_id: str) -> bool:
    """Forgets one quarantined record once the operator has dealt with it.

    Its processed marker stays, so a redelivery is still skipped. False when there was
    no such row.
    """
    table = quarantined_events_table
    with engine.begin() as connection:
        deleted = connection.execute(
            table.delete().where(table.c.consumer == consumer, table.c.event_id == event_id)
        )
    return deleted.rowcount > 0


def quarantine_readiness(engine: sa.Engine, consumer: str) -> Callable[[], Awaitable[None]]:
    """A readiness check: ``Degraded("N records quarantined ...")`` while ``consumer`` has any.

    The service keeps serving (the projection is current but for those records); the
    operator lists them with ``quarantined`` and dismisses them when dealt with.
    """

    async def check() -> None:
        count = await asyncio.to_thread(quarantined_count, engine, consumer)
        if count:
            raise Degraded(f"{count} records quarantined by consumer {consumer}")

    return check


_counters: weakref.WeakKeyDictionary[CollectorRegistry, Counter] = weakref.WeakKeyDictionary()


def quarantine_counter(registry: CollectorRegistry) -> Counter:
    """The ``bus_quarantined_events_total{consumer, topic}`` counter of ``registry``.

    One per registry, however many consumers (or restarts) share it.
    """
    counter = _counters.get(registry)
    if counter is None:
        counter = Counter(
            "bus_quarantined_events",
            "Records a bus consumer could not apply and quarantined",
            ["consumer", "topic"],
            registry=registry,
        )
        _counters[registry] = counter
    return counter


__all__ = [
    "MAX_KEPT_HEADERS_CHARS",
    "MAX_KEPT_VALUE_BYTES",
    "TRANSIENT_ERRORS",
    "QuarantinedEvent",
    "TransientCheck",
    "dismiss_quarantined",
    "is_transient",
    "position_event_id",
    "quarantine_counter",
    "quarantine_readiness",
    "quarantine_row",
    "quarantined",
    "quarantined_count",
    "stored_event_id",
]
