"""The audit store's contract, on SQLite and on PostgreSQL (``sql_engine``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from audit_analytics import events as ev

from services.audit_analytics.adapters.consumer import store_record
from services.audit_analytics.adapters.sql import SqlAuditRepository
from services.audit_analytics.domain.errors import FindingNotFound
from services.audit_analytics.domain.model import BusPosition, Finding, SearchQuery
from services.audit_analytics.domain.records import audit_record_of
from services.platform.bus.port import Record
from services.platform.events.envelope import decode, event_hash

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def _store(repo: SqlAuditRepository, raws: list[bytes], start: int = 0) -> None:
    for i, raw in enumerate(raws, start):
        topic, key = ev.route(raw)
        with repo.engine.begin() as connection:
            store_record(connection, Record(topic, 0, i, key, raw))


@pytest.fixture
def repo(sql_engine: sa.Engine) -> SqlAuditRepository:
    repository = SqlAuditRepository(sql_engine)
    repository.create_schema()
    return repository


def test_keeps_exact_bytes_hash_position_and_audit_event_fields(repo: SqlAuditRepository) -> None:
    raw = ev.read("pat-1", "prov-1", "rec-1", T0, grant="g-7")
    _store(repo, [raw])
    stored = repo.get(decode(raw).id)
    assert stored is not None
    assert stored.raw == raw
    assert stored.event_hash == event_hash(raw)
    assert (stored.position.topic, stored.position.offset) == ("records.access.v1", 0)
    r = stored.record
    assert (r.subtype, r.action, r.outcome, r.purpose_of_use) == (
        "record_read",
        "R",
        "success",
        "treatment",
    )
    assert r.patient_id == "pat-1"
    assert r.agents[0].who == "prov-1" and r.agents[0].role == "provider"
    assert r.agents[0].authorisation == "g-7"
    assert r.entities[0].id == "rec-1" and r.entities[0].category == "laboratory"
    assert r.source == "record-store" and r.recorded_at == T0


def test_a_duplicate_is_stored_once_but_its_position_is_accounted_for(
    repo: SqlAuditRepository,
) -> None:
    raw = ev.denied("pat-1", "prov-2", "rec-1", T0)
    _store(repo, [raw, raw])
    assert len(repo.all_events()) == 1
    assert [p.kind for p in repo.positions()] == ["event", "duplicate"]
    assert repo.get(decode(raw).id) is not None
    assert repo.all_events()[0].record.outcome == "minor_failure"
    assert repo.all_events()[0].record.reason == "no_grant"


def test_undecodable_bytes_are_accounted_for_as_positions(repo: SqlAuditRepository) -> None:
    with repo.engine.begin() as connection:
        store_record(connection, Record("records.access.v1", 0, 0, "k", b"not an envelope"))
    assert repo.all_events() == []
    assert [p.kind for p in repo.positions()] == ["undecodable"]


def test_search_filters_and_paginates(repo: SqlAuditRepository) -> None:
    raws = [
        ev.read(f"pat-{i % 3}", f"prov-{i % 2}", f"rec-{i}", T0 + timedelta(minutes=i))
        for i in range(30)
    ] + [ev.denied("pat-0", "prov-9", "rec-x", T0 + timedelta(hours=2))]
    _store(repo, raws)
    page = repo.search(SearchQuery(patient_id="pat-0", limit=4))
    seen = [e.record.event_id for e in page.items]
    while page.next_cursor is not None:
        page = repo.search(
            SearchQuery(patient_id="pat-0", limit=4, after_sequence=page.next_cursor)
        )
        seen += [e.record.event_id for e in page.items]
    assert len(seen) == len(set(seen)) == 11
    assert all(repo.get(i).record.patient_id == "pat-0" for i in seen)  # type: ignore[union-attr]
    assert len(repo.search(SearchQuery(actor_id="prov-1", limit=500)).items) == 15
    assert len(repo.search(SearchQuery(outcome="minor_failure")).items) == 1
    assert len(repo.search(SearchQuery(type="ehr.access.read_denied.v1")).items) == 1
    window = repo.search(
        SearchQuery(since=T0 + timedelta(minutes=10), until=T0 + timedelta(minutes=20), limit=500)
    )
    assert len(window.items) == 10
    assert len(repo.events_between(T0, T0 + timedelta(minutes=5))) == 5
    of_patient = repo.events_of_patient("pat-1", T0, T0 + timedelta(minutes=15))
    assert [e.record.patient_id for e in of_patient] == ["pat-1"] * 5


def test_proofs_findings_reviews(repo: SqlAuditRepository) -> None:
    raw = ev.break_glass("pat-1", "prov-1", "", T0, bg="bg-1")
    _store(repo, [raw])
    event_id = decode(raw).id
    assert [e.record.event_id for e in repo.without_proof(10)] == [event_id]
    repo.set_proof(event_id, {"leaf_index": 3})
    assert repo.without_proof(10) == []
    assert repo.get(event_id).proof == {"leaf_index": 3}  # type: ignore[union-attr]
    finding = Finding(
        "f-1",
        "break_glass_without_justification",
        "high",
        "pat-1",
        "prov-1",
        (event_id,),
        1.0,
        "empty",
        T0,
    )
    repo.add_findings([finding], [("audit.anomalies.v1", "pat-1", b"bytes")])
    assert repo.findings(reviewed=False) == [finding]
    reviewed = repo.review("f-1", "justified", "aud-1", T0 + timedelta(days=1))
    assert (reviewed.disposition, reviewed.reviewed_by) == ("justified", "aud-1")
    assert repo.findings(reviewed=False) == []
    with pytest.raises(FindingNotFound):
        repo.review("nope", "justified", "aud-1", T0)
    repo.review_break_glass("bg-1", "justified", "aud-1", T0)
    assert repo.break_glass_reviews()["bg-1"][0] == "justified"


def test_bulk_load_matches_the_consumers_path_and_events_stream_in_batches(
    repo: SqlAuditRepository,
) -> None:
    raws = [
        ev.read(f"pat-{i % 3}", "prov-1", f"rec-{i}", T0 + timedelta(minutes=i)) for i in range(7)
    ]
    _store(repo, raws[:2])
    items = []
    for offset, raw in enumerate(raws[2:], 2):
        topic, _ = ev.route(raw)
        record = audit_record_of(raw, BusPosition(topic, 0, offset))
        items.append((record, raw, {"leaf_index": offset} if offset % 2 else None))
    with repo.engine.begin() as connection:
        repo.load(connection, items)
    loaded = repo.get(decode(raws[3]).id)
    consumed = repo.get(decode(raws[1]).id)
    assert loaded is not None and consumed is not None
    assert loaded.raw == raws[3] and loaded.event_hash == event_hash(raws[3])
    assert loaded.proof == {"leaf_index": 3}
    # The same AuditEvent fields as the consumer's path stores.
    assert loaded.record == items[1][0]
    assert consumed.record == audit_record_of(raws[1], consumed.position)
    assert [p.position.offset for p in repo.positions()] == list(range(7))
    assert {p.kind for p in repo.positions()} == {"event"}
    assert [e.record.event_id for e in repo.without_proof(10)] == [
        decode(raws[i]).id for i in (0, 1, 2, 4, 6)
    ]
    streamed = list(repo.iter_events(batch=2))
    assert [e.record.event_id for e in streamed] == [e.record.event_id for e in repo.all_events()]
    assert [e.raw for e in streamed] == raws


def test_the_decoder_bounds_are_the_store_columns() -> None:
    """An event whose field would not fit its column is kept as an undecodable position
    (the decoder refuses it), never a write PostgreSQL refuses on every retry."""
    from services.audit_analytics.adapters.sql import events_table
    from services.audit_analytics.domain.records import STORED_LENGTHS

    for name, limit in STORED_LENGTHS.items():
        assert events_table.c[name].type.length == limit, name
