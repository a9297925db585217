"""The ledger relay on the real stack: raw consume rate, anchored events/s, publish ->
anchored latency and gas per event, in checkpoint mode and in the per-event baseline.

One run, on Kafka + Geth (three Clique sealers, 1 s blocks) + PostgreSQL started
through the local stack (``EHR_STACK__...`` settings):

1. raw consume: ``EVENTS`` events published, then read back by a bare consumer;
2. checkpoint mode: the relay (``LedgerRelayRuntime``, 1,000-event checkpoints) runs
   while ``EVENTS`` events are published at ``PUBLISH_RATE`` events/s;
3. baseline: the same relay with one anchoring transaction per event, on
   ``BASELINE_EVENTS`` events published at once.

Latency of an event: from the end of the publish call that sent it to the time the
relay recorded the first checkpoint covering it as anchored (receipt seen). Throughput:
events over the time from the first publish to the last anchoring. Gas: the
anchoring transactions' gas over the events they cover. Figures are printed and
written to ``bench/results/ledger.json``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric import ec
from devstack.settings import StackSettings
from devstack.stack import Stack
from ehr.ledger.v1 import ledger_pb2
from ehr.vocabulary.v1 import vocabulary_pb2
from eth_account import Account

from services.ledger_relay.adapters.sql import leaves_table
from services.ledger_relay.domain.model import CheckpointStatus
from services.ledger_relay.main import LedgerRelayRuntime, LedgerRelaySettings
from services.platform.bus.kafka import KafkaEventBus
from services.platform.bus.port import Message, TopicSpec
from services.platform.chain.geth import GethChain
from services.platform.events.envelope import Actor, encode, event_hash, new_envelope

EVENTS = int(os.environ.get("EHR_BENCH_LEDGER_EVENTS", "20000"))
PUBLISH_RATE = int(os.environ.get("EHR_BENCH_LEDGER_RATE", "10000"))
BASELINE_EVENTS = int(os.environ.get("EHR_BENCH_LEDGER_BASELINE_EVENTS", "200"))
CHUNK = 500
TIME_LIMIT_S = 180.0


def _event(n: int) -> bytes:
    payload = ledger_pb2.CheckpointAnchored(log_id=f"bench-{n % 97}", tree_size=n)
    actor = Actor(id="bench", role=vocabulary_pb2.ROLE_SERVICE)
    return encode(new_envelope(payload, source="bench", actor=actor))


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def _jwks() -> dict[str, Any]:
    """A throwaway verification key: the bench calls no authenticated endpoint."""
    numbers = ec.generate_private_key(ec.SECP256R1()).public_key().public_numbers()

    def b64(n: int) -> str:
        return base64.urlsafe_b64encode(n.to_bytes(32, "big")).rstrip(b"=").decode()

    key = {"kty": "EC", "crv": "P-256", "x": b64(numbers.x), "y": b64(numbers.y), "kid": "b"}
    return {"keys": [key]}


async def raw_consume(bootstrap: str, events: list[bytes]) -> dict[str, Any]:
    topics = [f"bench.rawa{uuid.uuid4().hex[:8]}.v1", f"bench.rawb{uuid.uuid4().hex[:8]}.v1"]
    bus = KafkaEventBus(bootstrap)
    await bus.start()
    try:
        await bus.create_topics([TopicSpec(t, 3) for t in topics])
        for i in range(0, len(events), CHUNK):
            await bus.publish_many(
                [Message(topics[j % 2], f"k{j % 31}", events[j]) for j in range(i, i + CHUNK)]
            )
        seen = 0
        async with bus.consumer(f"bench-raw-{uuid.uuid4().hex[:8]}", topics) as consumer:
            started = time.perf_counter()
            deadline = started + TIME_LIMIT_S
            while seen < len(events) and time.perf_counter() < deadline:
                seen += len(await consumer.fetch(2000, timeout_s=0.5))
            seconds = time.perf_counter() - started
    finally:
        await bus.close()
    return {"events": seen, "seconds": round(seconds, 2), "events_per_s": round(seen / seconds)}


async def relay_run(
    stack: Stack, work_dir: Path, mode: str, events: list[bytes], rate: int | None
) -> dict[str, Any]:
    geth = stack.geth
    server = sa.make_url(stack.postgres.dsn().replace("postgresql://", "postgresql+psycopg://", 1))
    database = f"bench_ledger_{mode}_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{database}"'))
    account = Account.create()
    with GethChain(geth.rpc_urls, geth.chain_id, geth.faucet_private_key()) as faucet:
        faucet.fund(account.address, 10**21)
    key_file = work_dir / f"relay-{mode}.key"
    descriptor = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(account.key.hex())
    topics = [f"bench.{mode}a{uuid.uuid4().hex[:8]}.v1", f"bench.{mode}b{uuid.uuid4().hex[:8]}.v1"]
    settings = LedgerRelaySettings(
        jwt={"issuer": "bench", "audience": "ledger-relay", "jwks": _jwks()},
        data_dir=work_dir / mode,
        database_url=server.set(database=database).render_as_string(hide_password=False),
        kafka_bootstrap_servers=stack.kafka.bootstrap_servers,
        chain_rpc_urls=list(geth.rpc_urls),
        chain_id=geth.chain_id,
        relay_key_file=key_file,
        mode=mode,
        checkpoint_events=1000,
        checkpoint_interval_ms=1000,
        max_in_flight=32,
        topics=topics,
        consumer_group=f"bench-{mode}-{uuid.uuid4().hex[:8]}",
    )
    runtime = LedgerRelayRuntime(settings)
    published_at: dict[bytes, float] = {}
    try:
        await runtime.start()
        await runtime.bus.create_topics([TopicSpec(t, 3) for t in topics])
        step = CHUNK if rate else len(events)
        first_publish = time.time()
        for i in range(0, len(events), step):
            chunk = events[i : i + step]
            await runtime.bus.publish_many(
                [
                    Message(topics[(i + j) % 2], f"k{(i + j) % 31}", raw)
                    for j, raw in enumerate(chunk)
                ]
            )
            now = time.time()
            published_at.update({event_hash(raw): now for raw in chunk})
            if rate:
                await asyncio.sleep(max(0.0, first_publish + (i + step) / rate - time.time()))
        deadline = time.monotonic() + TIME_LIMIT_S
        while runtime.relay.anchored_size < len(events) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        anchored = runtime.repository.checkpoints(CheckpointStatus.ANCHORED)
        with runtime.engine.connect() as conn:
            leaves = conn.execute(
                sa.select(leaves_table.c.event_hash, leaves_table.c.leaf_index)
            ).all()
    finally:
        await runtime.stop()
        runtime.close()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE "{database}" WITH (FORCE)'))
        admin.dispose()
    sizes = [c.tree_size for c in anchored]
    latencies = []
    for digest, index in leaves:
        covering = next((c for c in anchored if c.tree_size > index), None)
        if covering is not None and covering.anchored_at_ms is not None:
            latencies.append(covering.anchored_at_ms / 1000 - published_at[bytes(digest)])
    anchored_events = sizes[-1] if sizes else 0
    last = max((c.anchored_at_ms or 0) for c in anchored) / 1000 if anchored else first_publish
    seconds = last - first_publish
    gas = sum(c.anchor.gas_used for c in anchored if c.anchor is not None)
    return {
        "mode": mode,
        "events": len(events),
        "anchored_events": anchored_events,
        "checkpoints": len(anchored),
        "seconds": round(seconds, 2),
        "anchored_events_per_s": round(anchored_events / seconds, 1) if seconds > 0 else None,
        "latency_p50_s": round(_percentile(latencies, 0.5), 3) if latencies else None,
        "latency_p99_s": round(_percentile(latencies, 0.99), 3) if latencies else None,
        "gas_per_event": round(gas / anchored_events, 1) if anchored_events else None,
        "gas_per_checkpoint": round(gas / len(anchored)) if anchored else None,
    }


async def _measure(stack: Stack) -> dict[str, Any]:
    events = [_event(i) for i in range(EVENTS)]
    raw = await raw_consume(stack.kafka.bootstrap_servers, events)
    with tempfile.TemporaryDirectory() as scratch:
        work_dir = Path(scratch)
        checkpoint = await relay_run(
            stack, work_dir, "checkpoint", [_event(i) for i in range(EVENTS)], PUBLISH_RATE
        )
        baseline = await relay_run(
            stack, work_dir, "baseline", [_event(i) for i in range(BASELINE_EVENTS)], None
        )
    return {"raw_consume": raw, "checkpoint": checkpoint, "baseline": baseline}


def run(results_dir: Path) -> dict[str, Any]:
    """Runs the benchmark, prints a table and writes ``ledger.json`` into ``results_dir``."""
    stack = Stack(StackSettings())
    components = ["kafka", "geth", "postgres"]
    stack.up(components)
    try:
        figures = asyncio.run(_measure(stack))
    finally:
        stack.down(components)
    raw, checkpoint, baseline = figures["raw_consume"], figures["checkpoint"], figures["baseline"]
    rate = checkpoint["anchored_events_per_s"] or 0
    base_rate = baseline["anchored_events_per_s"] or 0
    targets = {
        "checkpoint >= 10,000 events/s": rate >= 10_000,
        "checkpoint >= half the raw consume rate": rate >= raw["events_per_s"] / 2,
        "checkpoint >= 100x baseline": base_rate > 0 and rate >= 100 * base_rate,
        "checkpoint p99 <= 3 s": (checkpoint["latency_p99_s"] or 1e9) <= 3,
        "checkpoint <= 100 gas per event": (checkpoint["gas_per_event"] or 1e9) <= 100,
    }
    print(f"raw consume: {raw['events']} events in {raw['seconds']} s = {raw['events_per_s']}/s")
    print(
        f"{'mode':<11}{'events':>8}{'ckpts':>7}{'seconds':>9}{'anchored/s':>12}"
        f"{'p50 s':>8}{'p99 s':>8}{'gas/event':>11}"
    )
    for row in (checkpoint, baseline):
        print(
            f"{row['mode']:<11}{row['anchored_events']:>8}{row['checkpoints']:>7}"
            f"{row['seconds']:>9}{row['anchored_events_per_s']!s:>12}"
            f"{row['latency_p50_s']!s:>8}{row['latency_p99_s']!s:>8}{row['gas_per_event']!s:>11}"
        )
    for target, met in targets.items():
        print(f"  {'met' if met else 'NOT met'}: {target}")
    report = {
        "benchmark": "ledger",
        "workload": (
            f"{EVENTS} events published at {PUBLISH_RATE}/s (checkpoint mode, 1,000-event "
            f"checkpoints, 32 in flight), {BASELINE_EVENTS} at once (baseline: one "
            "transaction per event); Kafka + Geth (3 Clique sealers, 1 s blocks) + PostgreSQL"
        ),
        **figures,
        "targets": targets,
    }
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / "ledger.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    run(Path(__file__).resolve().parent / "results")
