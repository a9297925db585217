"""The audit store on SQL (SQLite on the embedded default, PostgreSQL on the real stack)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from services.audit_analytics.domain.errors import FindingNotFound
from services.audit_analytics.domain.model import (
    Agent,
    AuditRecord,
    AuditRepository,
    BusPosition,
    Entity,
    Finding,
    Page,
    PositionRow,
    SearchQuery,
    StoredEvent,
)
from services.platform.bus.consumer import create_processed_events_table
from services.platform.bus.outbox import OutboxWriter, create_outbox_table, outbox_table
from services.platform.bus.port import Message

metadata = sa.MetaData()

events_table = sa.Table(
    "audit_events",
    metadata,
    sa.Column(
        "sequence",
        sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("event_id", sa.String(64), nullable=False, index=True),
    sa.Column("event_hash", sa.LargeBinary(32), nullable=False, index=True),
    sa.Column("raw", sa.LargeBinary(), nullable=False),
    sa.Column("topic", sa.String(249), nullable=False),
    sa.Column("partition", sa.Integer(), nullable=False),
    sa.Column("offset", sa.BigInteger(), nullable=False),
    sa.Column("type", sa.String(120), nullable=False, index=True),
    sa.Column("outcome", sa.String(40), nullable=False),
    sa.Column("patient_id", sa.String(200), nullable=False),
    sa.Column("actor_id", sa.String(200), nullable=False),
    sa.Column("recorded_us", sa.BigInteger(), nullable=False, index=True),
    sa.Column("detail", sa.Text(), nullable=False),
    sa.Column("proof", sa.Text(), nullable=True),
    sa.Index("ix_audit_events_patient_sequence", "patient_id", "sequence"),
    sa.Index("ix_audit_events_actor_sequence", "actor_id", "sequence"),
    sa.Index("ix_audit_events_patient_time", "patient_id", "recorded_us"),
    # The proof loop asks for events without a proof every second: only those are indexed.
    sa.Index(
        "ix_audit_events_without_proof",
        "sequence",
        postgresql_where=sa.text("proof IS NULL"),
        sqlite_where=sa.text("proof IS NULL"),
    ),
)

positions_table = sa.Table(
    "audit_positions",
    metadata,
    sa.Column("topic", sa.String(249), primary_key=True),
    sa.Column("partition", sa.Integer(), primary_key=True),
    sa.Column("offset", sa.BigInteger(), primary_key=True),
    sa.Column("event_hash", sa.LargeBinary(32), nullable=False),
    sa.Column("kind", sa.String(20), nullable=False),
)

findings_table = sa.Table(
    "audit_findings",
    metadata,
    sa.Column("finding_id", sa.String(64), primary_key=True),
    sa.Column("rule", sa.String(80), nullable=False, index=True),
    sa.Column("severity", sa.String(20), nullable=False),
    sa.Column("patient_id", sa.String(200), nullable=False),
    sa.Column("account_id", sa.String(200), nullable=False),
    sa.Column("event_ids", sa.Text(), nullable=False),
    sa.Column("score", sa.Float(), nullable=False),
    sa.Column("explanation", sa.Text(), nullable=False),
    sa.Column("detected_us", sa.BigInteger(), nullable=False),
    sa.Column("disposition", sa.String(40), nullable=False, default=""),
    sa.Column("reviewed_by", sa.String(200), nullable=False, default=""),
    sa.Column("reviewed_us", sa.BigInteger(), nullable=True),
)

break_glass_reviews_table = sa.Table(
    "audit_break_glass_reviews",
    metadata,
    sa.Column("break_glass_id", sa.String(200), primary_key=True),
    sa.Column("disposition", sa.String(40), nullable=False),
    sa.Column("reviewed_by", sa.String(200), nullable=False),
    sa.Column("reviewed_us", sa.BigInteger(), nullable=False),
)

state_table = sa.Table(
    "audit_state",
    metadata,
    sa.Column("key", sa.String(100), primary_key=True),
    sa.Column("value", sa.Text(), nullable=False),
)


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)


def micros(at: datetime) -> int:
    """Exact integer arithmetic: reconciliation compares stored instants with the ones the
    verified bytes carry, so a float round trip must not move them by a microsecond."""
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return (at - EPOCH) // MICROSECOND


def from_micros(value: int) -> datetime:
    return EPOCH + value * MICROSECOND


def _detail(record: AuditRecord) -> str:
    return json.dumps(
        {
            "subtype": record.subtype,
            "action": record.action,
            "source": record.source,
            "agents": [asdict(a) for a in record.agents],
            "entities": [asdict(e) for e in record.entities],
            "purpose_of_use": record.purpose_of_use,
            "justification": record.justification,
            "reason": record.reason,
            "correlation_id": record.correlation_id,
            "extra": record.extra,
        }
    )


def _event_row(record: AuditRecord, raw: bytes) -> dict[str, Any]:
    assert record.position is not None
    position = record.position
    return {
        "event_id": record.event_id,
        "event_hash": record.event_hash,
        "raw": raw,
        "topic": position.topic,
        "partition": position.partition,
        "offset": position.offset,
        "type": record.type,
        "outcome": record.outcome,
        "patient_id": record.patient_id,
        "actor_id": record.actor_id,
        "recorded_us": micros(record.recorded_at),
        "detail": _detail(record),
    }


_DERIVED_EVENT_COLUMNS = (
    "event_id",
    "event_hash",
    "type",
    "outcome",
    "patient_id",
    "actor_id",
    "recorded_us",
    "detail",
)
"""The columns of ``audit_events`` derived from the event's bytes (``raw`` is the bytes; the
position is checked against ``audit_positions``)."""

LoadItem = tuple[AuditRecord, bytes, dict[str, Any] | None]
_LOAD_POSITION_COLUMNS = ("topic", "partition", "offset", "event_hash", "kind")
_LOAD_EVENT_COLUMNS = (
    "event_id",
    "event_hash",
    "raw",
    "topic",
    "partition",
    "offset",
    "type",
    "outcome",
    "patient_id",
    "actor_id",
    "recorded_us",
    "detail",
    "proof",
)


def _bulk_insert(
    connection: sa.Connection,
    table: sa.Table,
    columns: Sequence[str],
    rows: Sequence[tuple[Any, ...]],
) -> None:
    """Inserts plain tuples in the connection's transaction: ``COPY`` on PostgreSQL."""
    if not rows:
        return
    names = ", ".join(f'"{c}"' for c in columns)
    if connection.dialect.name == "postgresql":
        driver: Any = connection.connection.driver_connection  # psycopg, same transaction
        with (
            driver.cursor() as cursor,
            cursor.copy(f"COPY {table.name} ({names}) FROM STDIN") as copy,
        ):
            for row in rows:
                copy.write_row(row)
        return
    marks = ", ".join("?" * len(columns))
    connection.exec_driver_sql(f"INSERT INTO {table.name} ({names}) VALUES ({marks})", list(rows))


UNREADABLE_DETAIL: dict[str, Any] = {
    "subtype": "",
    "action": "",
    "source": "",
    "agents": [],
    "entities": [],
    "purpose_of_use": "",
    "justification": "",
    "reason": "",
    "correlation_id": "",
    "extra": {},
}
"""Stands in for a ``detail`` column that no longer reads as one (reconciliation reports it)."""


def _read_detail(text: str) -> dict[str, Any]:
    try:
        detail = json.loads(text)
        if not isinstance(detail, dict) or set(detail) != set(UNREADABLE_DETAIL):
            return UNREADABLE_DETAIL
        tuple(Agent(**a) for a in detail["agents"])
        tuple(Entity(**e) for e in detail["entities"])
    except (ValueError, TypeError):
        return UNREADABLE_DETAIL
    return detail


def _stored(row: sa.Row[Any]) -> StoredEvent:
    detail = _read_detail(row.detail)
    position = BusPosition(row.topic, row.partition, row.offset)
    record = AuditRecord(
        event_id=row.event_id,
        type=row.type,
        subtype=detail["subtype"],
        action=detail["action"],
        outcome=row.outcome,
        recorded_at=from_micros(row.recorded_us),
        source=detail["source"],
        agents=tuple(Agent(**a) for a in detail["agents"]),
        patient_id=row.patient_id,
        entities=tuple(Entity(**e) for e in detail["entities"]),
        purpose_of_use=detail["purpose_of_use"],
        justification=detail["justification"],
        reason=detail["reason"],
        correlation_id=detail["correlation_id"],
        event_hash=bytes(row.event_hash),
        position=position,
        extra=detail["extra"],
    )
    try:
        proof = json.loads(row.proof) if row.proof else None
    except ValueError:
        proof = {"unreadable": row.proof}
    columns = {name: row._mapping[name] for name in _DERIVED_EVENT_COLUMNS}
    columns["event_hash"] = bytes(row.event_hash)
    with contextlib.suppress(ValueError):  # kept as text: it then differs from the bytes'
        columns["detail"] = json.loads(row.detail)
    return StoredEvent(
        row.sequence, record, bytes(row.raw), bytes(row.event_hash), position, proof, columns
    )


def _event_ids(text: str) -> tuple[str, ...]:
    try:
        ids = json.loads(text)
    except ValueError:
        return (text,)
    return tuple(str(i) for i in ids) if isinstance(ids, list) else (text,)


def _finding(row: sa.Row[Any]) -> Finding:
    return Finding(
        finding_id=row.finding_id,
        rule=row.rule,
        severity=row.severity,
        patient_id=row.patient_id,
        account_id=row.account_id,
        event_ids=_event_ids(row.event_ids),
        score=row.score,
        explanation=row.explanation,
        detected_at=from_micros(row.detected_us),
        disposition=row.disposition,
        reviewed_by=row.reviewed_by,
        reviewed_at=from_micros(row.reviewed_us) if row.reviewed_us is not None else None,
    )


class SqlAuditRepository(AuditRepository):
    """Tables ``audit_events``, ``audit_positions``, ``audit_findings`` (+ outbox, processed)."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self._outbox = OutboxWriter()

    def create_schema(self) -> None:
        metadata.create_all(self.engine)
        # Indexes added after a table was created are created on the existing table too.
        for table in metadata.sorted_tables:
            for index in table.indexes:
                index.create(self.engine, checkfirst=True)
        create_outbox_table(self.engine)
        create_processed_events_table(self.engine)

    def ping(self) -> None:
        with self.engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))

    # -- the consumer's effect ------------------------------------------------

    @staticmethod
    def store(connection: sa.Connection, record: AuditRecord, raw: bytes) -> bool:
        """Stores one consumed position; the event itself only the first time its hash is seen.

        Runs inside the consumer's transaction. Returns False for a duplicate.
        """
        assert record.position is not None
        position = record.position
        seen = connection.execute(
            sa.select(events_table.c.sequence).where(events_table.c.event_hash == record.event_hash)
        ).first()
        connection.execute(
            positions_table.insert().values(
                topic=position.topic,
                partition=position.partition,
                offset=position.offset,
                event_hash=record.event_hash,
                kind="duplicate" if seen is not None else "event",
            )
        )
        if seen is not None:
            return False
        connection.execute(events_table.insert().values(**_event_row(record, raw)))
        return True

    @staticmethod
    def store_position(connection: sa.Connection, position: BusPosition, event_hash: bytes) -> None:
        """A position whose bytes are not an event this store understands (still accounted for)."""
        connection.execute(
            positions_table.insert().values(
                topic=position.topic,
                partition=position.partition,
                offset=position.offset,
                event_hash=event_hash,
                kind="undecodable",
            )
        )

    # -- queries ----------------------------------------------------------------

    def get(self, event_id: str) -> StoredEvent | None:
        with self.engine.connect() as connection:
            row = connection.execute(
                sa.select(events_table)
                .where(events_table.c.event_id == event_id)
                .order_by(events_table.c.sequence)
            ).first()
        return _stored(row) if row is not None else None

    def search(self, query: SearchQuery) -> Page:
        t = events_table
        statement = sa.select(t).where(t.c.sequence > query.after_sequence)
        if query.patient_id:
            statement = statement.where(t.c.patient_id == query.patient_id)
        if query.actor_id:
            statement = statement.where(t.c.actor_id == query.actor_id)
        if query.type:
            statement = statement.where(t.c.type == query.type)
        if query.outcome:
            statement = statement.where(t.c.outcome == query.outcome)
        if query.since:
            statement = statement.where(t.c.recorded_us >= micros(query.since))
        if query.until:
            statement = statement.where(t.c.recorded_us < micros(query.until))
        statement = statement.order_by(t.c.sequence).limit(query.limit + 1)
        with self.engine.connect() as connection:
            rows = connection.execute(statement).all()
        items = [_stored(r) for r in rows[: query.limit]]
        more = len(rows) > query.limit
        return Page(items, items[-1].sequence if more and items else None)

    def all_events(self) -> list[StoredEvent]:
        with self.engine.connect() as connection:
            rows = connection.execute(sa.select(events_table).order_by(events_table.c.sequence))
            return [_stored(r) for r in rows]

    def iter_events(self, batch: int = 5000) -> Iterator[StoredEvent]:
        """Every stored event in store order, read ``batch`` rows at a time (bounded memory)."""
        after = 0
        while True:
            with self.engine.connect() as connection:
                rows = connection.execute(
                    sa.select(events_table)
                    .where(events_table.c.sequence > after)
                    .order_by(events_table.c.sequence)
                    .limit(batch)
                ).all()
            if not rows:
                return
            for row in rows:
                yield _stored(row)
            after = rows[-1].sequence

    def load(self, connection: sa.Connection, items: Sequence[LoadItem]) -> None:
        """Bulk load of a fresh store (backfill, benchmarks): ``COPY`` on PostgreSQL, one
        ``executemany`` per table on SQLite, in the caller's transaction.

        Each item is (record with its position, exact bytes, proof or None); the caller
        guarantees that no item repeats an event already stored (no duplicate check).
        """
        positions, events = [], []
        for record, raw, proof in items:
            assert record.position is not None
            p = record.position
            positions.append((p.topic, p.partition, p.offset, record.event_hash, "event"))
            row = _event_row(record, raw)
            row["proof"] = json.dumps(proof) if proof is not None else None
            events.append(tuple(row[c] for c in _LOAD_EVENT_COLUMNS))
        _bulk_insert(connection, positions_table, _LOAD_POSITION_COLUMNS, positions)
        _bulk_insert(connection, events_table, _LOAD_EVENT_COLUMNS, events)

    def derived_columns(self, record: AuditRecord, raw: bytes) -> dict[str, Any]:
        row = _event_row(record, raw)
        columns = {name: row[name] for name in _DERIVED_EVENT_COLUMNS}
        columns["detail"] = json.loads(columns["detail"])
        return columns

    def queued_events(self) -> list[bytes]:
        with self.engine.connect() as connection:
            rows = connection.execute(sa.select(outbox_table.c.value).order_by(outbox_table.c.id))
            return [bytes(r.value) for r in rows]

    def state(self) -> dict[str, str]:
        with self.engine.connect() as connection:
            return {r.key: str(r.value) for r in connection.execute(sa.select(state_table))}

    def positions(self) -> list[PositionRow]:
        t = positions_table
        with self.engine.connect() as connection:
            rows = connection.execute(sa.select(t).order_by(t.c.topic, t.c.partition, t.c.offset))
            return [
                PositionRow(
                    BusPosition(r.topic, r.partition, r.offset), bytes(r.event_hash), r.kind
                )
                for r in rows
            ]

    def without_proof(self, limit: int, topics: Collection[str] | None = None) -> list[StoredEvent]:
        statement = sa.select(events_table).where(events_table.c.proof.is_(None))
        if topics is not None:
            statement = statement.where(events_table.c.topic.in_(sorted(topics)))
        with self.engine.connect() as connection:
            rows = connection.execute(statement.order_by(events_table.c.sequence).limit(limit))
            return [_stored(r) for r in rows]

    def set_proof(self, event_id: str, proof: dict[str, Any]) -> None:
        with self.engine.begin() as connection:
            connection.execute(
                events_table.update()
                .where(events_table.c.event_id == event_id)
                .values(proof=json.dumps(proof))
            )

    def set_proofs(self, proofs: Mapping[str, dict[str, Any]]) -> None:
        if not proofs:
            return
        with self.engine.begin() as connection:
            connection.execute(
                events_table.update()
                .where(events_table.c.event_id == sa.bindparam("target"))
                .values(proof=sa.bindparam("document")),
                [{"target": k, "document": json.dumps(v)} for k, v in proofs.items()],
            )

    def events_between(self, since: datetime, until: datetime) -> list[StoredEvent]:
        t = events_table
        with self.engine.connect() as connection:
            rows = connection.execute(
                sa.select(t)
                .where(t.c.recorded_us >= micros(since), t.c.recorded_us < micros(until))
                .order_by(t.c.recorded_us, t.c.sequence)
            )
            return [_stored(r) for r in rows]

    def events_of_patient(
        self, patient_id: str, since: datetime, until: datetime
    ) -> list[StoredEvent]:
        t = events_table
        with self.engine.connect() as connection:
            rows = connection.execute(
                sa.select(t)
                .where(
                    t.c.patient_id == patient_id,
                    t.c.recorded_us >= micros(since),
                    t.c.recorded_us < micros(until),
                )
                .order_by(t.c.recorded_us, t.c.sequence)
            )
            return [_stored(r) for r in rows]

    # -- findings -----------------------------------------------------------------

    def add_findings(
        self, findings: Sequence[Finding], outgoing: Sequence[tuple[str, str, bytes]]
    ) -> None:
        with self.engine.begin() as connection:
            for f in findings:
                connection.execute(
                    findings_table.insert().values(
                        finding_id=f.finding_id,
                        rule=f.rule,
                        severity=f.severity,
                        patient_id=f.patient_id,
                        account_id=f.account_id,
                        event_ids=json.dumps(list(f.event_ids)),
                        score=f.score,
                        explanation=f.explanation,
                        detected_us=micros(f.detected_at),
                        disposition="",
                        reviewed_by="",
                    )
                )
            self._outbox.append(connection, [Message(t, k, v) for t, k, v in outgoing])

    def findings(self, rule: str | None = None, reviewed: bool | None = None) -> list[Finding]:
        t = findings_table
        statement = sa.select(t).order_by(t.c.detected_us, t.c.finding_id)
        if rule:
            statement = statement.where(t.c.rule == rule)
        if reviewed is True:
            statement = statement.where(t.c.disposition != "")
        if reviewed is False:
            statement = statement.where(t.c.disposition == "")
        with self.engine.connect() as connection:
            return [_finding(r) for r in connection.execute(statement)]

    def finding(self, finding_id: str) -> Finding | None:
        with self.engine.connect() as connection:
            row = connection.execute(
                sa.select(findings_table).where(findings_table.c.finding_id == finding_id)
            ).first()
        return _finding(row) if row is not None else None

    def review(
        self,
        finding_id: str,
        disposition: str,
        reviewer: str,
        at: datetime,
        outgoing: Sequence[tuple[str, str, bytes]] = (),
    ) -> Finding:
        with self.engine.begin() as connection:
            updated = connection.execute(
                findings_table.update()
                .where(findings_table.c.finding_id == finding_id)
                .values(disposition=disposition, reviewed_by=reviewer, reviewed_us=micros(at))
            )
            if updated.rowcount == 0:
                raise FindingNotFound(f"no finding {finding_id}")
            self._outbox.append(connection, [Message(t, k, v) for t, k, v in outgoing])
        found = self.finding(finding_id)
        assert found is not None
        return found

    def queue(self, outgoing: Sequence[tuple[str, str, bytes]]) -> None:
        with self.engine.begin() as connection:
            self._outbox.append(connection, [Message(t, k, v) for t, k, v in outgoing])

    def review_break_glass(
        self,
        break_glass_id: str,
        disposition: str,
        reviewer: str,
        at: datetime,
        outgoing: Sequence[tuple[str, str, bytes]] = (),
    ) -> None:
        t = break_glass_reviews_table
        with self.engine.begin() as connection:
            self._outbox.append(connection, [Message(t, k, v) for t, k, v in outgoing])
            connection.execute(t.delete().where(t.c.break_glass_id == break_glass_id))
            connection.execute(
                t.insert().values(
                    break_glass_id=break_glass_id,
                    disposition=disposition,
                    reviewed_by=reviewer,
                    reviewed_us=micros(at),
                )
            )

    def break_glass_reviews(self) -> dict[str, tuple[str, str, datetime]]:
        t = break_glass_reviews_table
        with self.engine.connect() as connection:
            return {
                r.break_glass_id: (r.disposition, r.reviewed_by, from_micros(r.reviewed_us))
                for r in connection.execute(sa.select(t))
            }

    def get_state(self, key: str) -> str | None:
        with self.engine.connect() as connection:
            row = connection.execute(
                sa.select(state_table.c.value).where(state_table.c.key == key)
            ).first()
        return None if row is None else str(row.value)

    def set_state(self, key: str, value: str) -> None:
        with self.engine.begin() as connection:
            connection.execute(state_table.delete().where(state_table.c.key == key))
            connection.execute(state_table.insert().values(key=key, value=value))
