"""End to end on both backend sets: events -> relay + audit store -> proofs, verification,
reconciliation; then every kind of tampering with the store, each detected and undone.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from audit_analytics import events as ev
from audit_analytics.conftest import AuditStack
from ehr.audit.v1.audit_pb2 import (
    DISPOSITION_FALSE_POSITIVE,
    DISPOSITION_JUSTIFIED,
    AnomalyReviewed,
    BreakGlassReviewed,
)

from services.audit_analytics.adapters.proofs import DirectEventProofs
from services.audit_analytics.adapters.sql import (
    SqlAuditRepository,
    events_table,
    positions_table,
)
from services.audit_analytics.adapters.sql import (
    metadata as audit_metadata,
)
from services.audit_analytics.domain import reports
from services.audit_analytics.domain.errors import FindingNotFound
from services.audit_analytics.domain.integrity import IntegrityService, Reconciliation
from services.audit_analytics.domain.model import BusPosition as AuditPosition
from services.audit_analytics.domain.records import audit_record_of
from services.audit_analytics.domain.service import AuditService
from services.ledger_relay.adapters.anchor import AuditAnchorLedger
from services.ledger_relay.adapters.sql import SqlLogRepository
from services.ledger_relay.domain.merkle import CompactRange, leaf_hash
from services.ledger_relay.domain.model import (
    BusPosition,
    Checkpoint,
    CheckpointStatus,
    Leaf,
    LeafBatch,
)
from services.ledger_relay.domain.proofs import ProofService
from services.platform.bus.outbox import outbox_table
from services.platform.events.envelope import decode, event_hash, payload


def _snapshot(engine: sa.Engine) -> dict[str, list[dict[str, Any]]]:
    with engine.connect() as c:
        return {
            t.name: [dict(r._mapping) for r in c.execute(sa.select(t))]
            for t in (events_table, positions_table)
        }


def _restore(engine: sa.Engine, snapshot: dict[str, list[dict[str, Any]]]) -> None:
    with engine.begin() as c:
        for table in (events_table, positions_table):
            c.execute(table.delete())
            if snapshot[table.name]:
                c.execute(table.insert(), snapshot[table.name])


def _consistent_row(repo: SqlAuditRepository, raw: bytes, at: AuditPosition) -> dict[str, Any]:
    """An ``audit_events`` row whose every column is the one ``raw`` gives (a careful forger)."""
    columns = repo.derived_columns(audit_record_of(raw, at), raw)
    columns["detail"] = json.dumps(columns["detail"])
    return {
        **columns,
        "raw": raw,
        "topic": at.topic,
        "partition": at.partition,
        "offset": at.offset,
    }


def _kinds(result: Reconciliation) -> set[str]:
    return {d.kind for d in result.discrepancies}


async def test_events_are_stored_proven_verified_and_every_tampering_is_detected(
    audit_stack: AuditStack,
) -> None:
    raws = ev.workflow(8)
    await audit_stack.publish(raws)
    await audit_stack.run(len(raws))
    service = audit_stack.service()
    repo = audit_stack.repo

    # Stored: exact bytes, every position accounted for, proofs attached once anchored.
    stored = {e.record.event_id: e for e in repo.all_events()}
    assert len(stored) == len(raws)
    for raw in raws:
        assert stored[decode(raw).id].raw == raw
    assert len(repo.positions()) == len(raws)
    assert service.integrity.attach_proofs() == len(raws)
    assert repo.without_proof(10) == []

    # Verify one event against the chain.
    some = decode(raws[3]).id
    verification = service.verify(some)
    assert verification.verified, verification.detail
    assert (
        verification.tx_hash
        == audit_stack.anchor.find_anchor(verification.checkpoint_index or 0).tx_hash
    )

    clean = service.integrity.reconcile()
    assert clean.ok, clean.discrepancies
    assert clean.anchored == len(raws)

    engine = audit_stack.audit_engine
    snapshot = _snapshot(engine)
    events = repo.all_events()
    victim = events[5]

    def case(what: str, statements: list[Any], expected: str) -> None:
        with engine.begin() as c:
            for statement in statements:
                c.execute(statement)
        result = service.integrity.reconcile()
        assert expected in _kinds(result), (what, result.discrepancies)
        _restore(engine, snapshot)
        assert service.integrity.reconcile().ok, what

    t = events_table
    by_seq = t.c.sequence
    # Altered bytes (hash column kept), and altered bytes with a recomputed hash.
    changed = bytearray(victim.raw)
    changed[-1] ^= 1
    case(
        "alter", [t.update().where(by_seq == victim.sequence).values(raw=bytes(changed))], "altered"
    )
    with engine.begin() as c:
        c.execute(t.update().where(by_seq == victim.sequence).values(raw=bytes(changed)))
    assert not service.verify(victim.record.event_id).verified
    _restore(engine, snapshot)
    assert service.verify(victim.record.event_id).verified
    case(
        "alter+rehash",
        [
            t.update()
            .where(by_seq == victim.sequence)
            .values(raw=bytes(changed), event_hash=event_hash(bytes(changed)))
        ],
        "altered",
    )
    # Deleted (the position row stays), and deleted with its position.
    case("delete", [t.delete().where(by_seq == victim.sequence)], "missing")
    p = positions_table
    vp = victim.position
    case(
        "delete+position",
        [
            t.delete().where(by_seq == victim.sequence),
            p.delete().where(
                p.c.topic == vp.topic, p.c.partition == vp.partition, p.c.offset == vp.offset
            ),
        ],
        "missing",
    )
    # Truncated: the last events and their positions gone.
    tail = [e.sequence for e in events[-3:]]
    case("truncate", [t.delete().where(by_seq.in_(tail))], "missing")
    # Reordered: two events of one partition swap their offsets.
    pairs: dict[tuple[str, int], list[Any]] = {}
    for e in events:
        pairs.setdefault((e.position.topic, e.position.partition), []).append(e)
    a, b = next(v for v in pairs.values() if len(v) >= 2)[:2]
    case(
        "reorder",
        [
            t.update().where(by_seq == a.sequence).values(offset=-1),
            t.update().where(by_seq == b.sequence).values(offset=a.position.offset),
            t.update().where(by_seq == a.sequence).values(offset=b.position.offset),
        ],
        "reordered",
    )
    # Inserted: a well-formed event the ledger never saw.
    forged_raw = ev.read("pat-0", "prov-0", "rec-0")
    forged_row = {
        k: v for k, v in snapshot["audit_events"][0].items() if k not in ("sequence", "proof")
    }
    forged_row.update(
        raw=forged_raw,
        event_hash=event_hash(forged_raw),
        event_id=decode(forged_raw).id,
        offset=10_000,
    )
    case("insert", [t.insert().values(**forged_row)], "inserted")
    # Duplicated: a stored event copied.
    copy = {k: v for k, v in snapshot["audit_events"][2].items() if k != "sequence"}
    case("duplicate", [t.insert().values(**copy)], "duplicated")
    # Forged proof: the stored proof points at another leaf.
    proof = dict(victim.proof or {})
    proof["leaf_index"] = (int(proof["leaf_index"]) + 1) % int(proof["checkpoint"]["tree_size"])
    case(
        "forged proof",
        [t.update().where(by_seq == victim.sequence).values(proof=json.dumps(proof))],
        "proof_invalid",
    )

    # Fork: a relay serving proofs from another log of the same events (anchored on another
    # contract) is caught against the genuine contract.
    fork_engine = sa.create_engine("sqlite://")
    fork_repo = SqlLogRepository(fork_engine)
    fork_repo.create_schema()
    reordered = list(reversed(raws))
    frontier = CompactRange()
    leaves, nodes = [], []
    for i, raw in enumerate(reordered):
        digest = event_hash(raw)
        leaves.append(Leaf(i, digest, decode(raw).id, BusPosition("fork", 0, i), 0))
        nodes += frontier.append(leaf_hash(digest))
    fork_repo.append(LeafBatch.of(leaves), nodes)
    fork_anchor = AuditAnchorLedger.deploy(
        audit_stack.chain, audit_stack.chain.new_account(), audit_stack.chain.new_account()
    )
    root = frontier.root()
    tx = fork_anchor.submit(len(raws), root, [])
    anchor = fork_anchor.wait(tx)
    fork_repo.add_checkpoint(Checkpoint(0, len(raws), root, 0, b"", CheckpointStatus.PENDING))
    fork_repo.mark_anchored(0, anchor, 0, [])
    forked = IntegrityService(
        repo,
        DirectEventProofs(ProofService(fork_repo)),
        audit_stack.anchor,
        audit_stack.anchored_topics,
    )
    assert "fork" in _kinds(forked.reconcile())  # its latest checkpoint is not the chain's
    with engine.begin() as c:  # without stored proofs, every event is asked of the fork
        c.execute(t.update().values(proof=None))
    per_event = [d for d in forked.reconcile().discrepancies if d.kind == "fork" and d.event_id]
    assert len(per_event) >= len(raws) - 1  # the middle leaf of an odd reversal stays put
    _restore(engine, snapshot)
    assert not AuditService(repo, forked, service.detector).verify(some).verified
    fork_engine.dispose()

    # Integrity failures become findings (events) for auditors.
    with engine.begin() as c:
        c.execute(t.update().where(by_seq == victim.sequence).values(raw=bytes(changed)))
    service.reconcile()
    assert any(f.rule == "integrity_failure" for f in repo.findings())
    _restore(engine, snapshot)


async def test_findings_and_reports_with_attestation(audit_stack: AuditStack) -> None:
    raws = ev.workflow(4)
    await audit_stack.publish(raws)
    await audit_stack.run(len(raws))
    service = audit_stack.service()
    assert service.integrity.attach_proofs() == len(raws)
    found = service.detect()
    rules = {f.rule for f in found}
    assert {"break_glass_without_justification", "access_without_consent"} <= rules
    assert service.detect() == []
    for f in found:
        for event_id in f.event_ids:
            evidence = audit_stack.repo.get(event_id)
            assert evidence is not None and evidence.proof is not None
    reviewed = service.review(found[0].finding_id, "false_positive", "aud-1")
    assert reviewed.disposition == "false_positive"
    glass = next(e for e in audit_stack.repo.all_events() if e.record.subtype == "break_glass_used")
    service.review_break_glass(glass.record.event_id, "justified", "aud-1")

    now = datetime.now(UTC)
    report = service.compliance_report(now - timedelta(days=1), now + timedelta(minutes=1), "aud-1")
    attestation = report["attestation"]
    assert attestation["verification_result"] == "verified", attestation
    assert attestation["events_verified"] == len(raws)
    assert (
        attestation["anchor_transaction"]
        == audit_stack.anchor.find_anchor(attestation["checkpoint_index"]).tx_hash
    )
    assert {a["disposition"] for a in report["anomalies"]} >= {"false_positive", "open"}
    mine = service.patient_access_report(
        "pat-1", now - timedelta(days=1), now + timedelta(minutes=1), "pat-1", "patient"
    )
    assert mine["attestation"]["consistent_with_previous_report"] is True
    assert mine["attestation"]["previous_report_tree_size"] == attestation["checkpoint_tree_size"]
    assert mine["accesses"] and all(
        audit_stack.repo.get(a["event_id"]).record.patient_id == "pat-1" for a in mine["accesses"]
    )
    # Findings and reports are events waiting in the outbox for the bus.
    with audit_stack.audit_engine.connect() as c:
        topics = [r.topic for r in c.execute(sa.select(outbox_table.c.topic))]
    assert topics.count("audit.anomalies.v1") == len(found) + 2  # + the two reviews
    assert topics.count("audit.reports.v1") == 2
    # A review of an unknown finding changes nothing and queues nothing.
    with pytest.raises(FindingNotFound):
        service.review("no-such-finding", "justified", "aud-1")
    with audit_stack.audit_engine.connect() as c:
        queued = [bytes(r.value) for r in c.execute(sa.select(outbox_table.c.value))]
    assert len(queued) == len(topics)

    # The reviews are events: published, anchored by the relay, consumed by the store ...
    by_type = {decode(raw).type: raw for raw in queued}
    anomaly_review = payload(decode(by_type["ehr.audit.anomaly_reviewed.v1"]), AnomalyReviewed)
    assert (anomaly_review.anomaly_id, anomaly_review.rule, anomaly_review.reviewer_id) == (
        found[0].finding_id,
        found[0].rule,
        "aud-1",
    )
    assert anomaly_review.disposition == DISPOSITION_FALSE_POSITIVE
    glass_review = payload(decode(by_type["ehr.audit.break_glass_reviewed.v1"]), BreakGlassReviewed)
    assert (glass_review.event_id, glass_review.patient_id, glass_review.reader_id) == (
        glass.record.event_id,
        glass.record.patient_id,
        glass.record.actor_id,
    )
    assert glass_review.disposition == DISPOSITION_JUSTIFIED
    await audit_stack.publish(queued)
    await audit_stack.run(len(raws) + len(queued))
    assert service.integrity.attach_proofs() == len(queued)
    stored = {
        e.record.subtype: e
        for e in audit_stack.repo.all_events()
        if e.record.subtype in ("anomaly_reviewed", "break_glass_reviewed")
    }
    assert stored["anomaly_reviewed"].record.extra["disposition"] == "false_positive"
    assert stored["anomaly_reviewed"].record.actor_id == "aud-1"
    assert stored["break_glass_reviewed"].record.extra["reviewed_event_id"] == glass.record.event_id
    assert service.verify(stored["break_glass_reviewed"].record.event_id).verified

    # ... and the next report shows each review with its event.
    later = service.compliance_report(now - timedelta(days=1), now + timedelta(hours=1), "aud-1")
    (finding_row,) = [a for a in later["anomalies"] if a["finding_id"] == found[0].finding_id]
    assert finding_row["disposition"] == "false_positive"
    assert finding_row["review_event_id"] == stored["anomaly_reviewed"].record.event_id
    (episode,) = [b for b in later["break_glass"] if b["event_id"] == glass.record.event_id]
    assert (episode["review_status"], episode["disposition"]) == ("reviewed", "justified")
    assert episode["review_event_id"] == stored["break_glass_reviewed"].record.event_id
    assert {(r["kind"], r["disposition"], r["reviewed_by"]) for r in later["reviews"]} == {
        ("anomaly", "false_positive", "aud-1"),
        ("break_glass", "justified", "aud-1"),
    }
    assert later["attestation"]["verification_result"] == "verified", later["attestation"]
    assert "reviews[0]" in reports.to_csv(later)


async def test_reconciliation_tells_what_is_not_consumed_yet_from_what_is_missing(
    audit_stack: AuditStack,
) -> None:
    first = ev.workflow(3)
    await audit_stack.publish(first)
    await audit_stack.run(len(first))
    service = audit_stack.service()
    bus = await audit_stack.bus()

    async def ends() -> dict[tuple[str, int], int]:
        return await bus.end_offsets(audit_stack.all_topics)

    caught_up = service.integrity.reconcile(await ends())
    assert caught_up.ok, caught_up.discrepancies
    assert caught_up.bus_offsets_known and caught_up.not_consumed == {}

    # More events: the relay logs and anchors them, the store has not consumed them yet.
    later = ev.workflow(2, at=datetime(2026, 3, 9, 10, 0, tzinfo=UTC))
    await audit_stack.publish(later)
    await audit_stack.run(len(first) + len(later), store=False)
    assert len(audit_stack.repo.all_events()) == len(first)
    lagging = service.integrity.reconcile(await ends())
    assert lagging.ok, lagging.discrepancies
    assert sum(lagging.not_consumed.values()) == len(later)
    assert lagging.leaves_not_consumed == len(later)
    assert lagging.as_dict()["positions_not_consumed"] == len(later)
    # Without the bus's end offsets the same lag cannot be told from a loss.
    blind = service.integrity.reconcile()
    assert not blind.bus_offsets_known
    assert [d.kind for d in blind.discrepancies] == ["missing"] * len(later)

    # A stored event deleted with its position below the consumed position is missing,
    # lag or not; so is a leading gap.
    engine, t, p = audit_stack.audit_engine, events_table, positions_table
    snapshot = _snapshot(engine)
    rows = sorted(
        snapshot["audit_positions"], key=lambda r: (r["topic"], r["partition"], r["offset"])
    )
    by_slot: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for row in rows:
        by_slot.setdefault((row["topic"], row["partition"]), []).append(row)
    slot, members = next((s, m) for s, m in by_slot.items() if len(m) >= 3)
    for victim in (members[1], members[0]):  # a gap, then a leading gap
        with engine.begin() as c:
            c.execute(t.delete().where(t.c.event_hash == victim["event_hash"]))
            c.execute(
                p.delete().where(
                    p.c.topic == slot[0], p.c.partition == slot[1], p.c.offset == victim["offset"]
                )
            )
        result = service.integrity.reconcile(await ends())
        missing = [d for d in result.discrepancies if d.kind == "missing"]
        assert f"{slot[0]}/{slot[1]}@{victim['offset']}" in {d.position for d in missing}, missing
        assert sum(result.not_consumed.values()) == len(later)
        _restore(engine, snapshot)

    # A position beyond the bus's end was never on the bus.
    beyond = dict(members[-1])
    end = (await ends())[slot]
    with engine.begin() as c:
        c.execute(p.insert().values(**{**beyond, "offset": end + 5}))
    result = service.integrity.reconcile(await ends())
    assert "inserted" in _kinds(result), result.discrepancies
    _restore(engine, snapshot)

    # Once the store has caught up, nothing is pending any more.
    await audit_stack.run(len(first) + len(later))
    service.integrity.attach_proofs()
    done = service.integrity.reconcile(await ends())
    assert done.ok, done.discrepancies
    assert done.not_consumed == {} and done.leaves_not_consumed == 0
    assert done.anchored == len(first) + len(later)

    # End offsets read before the store consumed more events make those look inserted;
    # so reconciliation also takes a function, called after it has read the positions.
    stale = await ends()
    more = ev.workflow(1, at=datetime(2026, 3, 10, 10, 0, tzinfo=UTC))
    await audit_stack.publish(more)
    total = len(first) + len(later) + len(more)
    await audit_stack.run(total)
    service.integrity.attach_proofs()
    assert "inserted" in _kinds(service.integrity.reconcile(stale))
    fresh = await ends()
    calls: list[int] = []

    def read_ends() -> dict[tuple[str, int], int]:
        calls.append(1)
        return fresh

    current = service.integrity.reconcile(read_ends)
    assert current.ok, current.discrepancies
    assert calls == [1] and current.anchored == total

    # The last event of a partition deleted with its position looks like lag by the
    # store's own positions; the store's committed offsets (kept by the bus) show it
    # missing.
    async def consumed() -> dict[tuple[str, int], int]:
        return await bus.committed_offsets(audit_stack.store_group, audit_stack.all_topics)

    snapshot = _snapshot(engine)
    last = max(
        (r for r in snapshot["audit_positions"] if r["topic"] in audit_stack.anchored_topics),
        key=lambda r: r["offset"],
    )
    where = f"{last['topic']}/{last['partition']}@{last['offset']}"
    assert (await consumed())[(last["topic"], last["partition"])] == last["offset"] + 1
    with engine.begin() as c:
        c.execute(t.delete().where(t.c.event_hash == last["event_hash"]))
        c.execute(
            p.delete().where(
                p.c.topic == last["topic"],
                p.c.partition == last["partition"],
                p.c.offset == last["offset"],
            )
        )
    looks_lagging = service.integrity.reconcile(await ends())
    assert looks_lagging.ok and looks_lagging.not_consumed == {where.split("@")[0]: 1}
    result = service.integrity.reconcile(await ends(), consumed_offsets=await consumed())
    missing = [d for d in result.discrepancies if d.kind == "missing"]
    assert where in {d.position for d in missing}, result.discrepancies
    assert result.not_consumed == {}
    _restore(engine, snapshot)
    assert service.integrity.reconcile(await ends(), consumed_offsets=await consumed()).ok


async def test_reconciliation_tells_what_the_relay_has_not_logged_yet_from_what_was_inserted(
    audit_stack: AuditStack,
) -> None:
    """The relay and the store read the bus independently: the store may hold events the
    relay's log does not have yet. The relay's committed offsets tell that lag apart."""
    first = ev.workflow(2)
    await audit_stack.publish(first)
    await audit_stack.run(len(first))
    service = audit_stack.service()
    bus = await audit_stack.bus()
    anchored = sorted(audit_stack.anchored_topics)

    async def ends() -> dict[tuple[str, int], int]:
        return await bus.end_offsets(audit_stack.all_topics)

    async def logged() -> dict[tuple[str, int], int]:
        return await bus.committed_offsets(audit_stack.relay_group, anchored)

    # More events: the store consumes them, the relay does not run.
    later = ev.workflow(2, at=datetime(2026, 3, 9, 10, 0, tzinfo=UTC))
    await audit_stack.publish(later)
    await audit_stack.run(len(first) + len(later), relay=False)
    ahead = service.integrity.reconcile(await ends(), logged_offsets=await logged())
    assert ahead.ok, ahead.discrepancies
    assert ahead.not_logged == len(later) and ahead.as_dict()["not_logged"] == len(later)
    assert ahead.anchored == len(first)
    # Without the relay's offsets the same lag cannot be told from insertion; nor when
    # the relay had consumed past those events (its log should then have them).
    blind = service.integrity.reconcile(await ends())
    assert [d.kind for d in blind.discrepancies] == ["inserted"] * len(later)
    assert blind.not_logged == 0
    past = service.integrity.reconcile(await ends(), logged_offsets=await ends())
    assert [d.kind for d in past.discrepancies] == ["inserted"] * len(later)

    # The relay's offsets are read once, before any proof is asked for.
    calls: list[int] = []
    offsets = await logged()

    def read_logged() -> dict[tuple[str, int], int]:
        calls.append(1)
        return offsets

    assert service.integrity.reconcile(await ends(), logged_offsets=read_logged).ok
    assert calls == [1]

    # A forged event beyond the bus's end is inserted, whatever the relay's position.
    engine, t = audit_stack.audit_engine, events_table
    snapshot = _snapshot(engine)
    forged_raw = ev.read("pat-9", "prov-9", "rec-9")
    row = next(r for r in snapshot["audit_events"] if r["topic"] in anchored)
    forged = _consistent_row(
        audit_stack.repo,
        forged_raw,
        AuditPosition(
            row["topic"], row["partition"], (await ends())[(row["topic"], row["partition"])] + 3
        ),
    )
    with engine.begin() as c:
        c.execute(t.insert().values(**forged))
    with_forged = service.integrity.reconcile(await ends(), logged_offsets=await logged())
    assert [d.kind for d in with_forged.discrepancies] == ["inserted"], with_forged.discrepancies
    assert with_forged.discrepancies[0].event_id == forged["event_id"]
    assert with_forged.not_logged == len(later)
    _restore(engine, snapshot)

    # Once the relay has caught up, nothing is waiting for it any more.
    await audit_stack.run(len(first) + len(later))
    done = service.integrity.reconcile(await ends(), logged_offsets=await logged())
    assert done.ok, done.discrepancies
    assert done.not_logged == 0 and done.anchored == len(first) + len(later)


async def test_checkpoints_another_chain_does_not_hold_fail_verification_not_the_request(
    audit_stack: AuditStack,
) -> None:
    """Read against a contract that holds none of the relay's checkpoints (a chain started
    afresh): verification answers not verified, the report's attestation fails, and
    reconciliation reports a fork, each instead of raising."""
    raws = ev.workflow(2)
    await audit_stack.publish(raws)
    await audit_stack.run(len(raws))
    chain = audit_stack.chain
    elsewhere = AuditAnchorLedger.deploy(chain, chain.new_account(), chain.new_account())
    integrity = IntegrityService(
        audit_stack.repo,
        DirectEventProofs(ProofService(audit_stack.relay_repo)),
        elsewhere,
        audit_stack.anchored_topics,
    )
    service = AuditService(audit_stack.repo, integrity, audit_stack.service().detector)
    event_id = decode(raws[1]).id
    verification = service.verify(event_id)
    assert not verification.verified and "not on chain" in verification.detail
    report = service.compliance_report(
        datetime(1, 1, 1, tzinfo=UTC), datetime(9999, 12, 31, tzinfo=UTC), "auditor-1"
    )
    assert report["attestation"]["checkpoint_matches_chain"] is False
    assert report["attestation"]["verification_result"] == "failed"
    assert "fork" in _kinds(service.reconcile())


def _changed(value: Any) -> Any:
    """Another value of the same kind (the rule table overrides where a column needs more)."""
    if isinstance(value, bool | type(None)):
        raise AssertionError(f"no generic change for {value!r}")
    if isinstance(value, bytes | memoryview):
        changed = bytearray(bytes(value))
        changed[-1] ^= 1
        return bytes(changed)
    if isinstance(value, int):
        return value + 10_000
    if isinstance(value, float):
        return value + 0.5
    return f"{value}x"


def _json_changed(key: str, new: Any) -> Any:
    def change(value: str) -> str:
        document = json.loads(value)
        document[key] = new
        return json.dumps(document)

    return change


def _proof_changed(value: str) -> str:
    proof = json.loads(value)
    proof["leaf_index"] = (int(proof["leaf_index"]) + 1) % int(proof["checkpoint"]["tree_size"])
    return json.dumps(proof)


NOT_PROVEN = "not proven"
TAMPER_RULES: dict[tuple[str, str], tuple[str, Any]] = {
    # audit_events: each column re-derived from the verified bytes (or the bytes themselves).
    ("audit_events", "sequence"): (NOT_PROVEN, "audit_events.sequence"),
    ("audit_events", "event_id"): ("altered", "audit_events.event_id"),
    ("audit_events", "event_hash"): ("altered", "no longer match their hash"),
    ("audit_events", "raw"): ("altered", "no longer match their hash"),
    ("audit_events", "topic"): ("altered", "audit_positions.topic/partition/offset"),
    ("audit_events", "partition"): ("altered", "audit_positions.topic/partition/offset"),
    ("audit_events", "offset"): ("altered", "audit_positions.topic/partition/offset"),
    ("audit_events", "type"): ("altered", "audit_events.type"),
    ("audit_events", "outcome"): ("altered", "audit_events.outcome"),
    ("audit_events", "patient_id"): ("altered", "audit_events.patient_id"),
    ("audit_events", "actor_id"): ("altered", "audit_events.actor_id"),
    ("audit_events", "recorded_us"): ("altered", "audit_events.recorded_us"),
    ("audit_events", "detail"): ("altered", "audit_events.detail"),
    ("audit_events", "proof"): ("proof_invalid", "the stored proof"),
    # audit_positions: each stored event's own position, kind ``event``, same hash.
    ("audit_positions", "topic"): ("altered", "audit_positions.topic/partition/offset"),
    ("audit_positions", "partition"): ("altered", "audit_positions.topic/partition/offset"),
    ("audit_positions", "offset"): ("altered", "audit_positions.topic/partition/offset"),
    ("audit_positions", "event_hash"): ("altered", "audit_positions.event_hash"),
    ("audit_positions", "kind"): ("altered", "audit_positions.kind"),
    # audit_findings: the anomaly_detected event, and the latest anomaly_reviewed event.
    **{
        ("audit_findings", c): ("altered", f"audit_findings.{c}")
        for c in (
            "finding_id",
            "rule",
            "severity",
            "patient_id",
            "account_id",
            "event_ids",
            "score",
            "explanation",
            "detected_us",
            "disposition",
            "reviewed_by",
            "reviewed_us",
        )
    },
    # audit_break_glass_reviews: the latest break_glass_reviewed event of the episode.
    **{
        ("audit_break_glass_reviews", c): ("altered", f"audit_break_glass_reviews.{c}")
        for c in ("break_glass_id", "disposition", "reviewed_by", "reviewed_us")
    },
    # audit_state: the last report's checkpoint, against the chain.
    ("audit_state", "key"): ("altered", "audit_state.key"),
    ("audit_state", "value"): ("altered", "audit_state.value"),
}
CHANGES: dict[tuple[str, str], Any] = {
    ("audit_events", "detail"): _json_changed("source", "elsewhere"),
    ("audit_events", "proof"): _proof_changed,
    ("audit_events", "partition"): lambda v: v + 7,
    ("audit_events", "recorded_us"): lambda v: v + 1,
    ("audit_positions", "partition"): lambda v: v + 7,
    ("audit_positions", "kind"): lambda v: "duplicate",
    ("audit_findings", "event_ids"): lambda v: json.dumps([*json.loads(v), "other-event"]),
    ("audit_findings", "detected_us"): lambda v: v + 1,
    ("audit_findings", "reviewed_us"): lambda v: v + 1,
    ("audit_break_glass_reviews", "reviewed_us"): lambda v: v + 1,
    ("audit_state", "value"): _json_changed("root", "00" * 32),
}


async def test_changing_any_stored_column_of_any_audit_table_is_reported(
    audit_stack: AuditStack,
) -> None:
    """Every column of every table of the audit store (walked from its SQL metadata, so a
    new column without a rule fails here): one stored value changed, reconciliation reports
    it, naming the column, or the column is listed as not proven."""
    raws = ev.workflow(4)
    await audit_stack.publish(raws)
    await audit_stack.run(len(raws))
    service, repo = audit_stack.service(), audit_stack.repo
    assert service.integrity.attach_proofs() == len(raws)
    found = service.detect()
    service.review(found[0].finding_id, "false_positive", "aud-1")
    glass = next(e for e in repo.all_events() if e.record.subtype == "break_glass_used")
    service.review_break_glass(glass.record.event_id, "justified", "aud-1")
    now = datetime.now(UTC)
    service.compliance_report(now - timedelta(days=1), now + timedelta(minutes=1), "aud-1")
    # The findings and reviews come back from the bus: compared with verified events.
    with audit_stack.audit_engine.connect() as c:
        queued = [bytes(r.value) for r in c.execute(sa.select(outbox_table.c.value))]
    await audit_stack.publish(queued)
    await audit_stack.run(len(raws) + len(queued))
    service.integrity.attach_proofs()
    clean = service.integrity.reconcile()
    assert clean.ok, clean.discrepancies
    assert repo.state() and repo.break_glass_reviews()

    engine = audit_stack.audit_engine
    tables = list(audit_metadata.sorted_tables)
    with engine.connect() as c:
        snapshot = {t.name: [dict(r._mapping) for r in c.execute(sa.select(t))] for t in tables}
    victim = next(e for e in repo.all_events() if e.record.subtype == "record_read")
    vp = victim.position
    reviewed = next(f for f in repo.findings() if f.disposition)
    subject: dict[str, Callable[[sa.Table], Any]] = {
        "audit_events": lambda t: t.c.sequence == victim.sequence,
        "audit_positions": lambda t: sa.and_(
            t.c.topic == vp.topic, t.c.partition == vp.partition, t.c.offset == vp.offset
        ),
        "audit_findings": lambda t: t.c.finding_id == reviewed.finding_id,
        "audit_break_glass_reviews": lambda t: sa.true(),
        "audit_state": lambda t: sa.true(),
    }
    walked = {(t.name, c.name) for t in tables for c in t.columns}
    assert walked == set(TAMPER_RULES), walked ^ set(TAMPER_RULES)
    for table in tables:
        assert table.name in subject, f"no row chosen to tamper with in {table.name}"
        for column in table.columns:
            expected, naming = TAMPER_RULES[(table.name, column.name)]
            where = subject[table.name](table)
            with engine.begin() as c:
                (before,) = c.execute(sa.select(column).where(where)).scalars().all()
                after = CHANGES.get((table.name, column.name), _changed)(before)
                c.execute(table.update().where(where).values({column.name: after}))
            result = service.integrity.reconcile()
            what = f"{table.name}.{column.name}: {before!r} -> {after!r}"
            if expected == NOT_PROVEN:
                assert naming in result.as_dict()["not_proven"], what
            else:
                matching = [d for d in result.discrepancies if d.kind == expected]
                assert any(naming in d.detail for d in matching), (what, result.discrepancies)
                assert result.as_dict()["counts"][expected] >= 1
            with engine.begin() as c:
                for t in reversed(tables):
                    c.execute(t.delete())
                for t in tables:
                    if snapshot[t.name]:
                        c.execute(t.insert(), snapshot[t.name])
    assert service.integrity.reconcile().ok
