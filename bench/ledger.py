"""The ledger relay on the real stack: raw consume rate, sustained anchored events/s,
publish -> anchored latency and gas per event, in checkpoint mode and in the per-event
baseline.

One run, on Kafka + Geth (three Clique sealers, 1 s blocks) + PostgreSQL started
through the local stack (``EHR_STACK__...`` settings):

1. backlog, paired with the raw consume rate, ``BACKLOG_REPEATS`` times:
   ``BACKLOG_EVENTS`` events are published on fresh topics; a bare consumer reads them
   all through the relay's bus adapter and consumer settings (``KafkaEventBus`` group
   consumer, ``fetch(2000)``, manual commit; no relay work: the same ``fetch`` the
   relay's consumer process makes, in one process), timed from the first record (group
   join and assignment excluded): the **raw consume rate**; right after, a fresh relay
   consumes, appends and anchors the same events (bounded by ``BACKLOG_LIMIT_S``).
   Appended and anchored events/s are taken from the relay's first leaf to its last
   append and its last anchored checkpoint (the whole drain, the last checkpoint's wait
   for its block included); the **steady anchored rate** is the slope of the anchored
   tree size between 10 % and 90 % of the backlog anchored (the instants the relay
   recorded those checkpoints): the relay's own ceiling, comparable with the raw rate
   measured just before it on the same events. Each pair gives a ratio; the medians of
   the raw rates, the steady rates and the ratios are reported (the machine's speed
   drifts by tens of per cent over minutes: a pair is measured within about a minute);
2. checkpoint mode, sustained: the relay (``LedgerRelayRuntime``, 1,000-event
   checkpoints, 32 in flight) runs in this process while a separate publisher process
   publishes at ``PUBLISH_RATE`` events/s (or as fast as it can, if slower) for
   ``DURATION_S`` seconds. The anchored rate is taken over the steady-state window
   ``[WARMUP_S, DURATION_S - TAIL_S]`` after the first publish: the leaves covered by
   the checkpoints anchored in the window over its length. Latency (end of the publish
   call that acknowledged the event -> the relay recording the first checkpoint
   covering it as anchored) is over the events published in that window;
3. baseline: the same relay with one anchoring transaction per event, on
   ``BASELINE_EVENTS`` events published at once (bounded by ``BASELINE_LIMIT_S``).

Gas: the anchoring transactions' gas over the events they cover. Figures are printed
and written to ``bench/results/ledger.json``. ``EHR_BENCH_LEDGER_PROFILE=path`` writes
a cProfile of the relay process (event-loop thread) during the sustained run.
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import cProfile
import gc
import json
import multiprocessing
import os
import statistics
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

PUBLISH_RATE = int(os.environ.get("EHR_BENCH_LEDGER_RATE", "15000"))
DURATION_S = float(os.environ.get("EHR_BENCH_LEDGER_DURATION_S", "30"))
WARMUP_S = float(os.environ.get("EHR_BENCH_LEDGER_WARMUP_S", "10"))
TAIL_S = float(os.environ.get("EHR_BENCH_LEDGER_TAIL_S", "5"))
BACKLOG_EVENTS = int(os.environ.get("EHR_BENCH_LEDGER_BACKLOG_EVENTS", "1000000"))
"""Read raw and drained by the relay: a read of 200,000 events (about a second) varied by
a third from run to run."""
BACKLOG_REPEATS = int(os.environ.get("EHR_BENCH_LEDGER_BACKLOG_REPEATS", "5"))
BACKLOG_LIMIT_S = float(os.environ.get("EHR_BENCH_LEDGER_BACKLOG_LIMIT_S", "180"))
BASELINE_EVENTS = int(os.environ.get("EHR_BENCH_LEDGER_BASELINE_EVENTS", "200"))
BASELINE_LIMIT_S = float(os.environ.get("EHR_BENCH_LEDGER_BASELINE_LIMIT_S", "90"))
PROFILE = os.environ.get("EHR_BENCH_LEDGER_PROFILE")
CHUNK = 500
FETCH_MAX_RECORDS = 2000  # the relay's default (``EHR_FETCH_MAX_RECORDS``)
DRAIN_LIMIT_S = 30.0


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


def _topics(prefix: str) -> list[str]:
    return [
        f"bench.{prefix}a{uuid.uuid4().hex[:8]}.v1",
        f"bench.{prefix}b{uuid.uuid4().hex[:8]}.v1",
    ]


async def _publish(
    bus: KafkaEventBus,
    topics: list[str],
    events: list[bytes],
    rate: float | None = None,
    until: float | None = None,
) -> tuple[float, list[tuple[float, bytes]]]:
    """Publishes in ``CHUNK``s, paced to ``rate`` if given, stopping at ``until`` (epoch s).
    Returns the start time and, per chunk, the time it was acknowledged and its hashes."""
    chunks: list[tuple[float, bytes]] = []
    started = time.time()
    for i in range(0, len(events), CHUNK):
        if until is not None and time.time() >= until:
            break
        chunk = events[i : i + CHUNK]
        await bus.publish_many(
            [Message(topics[(i + j) % 2], f"k{(i + j) % 31}", raw) for j, raw in enumerate(chunk)]
        )
        chunks.append((time.time(), b"".join(event_hash(raw) for raw in chunk)))
        if rate:
            await asyncio.sleep(max(0.0, started + (i + len(chunk)) / rate - time.time()))
    return started, chunks


# -- raw consume (read before each backlog drain, section 1) ---------------------------


async def raw_consume(bootstrap: str, topics: list[str], count: int) -> dict[str, Any]:
    """One read of ``count`` published events on ``topics`` by a bare consumer in a fresh
    group, timed from the first record (group join and assignment excluded)."""
    bus = KafkaEventBus(bootstrap)
    await bus.start()
    try:
        async with bus.consumer(f"bench-raw-{uuid.uuid4().hex[:8]}", topics) as consumer:
            first = await consumer.fetch(FETCH_MAX_RECORDS, timeout_s=10)
            started = time.perf_counter()
            seen = len(first)
            deadline = started + 120
            while seen < count and time.perf_counter() < deadline:
                seen += len(await consumer.fetch(FETCH_MAX_RECORDS, timeout_s=0.2))
            seconds = time.perf_counter() - started
    finally:
        await bus.close()
    return {
        "events": seen,
        "seconds": round(seconds, 3),
        "events_per_s": round(seen / seconds),
        "gc_threshold": gc.get_threshold()[0],  # the relay's consumer process: Python's 700
    }


# -- relay runtime ---------------------------------------------------------------------


class _Relay:
    """A ``LedgerRelayRuntime`` on its own database, funded key and topics."""

    def __init__(self, stack: Stack, work_dir: Path, mode: str, name: str | None = None) -> None:
        name = name or mode
        geth = stack.geth
        self.server = sa.make_url(
            stack.postgres.dsn().replace("postgresql://", "postgresql+psycopg://", 1)
        )
        self.database = f"bench_ledger_{name}_{uuid.uuid4().hex[:8]}"
        self.admin = sa.create_engine(self.server, isolation_level="AUTOCOMMIT")
        with self.admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{self.database}"'))
        account = Account.create()
        with GethChain(geth.rpc_urls, geth.chain_id, geth.faucet_private_key()) as faucet:
            faucet.fund(account.address, 10**21)
        key_file = work_dir / f"relay-{name}.key"
        descriptor = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(account.key.hex())
        self.topics = _topics(name)
        settings = LedgerRelaySettings(
            jwt={"issuer": "bench", "audience": "ledger-relay", "jwks": _jwks()},
            data_dir=work_dir / name,
            database_url=self.server.set(database=self.database).render_as_string(
                hide_password=False
            ),
            kafka_bootstrap_servers=stack.kafka.bootstrap_servers,
            chain_rpc_urls=list(geth.rpc_urls),
            chain_id=geth.chain_id,
            chain_key_file=key_file,
            mode=mode,
            checkpoint_events=1000,
            checkpoint_interval_ms=1000,
            max_in_flight=32,
            fetch_max_records=FETCH_MAX_RECORDS,
            topics=self.topics,
            consumer_group=f"bench-{name}-{uuid.uuid4().hex[:8]}",
        )
        self.runtime = LedgerRelayRuntime(settings)

    async def start(self) -> None:
        await self.runtime.start()
        await self.runtime.bus.create_topics([TopicSpec(t, 3) for t in self.topics])

    def anchored(self) -> list[Any]:
        """The anchored checkpoints, by tree size."""
        anchored = self.runtime.repository.checkpoints(CheckpointStatus.ANCHORED)
        anchored.sort(key=lambda c: c.tree_size)
        return anchored

    def results(self) -> tuple[list[Any], list[tuple[bytes, int]]]:
        """The anchored checkpoints and every leaf's (event hash, index)."""
        with self.runtime.engine.connect() as conn:
            leaves = conn.execute(
                sa.select(leaves_table.c.event_hash, leaves_table.c.leaf_index)
            ).all()
        return self.anchored(), [(bytes(d), i) for d, i in leaves]

    async def close(self) -> None:
        try:
            await self.runtime.stop()
            self.runtime.close()
        finally:
            with self.admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE "{self.database}" WITH (FORCE)'))
            self.admin.dispose()


def _latencies(
    anchored: list[Any], leaves: list[tuple[bytes, int]], published_at: dict[bytes, float]
) -> tuple[dict[bytes, float], int]:
    """Publish -> anchored seconds per anchored event hash; and how many are unanchored."""
    sizes = [c.tree_size for c in anchored]
    out: dict[bytes, float] = {}
    unanchored = 0
    for digest, index in leaves:
        at = published_at.get(digest)
        if at is None:
            continue
        k = bisect.bisect_right(sizes, index)
        if k == len(sizes) or anchored[k].anchored_at_ms is None:
            unanchored += 1
            continue
        out[digest] = anchored[k].anchored_at_ms / 1000 - at
    return out, unanchored


def _gas(anchored: list[Any]) -> tuple[int, int]:
    gas = sum(c.anchor.gas_used for c in anchored if c.anchor is not None)
    return gas, (anchored[-1].tree_size if anchored else 0)


# -- 2. sustained checkpoint mode ------------------------------------------------------


def _publisher(bootstrap: str, topics: list[str], rate: float, duration: float, conn: Any) -> None:
    """Publisher process: generates the events, says ready, publishes on ``go``."""
    events = [_event(i) for i in range(int(rate * duration * 1.05))]

    async def main() -> tuple[float, list[tuple[float, bytes]]]:
        bus = KafkaEventBus(bootstrap)
        await bus.start()
        try:
            for topic in topics:
                await bus.partitions(topic)
            conn.send("ready")
            conn.recv()
            return await _publish(bus, topics, events, rate, until=time.time() + duration)
        finally:
            await bus.close()

    conn.send(asyncio.run(main()))


async def _recv(conn: Any, limit_s: float) -> Any:
    deadline = time.monotonic() + limit_s
    while not conn.poll():
        if time.monotonic() > deadline:
            raise TimeoutError("publisher process did not answer")
        await asyncio.sleep(0.05)
    return conn.recv()


async def sustained(stack: Stack, work_dir: Path) -> dict[str, Any]:
    relay = _Relay(stack, work_dir, "checkpoint")
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(
        target=_publisher,
        args=(stack.kafka.bootstrap_servers, relay.topics, PUBLISH_RATE, DURATION_S, child),
        daemon=True,
    )
    profiler = cProfile.Profile() if PROFILE else None
    samples: list[tuple[float, int, int]] = []
    try:
        await relay.start()
        process.start()
        assert await _recv(parent, 120) == "ready"
        if profiler:
            profiler.enable()
        parent.send("go")
        sampling_until = time.monotonic() + DURATION_S + 2
        while not parent.poll() and time.monotonic() < sampling_until + 60:
            samples.append(
                (time.time(), relay.runtime.relay.tree_size, relay.runtime.relay.anchored_size)
            )
            await asyncio.sleep(0.5)
        started, chunks = await _recv(parent, 60)
        published = sum(len(d) // 32 for _, d in chunks)
        drain_deadline = time.monotonic() + DRAIN_LIMIT_S
        while relay.runtime.relay.anchored_size < published and time.monotonic() < drain_deadline:
            samples.append(
                (time.time(), relay.runtime.relay.tree_size, relay.runtime.relay.anchored_size)
            )
            await asyncio.sleep(0.5)
        if profiler and PROFILE:
            profiler.disable()
            profiler.dump_stats(PROFILE)
        anchored, leaves = relay.results()
    finally:
        await relay.close()
        process.join(10)
        if process.is_alive():
            process.kill()
    published_at = {
        digests[k : k + 32]: at for at, digests in chunks for k in range(0, len(digests), 32)
    }
    t0, t1 = started + WARMUP_S, started + DURATION_S - TAIL_S

    def anchored_by(t: float) -> int:
        return max(
            (c.tree_size for c in anchored if c.anchored_at_ms and c.anchored_at_ms / 1000 <= t),
            default=0,
        )

    def appended_by(t: float) -> int:
        return max((size for at, size, _ in samples if at <= t), default=0)

    latency, unanchored = _latencies(anchored, leaves, published_at)
    window = [s for d, s in latency.items() if t0 <= published_at[d] <= t1]
    in_window = sum(1 for at in published_at.values() if t0 <= at <= t1)
    gas, covered = _gas(anchored)
    last_publish = chunks[-1][0] if chunks else started
    return {
        "mode": "checkpoint",
        "published_events": published,
        "publish_seconds": round(last_publish - started, 2),
        "publish_events_per_s": round(published / (last_publish - started)),
        "window_s": [WARMUP_S, DURATION_S - TAIL_S],
        "anchored_events": covered,
        "unanchored_events": unanchored,
        "checkpoints": len(anchored),
        "anchored_events_per_s": round((anchored_by(t1) - anchored_by(t0)) / (t1 - t0)),
        "appended_events_per_s": round((appended_by(t1) - appended_by(t0)) / (t1 - t0)),
        "window_events": in_window,
        "window_events_anchored": len(window),
        "latency_p50_s": round(_percentile(window, 0.5), 3) if window else None,
        "latency_p99_s": round(_percentile(window, 0.99), 3) if window else None,
        "latency_max_s": round(max(window), 3) if window else None,
        "gas_per_event": round(gas / covered, 1) if covered else None,
        "gas_per_checkpoint": round(gas / len(anchored)) if anchored else None,
        "events_per_checkpoint": round(covered / len(anchored)) if anchored else None,
    }


# -- 1. backlog, after a raw read of the same events ----------------------------------


async def backlog_pair(stack: Stack, work_dir: Path, events: list[bytes], n: int) -> dict[str, Any]:
    """Publishes ``events`` on a fresh relay's topics, reads them raw, then lets the relay
    drain them: the raw consume rate and the relay's rates, one right after the other."""
    relay = _Relay(stack, work_dir, "checkpoint", name=f"backlog{n}")
    samples: list[tuple[float, int, int]] = []
    try:
        publisher = KafkaEventBus(stack.kafka.bootstrap_servers)
        await publisher.start()
        try:
            await publisher.create_topics([TopicSpec(t, 3) for t in relay.topics])
            published_from = time.perf_counter()
            await _publish(publisher, relay.topics, events)
            publish_s = time.perf_counter() - published_from
        finally:
            await publisher.close()
        raw = await raw_consume(stack.kafka.bootstrap_servers, relay.topics, len(events))
        await relay.start()
        deadline = time.monotonic() + BACKLOG_LIMIT_S
        while relay.runtime.relay.anchored_size < len(events) and time.monotonic() < deadline:
            samples.append(
                (time.time(), relay.runtime.relay.tree_size, relay.runtime.relay.anchored_size)
            )
            await asyncio.sleep(0.05)
        samples.append(
            (time.time(), relay.runtime.relay.tree_size, relay.runtime.relay.anchored_size)
        )
        anchored = relay.anchored()  # the leaves are not needed here
    finally:
        await relay.close()
    steady = _steady_rate(samples, len(events))
    first = next((at for at, size, _ in samples if size > 0), samples[-1][0])
    appended = samples[-1][1]
    appended_at = next(at for at, size, _ in samples if size == appended)
    gas, covered = _gas(anchored)
    last_anchor = max((c.anchored_at_ms or 0) for c in anchored) / 1000 if anchored else first
    return {
        "published_events": len(events),
        "publish_events_per_s": round(len(events) / publish_s),
        "raw_consume": raw,
        "appended_events": appended,
        "anchored_events": covered,
        "checkpoints": len(anchored),
        "append_seconds": round(appended_at - first, 2),
        "anchor_seconds": round(last_anchor - first, 2),
        "appended_events_per_s": round(appended / max(appended_at - first, 1e-3)),
        "anchored_events_per_s": round(covered / max(last_anchor - first, 1e-3)),
        "steady_anchored_events_per_s": steady,
        "steady_over_raw": round(steady / raw["events_per_s"], 3) if steady else None,
        "gas_per_event": round(gas / covered, 1) if covered else None,
        "events_per_checkpoint": round(covered / len(anchored)) if anchored else None,
    }


async def backlog(stack: Stack, work_dir: Path) -> dict[str, Any]:
    """``BACKLOG_REPEATS`` pairs of a raw read and a relay's drain; their medians."""
    events = [_event(i) for i in range(BACKLOG_EVENTS)]
    runs = []
    for n in range(BACKLOG_REPEATS):
        runs.append(await backlog_pair(stack, work_dir, events, n))
        run = runs[-1]
        print(
            f"backlog {n + 1}/{BACKLOG_REPEATS}: raw consume"
            f" {run['raw_consume']['events_per_s']}/s,"
            f" relay steady anchored {run['steady_anchored_events_per_s']}/s"
            f" ({run['steady_over_raw']})",
            flush=True,
        )

    def median(values: list[Any]) -> Any:
        known = [v for v in values if v is not None]
        return statistics.median(known) if len(known) == len(values) and known else None

    return {
        "mode": "checkpoint (backlog)",
        "runs": runs,
        "raw_consume_events_per_s": median([r["raw_consume"]["events_per_s"] for r in runs]),
        "steady_anchored_events_per_s": median([r["steady_anchored_events_per_s"] for r in runs]),
        "steady_over_raw": median([r["steady_over_raw"] for r in runs]),
    }


def _steady_rate(
    samples: list[tuple[float, int, int]], total: int, low: float = 0.1, high: float = 0.9
) -> int | None:
    """Anchored events/s between the samples where ``low`` and ``high`` of ``total`` were
    first seen anchored (both instants follow a recorded checkpoint)."""
    start = next(((at, done) for at, _, done in samples if done >= low * total), None)
    end = next(((at, done) for at, _, done in samples if done >= high * total), None)
    if start is None or end is None or end[0] <= start[0]:
        return None
    return round((end[1] - start[1]) / (end[0] - start[0]))


# -- 3. baseline -----------------------------------------------------------------------


async def baseline(stack: Stack, work_dir: Path) -> dict[str, Any]:
    relay = _Relay(stack, work_dir, "baseline")
    events = [_event(i) for i in range(BASELINE_EVENTS)]
    try:
        await relay.start()
        started = time.time()
        await relay.runtime.bus.publish_many(
            [Message(relay.topics[j % 2], f"k{j % 31}", raw) for j, raw in enumerate(events)]
        )
        published = time.time()
        deadline = time.monotonic() + BASELINE_LIMIT_S
        while relay.runtime.relay.anchored_size < len(events) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        anchored, leaves = relay.results()
    finally:
        await relay.close()
    latency, unanchored = _latencies(anchored, leaves, {event_hash(e): published for e in events})
    values = list(latency.values())
    gas, covered = _gas(anchored)
    last = max((c.anchored_at_ms or 0) for c in anchored) / 1000 if anchored else published
    seconds = last - started
    return {
        "mode": "baseline",
        "published_events": len(events),
        "anchored_events": covered,
        "unanchored_events": unanchored,
        "checkpoints": len(anchored),
        "seconds": round(seconds, 2),
        "anchored_events_per_s": round(covered / seconds, 1) if seconds > 0 else None,
        "latency_p50_s": round(_percentile(values, 0.5), 3) if values else None,
        "latency_p99_s": round(_percentile(values, 0.99), 3) if values else None,
        "gas_per_event": round(gas / covered, 1) if covered else None,
    }


async def _measure(stack: Stack) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as scratch:
        work_dir = Path(scratch)
        drained = await backlog(stack, work_dir)
        checkpoint = await sustained(stack, work_dir)
        base = await baseline(stack, work_dir)
    return {"backlog": drained, "checkpoint": checkpoint, "baseline": base}


def run(results_dir: Path) -> dict[str, Any]:
    """Runs the benchmark, prints a table and writes ``ledger.json`` into ``results_dir``."""
    began = time.monotonic()
    stack = Stack(StackSettings())
    components = ["kafka", "geth", "postgres"]
    stack.up(components)
    try:
        figures = asyncio.run(_measure(stack))
    finally:
        stack.down(components)
    drained, checkpoint, base = figures["backlog"], figures["checkpoint"], figures["baseline"]
    raw = drained["raw_consume_events_per_s"] or 0
    rate = checkpoint["anchored_events_per_s"] or 0
    base_rate = base["anchored_events_per_s"] or 0
    targets = {
        "checkpoint >= 10,000 events/s": rate >= 10_000,
        "checkpoint (backlog steady, median of pairs, or sustained) >= half the raw consume rate": (
            (drained["steady_over_raw"] or 0) >= 0.5 or (raw > 0 and rate >= raw / 2)
        ),
        "checkpoint >= 100x baseline": base_rate > 0 and rate >= 100 * base_rate,
        "checkpoint p99 <= 3 s": (checkpoint["latency_p99_s"] or 1e9) <= 3,
        "checkpoint <= 100 gas per event": (checkpoint["gas_per_event"] or 1e9) <= 100,
    }
    print(
        f"{'backlog':<10}{'raw read/s':>12}{'appended/s':>12}{'anchored/s':>12}{'steady/s':>10}"
        f"{'steady/raw':>12}{'ckpts':>7}{'gas/event':>11}"
    )
    for n, row in enumerate(drained["runs"], 1):
        print(
            f"{n:<10}{row['raw_consume']['events_per_s']:>12}{row['appended_events_per_s']:>12}"
            f"{row['anchored_events_per_s']:>12}{row['steady_anchored_events_per_s']!s:>10}"
            f"{row['steady_over_raw']!s:>12}{row['checkpoints']:>7}{row['gas_per_event']!s:>11}"
        )
    print(
        f"{'median':<10}{raw:>12}{'':>24}{drained['steady_anchored_events_per_s']!s:>10}"
        f"{drained['steady_over_raw']!s:>12}"
    )
    print(
        f"checkpoint: published {checkpoint['published_events']} in "
        f"{checkpoint['publish_seconds']} s ({checkpoint['publish_events_per_s']}/s); window "
        f"t={WARMUP_S:g}..{DURATION_S - TAIL_S:g} s: "
        f"appended {checkpoint['appended_events_per_s']}/s"
    )
    print(f"{'mode':<11}{'anchored/s':>12}{'p50 s':>8}{'p99 s':>8}{'gas/event':>11}{'ckpts':>7}")
    for row in (checkpoint, base):
        print(
            f"{row['mode']:<11}{row['anchored_events_per_s']!s:>12}{row['latency_p50_s']!s:>8}"
            f"{row['latency_p99_s']!s:>8}{row['gas_per_event']!s:>11}{row['checkpoints']:>7}"
        )
    ratio = round(rate / base_rate) if base_rate else None
    print(f"checkpoint / baseline: {ratio}x")
    for target, met in targets.items():
        print(f"  {'met' if met else 'NOT met'}: {target}")
    report = {
        "benchmark": "ledger",
        "workload": (
            f"backlog: {BACKLOG_REPEATS}x {BACKLOG_EVENTS} events pre-published, read by a bare "
            "consumer (raw consume), then drained by a fresh relay (medians); checkpoint: "
            f"publisher process at up to {PUBLISH_RATE}/s for {DURATION_S:g} s, relay with "
            "1,000-event checkpoints, 32 in flight, rates over "
            f"t={WARMUP_S:g}..{DURATION_S - TAIL_S:g} s; baseline: {BASELINE_EVENTS} events at "
            "once, one transaction per event; Kafka + Geth (3 Clique sealers, 1 s blocks) + "
            "PostgreSQL; 2 shared cores"
        ),
        **figures,
        "checkpoint_over_baseline": ratio,
        "targets": targets,
        "run_seconds": round(time.monotonic() - began),
    }
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / "ledger.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    run(Path(__file__).resolve().parent / "results")
