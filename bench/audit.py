"""Audit analytics at volume (issue #7: 1,000,000 events): search and per-patient
accounting latency (p50, p99), reconciliation rate (events per second).

``python -m bench.audit [--events N] [--backend sqlite|postgresql]`` (``make bench`` runs it
with ``EHR_BENCH_AUDIT_EVENTS``, default 1,000,000, and ``EHR_BENCH_AUDIT_BACKEND``,
default ``sqlite``). Backends:

- ``sqlite``: the embedded default, SQLite files and the in-process EVM running
  ``AuditAnchor``;
- ``postgresql``: the real stack's PostgreSQL and Geth Clique network, started through
  the local stack (``EHR_STACK__...`` settings: run dir, ports) unless they already run;
  ``EHR_BENCH_AUDIT_DATABASE_URL`` / ``EHR_BENCH_LEDGER_DATABASE_URL`` name other servers.

How the store is loaded (publishing and consuming 1,000,000 events through the bus and
the relay would alone take longer than the whole budget on 2 cores, see bench/ledger.py):

1. ``N`` real envelopes (reads 70 %, refusals 10 %, break-glass 1 %, grants 9 %, logins
   10 %) over one year, ``N / 50`` patients and ``N / 500`` providers; each gets the bus
   position Kafka's partitioner gives its key (3 partitions per topic);
2. the relay's Merkle log of all of them, written in bulk into the relay's own repository
   (leaves + subtree nodes, bus order), and **one checkpoint of all N leaves anchored on
   chain** through ``AuditAnchor`` (one transaction, as the relay does per checkpoint);
3. the first ``SAMPLE`` events are stored through the consumer's effect (``store_record``,
   the live path) and their proofs attached through the relay's ``ProofService`` (the
   live proof loop); every other event is bulk-loaded (``SqlAuditRepository.load``) with
   its inclusion proof computed from the same log nodes by the relay's own RFC 9162 code,
   a random sample of which is compared with the relay's ``ProofService`` answers.

Then: search (300 queries each by patient, by actor, and next pages), per-patient
accounting (300 access reports: query, every event's proof verified against the chain,
the document, its event queued), and reconciliation of the whole store against the chain
and the bus's end offsets (every stored proof verified on chain, every offset accounted
for, every anchored leaf mapped). Writes ``bench/results/audit.json`` (sqlite) or
``bench/results/audit-postgresql.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from devstack.settings import StackSettings
from devstack.stack import Stack
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
from services.audit_analytics.domain.model import BusPosition as StoreBusPosition
from services.audit_analytics.domain.model import SearchQuery
from services.audit_analytics.domain.records import audit_record_of
from services.audit_analytics.domain.service import AuditService
from services.ledger_relay.adapters.anchor import AuditAnchorLedger
from services.ledger_relay.adapters.sql import SqlLogRepository
from services.ledger_relay.domain.merkle import (
    CompactRange,
    Coordinate,
    inclusion_proof,
    leaf_hash,
    memory_lookup,
)
from services.ledger_relay.domain.model import (
    BusPosition,
    Checkpoint,
    CheckpointStatus,
    Leaf,
    LeafBatch,
)
from services.ledger_relay.domain.proofs import ProofService
from services.platform.bus.port import Record, partition_for_key
from services.platform.chain.geth import GethChain
from services.platform.chain.inprocess import InProcessChain
from services.platform.chain.port import Chain
from services.platform.events.envelope import (
    Actor,
    decode,
    encode,
    event_hash,
    new_envelope,
    partition_key,
    topic_of,
)

DEFAULT_EVENTS = 1_000_000
SAMPLE = 10_000
"""Events stored and proven through the live path (consumer effect, relay's ProofService)."""
PARTITIONS = 3
QUERIES = 300
CHUNK = 10_000
START = datetime(2025, 6, 1, tzinfo=UTC)


def _progress(message: str) -> None:
    print(f"[bench audit {time.strftime('%H:%M:%S')}] {message}", flush=True)


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
        if i and i % 200_000 == 0:
            _progress(f"built {i:,} events")
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


@contextlib.contextmanager
def _backend(name: str, workdir: Path) -> Iterator[tuple[str, str, Chain]]:
    """(audit store URL, relay log URL, chain) of one backend; cleaned up afterwards."""
    if name == "sqlite":
        chain: Chain = InProcessChain()
        try:
            yield (
                f"sqlite:///{workdir / 'audit.sqlite3'}",
                f"sqlite:///{workdir / 'ledger.sqlite3'}",
                chain,
            )
        finally:
            chain.close()
        return
    audit_url = os.environ.get("EHR_BENCH_AUDIT_DATABASE_URL")
    ledger_url = os.environ.get("EHR_BENCH_LEDGER_DATABASE_URL")
    stack = Stack(StackSettings())
    wanted = ["geth"] + ([] if audit_url and ledger_url else ["postgres"])
    down = sorted({s.component for s in stack.status(wanted) if s.state != "running"})
    if down:
        _progress(f"starting {down} through the local stack")
        stack.up(down)
    created: list[str] = []
    admin: sa.Engine | None = None
    try:
        if not (audit_url and ledger_url):
            server = sa.make_url(
                stack.postgres.dsn().replace("postgresql://", "postgresql+psycopg://", 1)
            )
            admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
            suffix = uuid.uuid4().hex[:8]
            with admin.connect() as connection:
                for prefix in ("bench_audit", "bench_audit_ledger"):
                    connection.execute(sa.text(f'CREATE DATABASE "{prefix}_{suffix}"'))
                    created.append(f"{prefix}_{suffix}")
            audit_url = audit_url or server.set(database=created[0]).render_as_string(False)
            ledger_url = ledger_url or server.set(database=created[1]).render_as_string(False)
        geth = stack.geth
        with GethChain(list(geth.rpc_urls), geth.chain_id, geth.faucet_private_key()) as geth_chain:
            yield audit_url, ledger_url, geth_chain
    finally:
        if admin is not None:
            with admin.connect() as connection:
                for name_ in created:
                    connection.execute(sa.text(f'DROP DATABASE "{name_}" WITH (FORCE)'))
            admin.dispose()
        if down:
            stack.down(down)


def _checkpoint_json(proofs: DirectEventProofs) -> dict[str, Any]:
    latest = proofs.latest_checkpoint()
    assert latest is not None
    return latest


def run(results_dir: Path, events: int | None = None, backend: str | None = None) -> dict[str, Any]:
    n = events or int(os.environ.get("EHR_BENCH_AUDIT_EVENTS", str(DEFAULT_EVENTS)))
    backend = backend or os.environ.get("EHR_BENCH_AUDIT_BACKEND", "sqlite")
    if backend not in ("sqlite", "postgresql"):
        raise ValueError(f"unknown backend {backend!r}: sqlite or postgresql")
    workdir = Path(tempfile.mkdtemp(prefix="bench-audit-"))
    with _backend(backend, workdir) as (audit_url, ledger_url, chain):
        result = _measure(n, backend, audit_url, ledger_url, chain)
    results_dir.mkdir(parents=True, exist_ok=True)
    name = "audit.json" if backend == "sqlite" else f"audit-{backend}.json"
    (results_dir / name).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


def _measure(n: int, backend: str, audit_url: str, ledger_url: str, chain: Chain) -> dict[str, Any]:
    rng = random.Random(20260301)
    begun = time.perf_counter()
    audit_engine, ledger_engine = sa.create_engine(audit_url), sa.create_engine(ledger_url)
    repo = SqlAuditRepository(audit_engine)
    repo.create_schema()
    log = SqlLogRepository(ledger_engine)
    log.create_schema()
    sample = min(SAMPLE, n)
    result: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "command": f"python -m bench.audit --events {n} --backend {backend}",
        "events": n,
        "patients": max(1, n // 50),
        "providers": max(1, n // 500),
        "backend": {
            "audit": audit_engine.dialect.name,
            "ledger": ledger_engine.dialect.name,
            "chain": "geth (clique)" if isinstance(chain, GethChain) else "in-process EVM",
        },
        "method": (
            "real envelopes; the relay's Merkle log written in bulk into its repository and "
            "one checkpoint of every leaf anchored on chain through AuditAnchor; the first "
            f"{sample:,} events stored through the consumer's effect with proofs from the "
            "relay's ProofService, the others bulk-loaded with inclusion proofs computed "
            "by the relay's RFC 9162 code from the same log nodes (sample cross-checked)"
        ),
    }

    # 1. Events and their bus positions (Kafka's partitioner, offsets per partition).
    started = time.perf_counter()
    raws = _events(n, rng)
    positions: list[tuple[str, int, int, str]] = []
    ends: dict[tuple[str, int], int] = {}
    event_ids: list[str] = []
    for raw in raws:
        envelope = decode(raw)
        event_ids.append(envelope.id)
        topic, key = topic_of(envelope).name, partition_key(envelope)
        partition = partition_for_key(key, PARTITIONS)
        offset = ends.get((topic, partition), 0)
        ends[(topic, partition)] = offset + 1
        positions.append((topic, partition, offset, key))
    result["build_events_per_s"] = round(n / (time.perf_counter() - started))
    _progress(f"{n:,} events built in {time.perf_counter() - started:.0f} s")

    # 2. The relay's log (bus order) and one anchored checkpoint of every leaf.
    started = time.perf_counter()
    frontier = CompactRange()
    tree: dict[Coordinate, bytes] = {}
    for first in range(0, n, CHUNK):
        leaves, nodes = [], []
        for i in range(first, min(n, first + CHUNK)):
            raw, (topic, partition, offset, _) = raws[i], positions[i]
            event_id, digest = event_ids[i], event_hash(raw)
            completed = frontier.append(leaf_hash(digest))
            nodes += completed
            for node in completed:
                tree[(node.level, node.index)] = node.hash
            leaves.append(Leaf(i, digest, event_id, BusPosition(topic, partition, offset), 0))
        log.append(LeafBatch.of(leaves), nodes)
        if (first // CHUNK) % 20 == 19:
            _progress(f"relay log: {first + CHUNK:,} leaves")
    anchor = AuditAnchorLedger.deploy(chain, chain.new_account(), chain.new_account())
    root = frontier.root()
    receipt = anchor.wait(anchor.submit(n, root, []))
    log.add_checkpoint(Checkpoint(0, n, root, 0, b"", CheckpointStatus.PENDING))
    log.mark_anchored(0, receipt, 0, [])
    result["ledger_build_s"] = round(time.perf_counter() - started, 1)
    _progress(f"relay log of {n:,} leaves + anchored checkpoint in {result['ledger_build_s']} s")
    proofs = DirectEventProofs(ProofService(log))
    checkpoint = _checkpoint_json(proofs)
    lookup = memory_lookup(tree)

    def proof_of(i: int) -> dict[str, Any]:
        return {
            "event_id": event_ids[i],
            "event_hash": event_hash(raws[i]).hex(),
            "leaf_index": i,
            "proof": [p.hex() for p in inclusion_proof(i, n, lookup)],
            "checkpoint": checkpoint,
        }

    checked = rng.sample(range(n), min(200, n))
    for i in checked:
        assert proof_of(i) == proofs.inclusion(event_ids[i]), f"proof of leaf {i} differs"
    result["bulk_proofs_checked_against_relay"] = len(checked)

    integrity = IntegrityService(repo, proofs, anchor, frozenset(t for t, _ in ends))
    service = AuditService(repo, integrity, Detector())

    # 3a. The live path on a sample: the consumer's effect, then the relay's proofs.
    started = time.perf_counter()
    for first in range(0, sample, 1000):
        with audit_engine.begin() as connection:
            for i in range(first, min(sample, first + 1000)):
                topic, partition, offset, key = positions[i]
                store_record(connection, Record(topic, partition, offset, key, raws[i]))
    result["ingest_consumer_effect_events_per_s"] = round(sample / (time.perf_counter() - started))
    started = time.perf_counter()
    attached = integrity.attach_proofs(limit=sample)
    assert attached == sample, (attached, sample)
    result["attach_proofs_from_relay_per_s"] = round(sample / (time.perf_counter() - started))
    _progress(f"live path: {sample:,} events consumed and proven")

    # 3b. Bulk load of the rest, each event with its proof.
    started = time.perf_counter()
    for first in range(sample, n, CHUNK):
        items = []
        for i in range(first, min(n, first + CHUNK)):
            topic, partition, offset, _ = positions[i]
            record = audit_record_of(raws[i], StoreBusPosition(topic, partition, offset))
            items.append((record, raws[i], proof_of(i)))
        with audit_engine.begin() as connection:
            repo.load(connection, items)
        if (first // CHUNK) % 20 == 19:
            _progress(f"bulk load: {first + CHUNK:,} events")
    with audit_engine.begin() as connection:  # planner statistics, as autovacuum would
        connection.execute(sa.text("ANALYZE"))
    loaded = n - sample
    elapsed = time.perf_counter() - started
    result["bulk_load_events_per_s"] = round(loaded / elapsed) if loaded else None
    result["load_total_s"] = round(time.perf_counter() - begun, 1)
    _progress(f"bulk load of {loaded:,} events with proofs in {elapsed:.0f} s")

    # 4. Search latency.
    with audit_engine.connect() as connection:
        patients = [
            r[0]
            for r in connection.execute(
                sa.text("SELECT DISTINCT patient_id FROM audit_events WHERE patient_id <> ''")
            )
        ]
        actors = [
            r[0] for r in connection.execute(sa.text("SELECT DISTINCT actor_id FROM audit_events"))
        ]
    patients.sort()
    actors.sort()
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
    _progress(f"search: {result['search']}")

    # 5. Per-patient accounting.
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
        assert report["attestation"]["events_pending"] == 0
    result["per_patient_accounting"] = {
        **_lat(accounting),
        "mean_accesses_per_report": round(statistics.mean(sizes), 1),
        "includes": "query, proof verification of every event against the chain, document, "
        "report event queued",
    }
    _progress(f"per-patient accounting: {result['per_patient_accounting']}")

    # 6. Reconciliation of the whole store against the chain, the log and the bus's ends.
    started = time.perf_counter()
    reconciliation = integrity.reconcile(ends)
    elapsed = time.perf_counter() - started
    result["reconciliation"] = {
        "ok": reconciliation.ok,
        "events": reconciliation.events,
        "positions": reconciliation.positions,
        "anchored": reconciliation.anchored,
        "positions_not_consumed": sum(reconciliation.not_consumed.values()),
        "discrepancies": len(reconciliation.discrepancies),
        "seconds": round(elapsed, 1),
        "events_per_s": round(reconciliation.events / elapsed),
        "includes": "every stored proof verified against the chain's checkpoint, bytes "
        "against hashes, duplicates, every bus offset against the end offsets, per-partition "
        "order, every anchored leaf mapped to a stored event",
    }
    assert reconciliation.ok, reconciliation.discrepancies[:5]
    assert reconciliation.anchored == n
    _progress(f"reconciliation: {result['reconciliation']}")
    result["total_s"] = round(time.perf_counter() - begun, 1)
    audit_engine.dispose()
    ledger_engine.dispose()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.audit", description=__doc__)
    parser.add_argument("--events", type=int, default=None, help="default 1,000,000")
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default=None)
    args = parser.parse_args(argv)
    run(Path(__file__).resolve().parent / "results", args.events, args.backend)
    return 0


if __name__ == "__main__":
    sys.exit(main())
