"""Publish and consume throughput of the two event bus adapters (embedded log and Kafka).

Run with ``python -m bench.bus`` (or through ``make bench``). Kafka is started
through the local stack (``EHR_STACK__...`` settings) unless it already runs,
and stopped afterwards only if this run started it. Figures are printed and
written to ``bench/results/bus.json``.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from devstack.settings import StackSettings
from devstack.stack import Stack

from services.platform.bus import EventBus, Message, TopicSpec
from services.platform.bus.embedded import EmbeddedEventBus
from services.platform.bus.kafka import KafkaEventBus

MESSAGES = int(os.environ.get("EHR_BENCH_BUS_MESSAGES", "20000"))
BATCH = 500
PAYLOAD = b"x" * 200
TIME_LIMIT_S = 60.0


async def measure(bus: EventBus, label: str, messages: int) -> dict[str, Any]:
    """Publishes ``messages`` records (in batches of ``BATCH``) and consumes them all."""
    topic = f"bench.bus.{uuid.uuid4().hex[:8]}"
    await bus.create_topics([TopicSpec(topic, 3)])
    published = 0
    started = time.perf_counter()
    while published < messages and time.perf_counter() - started < TIME_LIMIT_S:
        count = min(BATCH, messages - published)
        batch = [Message(topic, f"patient-{(published + i) % 1000}", PAYLOAD) for i in range(count)]
        await bus.publish_many(batch)
        published += count
    publish_s = time.perf_counter() - started

    single_count, single_started = 0, time.perf_counter()
    while time.perf_counter() - single_started < 2.0:  # one acknowledged publish at a time
        await bus.publish(topic, f"patient-{single_count}", PAYLOAD)
        single_count += 1
    single_s = time.perf_counter() - single_started

    total = published + single_count
    consumed = 0
    started = time.perf_counter()
    async with bus.consumer(f"bench-{uuid.uuid4().hex[:8]}", [topic]) as consumer:
        while consumed < total and time.perf_counter() - started < TIME_LIMIT_S:
            records = await consumer.fetch(max_records=BATCH, timeout_s=1.0)
            consumed += len(records)
            await consumer.commit_records(records)
    consume_s = time.perf_counter() - started
    return {
        "adapter": label,
        "payload_bytes": len(PAYLOAD),
        "published": published,
        "publish_batch": BATCH,
        "publish_msgs_per_s": round(published / publish_s),
        "single_publish_msgs_per_s": round(single_count / single_s),
        "consumed": consumed,
        "consume_commit_msgs_per_s": round(consumed / consume_s),
    }


async def measure_all(kafka_bootstrap: str) -> list[dict[str, Any]]:
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-bus-") as folder:
        async with EmbeddedEventBus(Path(folder)) as embedded:
            results.append(await measure(embedded, "embedded", MESSAGES))
    async with KafkaEventBus(kafka_bootstrap) as kafka:
        results.append(await measure(kafka, "kafka", MESSAGES))
    return results


def run(results_dir: Path) -> dict[str, Any]:
    """Runs the benchmark, prints a table and writes ``bus.json`` into ``results_dir``."""
    stack = Stack(StackSettings())
    started_here = not stack.kafka.ready()
    if started_here:
        stack.up(["kafka"])
    try:
        rows = asyncio.run(measure_all(stack.kafka.bootstrap_servers))
    finally:
        if started_here:
            stack.down(["kafka"])
    print(f"{'adapter':<10}{'publish/s (batch)':>20}{'publish/s (single)':>20}{'consume/s':>12}")
    for row in rows:
        print(
            f"{row['adapter']:<10}{row['publish_msgs_per_s']:>20,}"
            f"{row['single_publish_msgs_per_s']:>20,}{row['consume_commit_msgs_per_s']:>12,}"
        )
    report = {"benchmark": "bus", "messages": MESSAGES, "results": rows}
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / "bus.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    run(Path(__file__).resolve().parent / "results")
