"""Audit analytics at volume: ingest, search and per-patient accounting latency (p50, p99),
reconciliation rate.

Scaled down from the issue's 1,000,000 events to ``EHR_BENCH_AUDIT_EVENTS`` (default
50,000) so that one run stays within a few minutes on a 2-core machine. Backends: the
embedded default (SQLite files, the in-process EVM running ``AuditAnchor``); set
``EHR_BENCH_AUDIT_DATABASE_URL`` / ``EHR_BENCH_LEDGER_DATABASE_URL`` to run the stores on
PostgreSQL instead.

1. ``N`` real envelopes (reads, refusals, break-glass, grants, logins) over one year,
   ``N / 50`` patients and ``N / 500`` providers, stored through the consumer's effect
   (``store_record``) in transactions of 1,000 positions;
2. the relay's log of the same events (leaves + subtrees) and one checkpoint anchored
   on chain;
3. search: 300 queries each by patient and by actor (first page of 50) and 300 second
   pages; per-patient accounting: 300 access reports (the patient's events, their
   proofs verified against the chain, the report document, its event queued);
4. reconciliation of the whole store, cold (every event's proof asked of the relay,
   verified on chain; every offset accounted for), then attaching every proof, then
   reconciliation again with the stored proofs (each verified on chain).

Writes ``bench/results/audit.json``.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import tempfile
import time
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from ehr.access.v1 import access_pb2
from ehr.consent.v1 import consent_pb2
from ehr.identity.v1 import identity_pb2
from ehr.vocabulary.v1 import vocabulary_pb2 as v
from google.protobuf.message import Message

from services.audit_analytics.adapters.consumer import store_record
from services.audit_analytics.adapters.proofs import DirectEventProofs
from services.audit_analytics.adapters.sql import SqlAuditRepository
from services.audit_analytics.domain.anomalies import Detector
from services.audit_analytics.domain.integrity import IntegrityService
from services.audit_analytics.domain.model import SearchQuery
from services.audit_analytics.domain.service import AuditService
from services.ledger_relay.adapters.anchor import AuditAnchorLedger
from services.ledger_relay.adapters.sql import SqlLogRepository
from services.ledger_relay.domain.merkle import CompactRange, leaf_hash
from services.ledger_relay.domain.model import (
    BusPosition,
    Checkpoint,
    CheckpointStatus,
    Leaf,
)
from services.ledger_relay.domain.proofs import ProofService
from services.platform.bus.port import Record
from services.platform.chain.inprocess import InProcessChain
from services.platform.events.envelope import (
    Actor,
    decode,
    encode,
    new_envelope,
    partition_key,
    topic_of,
)

EVENTS = int(os.environ.get("EHR_BENCH_AUDIT_EVENTS", "50000"))
QUERIES = 300
START = datetime(2025, 6, 1, tzinfo=UTC)


def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _lat(samples: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(1000 * statistics.median(samples), 3),
        "p99_ms": round(1000 * _pct(samples, 0.99), 3),
        "n": len(samples),
    }


def _events(n: int, rng: random.Random) -> list[bytes]:
    patients, providers = max(1, n // 50), max(1, n // 500)
    out: list[bytes] = []
    for i in range(n):
        patient = f"pat-{rng.randrange(patients):06d}"
        provider = f"prov-{rng.randrange(providers):05d}"
        at = START + timedelta(seconds=rng.uniform(0, 365 * 86400))
        kind = rng.random()
        payload: Message
        role: v.Role.ValueType = v.ROLE_PROVIDER
        actor = provider
        if kind < 0.70:
            payload = access_pb2.RecordRead(
                record_id=f"rec-{i}",
                version=1,
                patient_id=patient,
                reader_id=provider,
                reader_role=v.ROLE_PROVIDER,
                category=v.RECORD_CATEGORY_LABORATORY,
                purpose=v.PURPOSE_OF_USE_TREATMENT,
                basis=access_pb2.ACCESS_BASIS_CONSENT,
                grant_id=f"g-{patient}",
            )
        elif kind < 0.80:
            payload = access_pb2.ReadDenied(
                record_id=f"rec-{i}",
                patient_id=patient,
                reader_id=provider,
                reader_role=v.ROLE_PROVIDER,
                category=v.RECORD_CATEGORY_LABORATORY,
                purpose=v.PURPOSE_OF_USE_TREATMENT,
                reason=access_pb2.DENIAL_REASON_NO_GRANT,
                outcome=v.OUTCOME_MINOR_FAILURE,
            )
        elif kind < 0.81:
            payload = access_pb2.BreakGlassUsed(
                break_glass_id=f"bg-{i}",
                patient_id=patient,
                reader_id=provider,
                reader_role=v.ROLE_PROVIDER,
                categories=[v.RECORD_CATEGORY_LABORATORY],
                justification="unconscious patient, allergy list needed",
            )
        elif kind < 0.90:
            payload = consent_pb2.ConsentGranted(
                grant_id=f"g-{i}",
                patient_id=patient,
                scope=consent_pb2.GrantScope(
                    grantee_id=provider,
                    categories=[v.RECORD_CATEGORY_LABORATORY],
                    purpose=v.PURPOSE_OF_USE_TREATMENT,
                ),
            )
            role, actor = v.ROLE_PATIENT, patient
        else:
            payload = identity_pb2.LoginSucceeded(account_id=provider, role=v.ROLE_PROVIDER)
        envelope = new_envelope(payload, source="bench", actor=Actor(id=actor, role=role), time=at)
        out.append(encode(envelope))
    return out


def run(results_dir: Path) -> dict[str, Any]:
    rng = random.Random(20260301)
    workdir = Path(tempfile.mkdtemp(prefix="bench-audit-"))
    audit_url = os.environ.get(
        "EHR_BENCH_AUDIT_DATABASE_URL", f"sqlite:///{workdir / 'audit.sqlite3'}"
    )
    ledger_url = os.environ.get(
        "EHR_BENCH_LEDGER_DATABASE_URL", f"sqlite:///{workdir / 'ledger.sqlite3'}"
    )
    audit_engine, ledger_engine = sa.create_engine(audit_url), sa.create_engine(ledger_url)
    repo = SqlAuditRepository(audit_engine)
    repo.create_schema()
    log = SqlLogRepository(ledger_engine)
    log.create_schema()
    result: dict[str, Any] = {
        "events": EVENTS,
        "scaled_down_from": 1_000_000,
        "backend": {
            "audit": audit_engine.dialect.name,
            "ledger": ledger_engine.dialect.name,
            "chain": "in-process EVM",
        },
    }

    started = time.perf_counter()
    raws = _events(EVENTS, rng)
    result["build_events_per_s"] = round(EVENTS / (time.perf_counter() - started))

    # 1. ingest through the consumer's effect; offsets per partition as the bus gives them.
    offsets: dict[tuple[str, int], int] = {}
    started = time.perf_counter()
    for first in range(0, EVENTS, 1000):
        with audit_engine.begin() as connection:
            for raw in raws[first : first + 1000]:
                envelope = decode(raw)
                topic, key = topic_of(envelope).name, partition_key(envelope)
                partition = zlib.crc32(key.encode()) % 3
                offset = offsets.get((topic, partition), 0)
                offsets[(topic, partition)] = offset + 1
                store_record(connection, Record(topic, partition, offset, key, raw))
    result["ingest_events_per_s"] = round(EVENTS / (time.perf_counter() - started))

    # 2. the relay's log of the same events and one anchored checkpoint.
    started = time.perf_counter()
    frontier = CompactRange()
    stored = repo.all_events()
    for first in range(0, len(stored), 5000):
        leaves, nodes = [], []
        for e in stored[first : first + 5000]:
            index = frontier.size
            nodes += frontier.append(leaf_hash(e.event_hash))
            leaves.append(
                Leaf(
                    index,
                    e.event_hash,
                    e.record.event_id,
                    BusPosition(e.position.topic, e.position.partition, e.position.offset),
                    0,
                )
            )
        log.append(leaves, nodes)
    chain = InProcessChain()
    anchor = AuditAnchorLedger.deploy(chain, chain.new_account(), chain.new_account())
    root = frontier.root()
    receipt = anchor.wait(anchor.submit(frontier.size, root, []))
    log.add_checkpoint(Checkpoint(0, frontier.size, root, 0, b"", CheckpointStatus.PENDING))
    log.mark_anchored(0, receipt, 0, [])
    result["ledger_build_s"] = round(time.perf_counter() - started, 1)

    integrity = IntegrityService(
        repo,
        DirectEventProofs(ProofService(log)),
        anchor,
        frozenset(t for t, _ in offsets),
    )
    service = AuditService(repo, integrity, Detector())

    # 3. search and accounting latency.
    patients = sorted({e.record.patient_id for e in stored if e.record.patient_id})
    actors = sorted({e.record.actor_id for e in stored})
    samples: dict[str, list[float]] = {"by_patient": [], "by_actor": [], "second_page": []}
    for _ in range(QUERIES):
        t0 = time.perf_counter()
        service.search(SearchQuery(patient_id=rng.choice(patients), limit=50))
        samples["by_patient"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        page = service.search(SearchQuery(actor_id=rng.choice(actors), limit=50))
        samples["by_actor"].append(time.perf_counter() - t0)
        if page.next_cursor is not None:
            t0 = time.perf_counter()
            service.search(
                SearchQuery(
                    actor_id=page.items[0].record.actor_id,
                    limit=50,
                    after_sequence=page.next_cursor,
                )
            )
            samples["second_page"].append(time.perf_counter() - t0)
    result["search"] = {k: _lat(s) for k, s in samples.items() if s}

    # 4. reconciliation of the whole store: cold (every proof asked of the relay), then
    # with the proofs attached (each stored proof verified on chain).
    def reconcile() -> dict[str, Any]:
        started = time.perf_counter()
        reconciliation = integrity.reconcile()
        elapsed = time.perf_counter() - started
        return {
            "ok": reconciliation.ok,
            "events": reconciliation.events,
            "anchored": reconciliation.anchored,
            "seconds": round(elapsed, 1),
            "events_per_s": round(reconciliation.events / elapsed),
        }

    result["reconciliation_cold"] = reconcile()
    started = time.perf_counter()
    attached = integrity.attach_proofs(limit=EVENTS + 1)
    result["attach_proofs_per_s"] = round(attached / (time.perf_counter() - started))
    result["reconciliation"] = reconcile()

    accounting: list[float] = []
    sizes: list[int] = []
    for _ in range(QUERIES):
        patient = rng.choice(patients)
        t0 = time.perf_counter()
        report = service.patient_access_report(
            patient, START, START + timedelta(days=366), "bench-auditor", "auditor"
        )
        accounting.append(time.perf_counter() - t0)
        sizes.append(len(report["accesses"]))
        assert report["attestation"]["events_failed"] == 0
    result["per_patient_accounting"] = {
        **_lat(accounting),
        "mean_accesses_per_report": round(statistics.mean(sizes), 1),
        "includes": "query, proof verification of every event against the chain, document, "
        "report event queued",
    }

    chain.close()
    audit_engine.dispose()
    ledger_engine.dispose()
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / "audit.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    run(Path(__file__).resolve().parent / "results")
