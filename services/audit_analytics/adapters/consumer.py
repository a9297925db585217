"""The audit store's consumer: every topic, every position, the exact bytes."""

from __future__ import annotations

import hashlib

import sqlalchemy as sa

from services.audit_analytics.adapters.sql import SqlAuditRepository
from services.audit_analytics.domain.model import BusPosition
from services.audit_analytics.domain.records import audit_record_of
from services.platform.bus.consumer import IdempotentConsumer
from services.platform.bus.port import BusConsumer, Record
from services.platform.events.errors import EventError

CONSUMER_NAME = "audit-store"


def position_id(record: Record) -> str:
    """One effect per bus position: a duplicate at another offset is still accounted for."""
    return f"{record.topic}/{record.partition}@{record.offset}"


def store_record(connection: sa.Connection, record: Record) -> None:
    """The effect: the event with its bytes, hash and position (or just the position)."""
    position = BusPosition(record.topic, record.partition, record.offset)
    try:
        audit = audit_record_of(record.value, position)
    except EventError:
        SqlAuditRepository.store_position(
            connection, position, hashlib.sha256(record.value).digest()
        )
        return
    SqlAuditRepository.store(connection, audit, record.value)


def audit_consumer(consumer: BusConsumer, engine: sa.Engine) -> IdempotentConsumer:
    return IdempotentConsumer(CONSUMER_NAME, consumer, engine, store_record, position_id)
