"""The relay's threads: a batch being written holds up neither anchoring nor the chain's
view of the log, and no checkpoint covers leaves whose write has not committed."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

from ledger_relay.conftest import RelayEnv, make_event
from ledger_relay.test_relay import (
    _check_log_against_chain,
    _publish,
    _run_until_anchored,
    _until,
)
from prometheus_client import CollectorRegistry

from services.ledger_relay.adapters.sql import SqlLogRepository
from services.ledger_relay.domain.merkle import Node
from services.ledger_relay.domain.model import LeafBatch
from services.ledger_relay.domain.policy import CheckpointPolicy
from services.ledger_relay.metrics import RelayMetrics
from services.ledger_relay.relay import LedgerRelay
from services.platform.bus.outbox import OutboxPublisher


class GatedRepository(SqlLogRepository):
    """Writes the first batch, then holds every later write until ``release`` is set."""

    def __init__(self, *args: object) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.writes = 0
        self.holding = threading.Event()
        self.release = threading.Event()

    def append_unknown(
        self, build: Callable[[set[bytes]], tuple[LeafBatch, Sequence[Node]]]
    ) -> LeafBatch:
        self.writes += 1
        if self.writes > 1:
            self.holding.set()
            if not self.release.wait(120):
                raise TimeoutError("the test never released the write")
        return super().append_unknown(build)


async def test_anchoring_goes_on_while_a_batch_is_written_and_covers_only_committed_leaves(
    relay_env: RelayEnv,
) -> None:
    events = [make_event(i) for i in range(30)]
    await _publish(relay_env, events)
    bus = await relay_env.bus()
    repo = GatedRepository(relay_env.engine)
    repo.create_schema()
    outbox = OutboxPublisher(relay_env.engine, bus)
    config = replace(
        relay_env.config,
        fetch_max_records=10,
        policy=CheckpointPolicy(max_events=5, max_delay_ms=100),
    )
    metrics = RelayMetrics(CollectorRegistry())
    relay = LedgerRelay(repo, relay_env.anchor, bus, config, metrics, outbox.publish_pending)
    await relay.open()
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:
        await _until(lambda: repo.holding.is_set() or task.done(), 60, "a second write")
        assert not task.done(), task
        first = relay.tree_size
        assert 0 < first <= 10
        # The second batch's write is held: the first batch is anchored all the same.
        await _until(lambda: relay.anchored_size == first or task.done(), 60, "first anchored")
        assert not task.done(), task
        assert relay.tree_size == first, "a leaf counted before its write committed"
        count = relay_env.anchor.count()
        assert count >= 1
        assert relay_env.anchor.checkpoint_at(count - 1).tree_size == first
        # Nothing beyond the committed leaves is cut while the write is held.
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            assert relay_env.anchor.count() == count
            assert repo.checkpoints()[-1].tree_size == first
            await asyncio.sleep(0.1)
        repo.release.set()
        await _until(lambda: relay.anchored_size == len(events) or task.done(), 90, "all anchored")
        assert not task.done(), task
    finally:
        repo.release.set()
        stop.set()
        await asyncio.wait_for(task, 30)
    _check_log_against_chain(relay_env, events)


class SlowFirstWrite(SqlLogRepository):
    """Holds the first write for a while; records how many events each write carried."""

    def __init__(self, *args: object) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.sizes: list[int] = []

    def append_unknown(
        self, build: Callable[[set[bytes]], tuple[LeafBatch, Sequence[Node]]]
    ) -> LeafBatch:
        if not self.sizes:
            time.sleep(1.0)  # a slow write: the relay keeps fetching meanwhile
        written = super().append_unknown(build)
        self.sizes.append(len(written))
        return written


async def _relay_with_a_slow_first_write(
    relay_env: RelayEnv, published: list[bytes]
) -> tuple[SlowFirstWrite, LedgerRelay, CollectorRegistry]:
    """A relay fetching 10 events at a time, whose first write is slow, over ``published``."""
    await _publish(relay_env, published)
    bus = await relay_env.bus()
    repo = SlowFirstWrite(relay_env.engine)
    repo.create_schema()
    registry = CollectorRegistry()
    config = replace(relay_env.config, fetch_max_records=10, max_write_records=1000)
    relay = LedgerRelay(repo, relay_env.anchor, bus, config, RelayMetrics(registry), None)
    await relay.open()
    return repo, relay, registry


async def test_what_is_fetched_during_a_write_goes_into_the_next_write_in_bus_order(
    relay_env: RelayEnv,
) -> None:
    events = [make_event(i) for i in range(120)]
    repo, relay, _ = await _relay_with_a_slow_first_write(relay_env, events)
    await _run_until_anchored(relay, len(events))
    assert sum(repo.sizes) == len(events)
    assert repo.sizes[0] <= 10
    assert max(repo.sizes[1:]) > 10, repo.sizes  # fetches gathered into one write
    offsets: dict[tuple[str, int], list[int]] = {}
    for index in range(len(events)):
        leaf = repo.leaf_at(index)
        assert leaf is not None
        offsets.setdefault((leaf.position.topic, leaf.position.partition), []).append(
            leaf.position.offset
        )
    assert all(o == sorted(o) for o in offsets.values())  # each partition in bus order
    _check_log_against_chain(relay_env, events)


async def test_one_event_in_two_fetches_of_one_write_becomes_one_leaf(
    relay_env: RelayEnv,
) -> None:
    """The same bytes published twice, fetched into different batches that are written
    together: the optimistic write is refused and the batches are built again as one."""
    events = [make_event(i) for i in range(80)]
    # The last event again: neither copy is in the first fetch (whose write is slow), so
    # both are fetched while it runs and go into the second write.
    repo, relay, registry = await _relay_with_a_slow_first_write(relay_env, [*events, events[-1]])
    skipped = "ledger_duplicates_skipped_total"
    await _run_until_anchored(
        relay, len(events), and_then=lambda: bool(registry.get_sample_value(skipped))
    )
    assert registry.get_sample_value(skipped) == 1
    assert sum(repo.sizes) == len(events)
    assert len(repo.sizes) == 2, repo.sizes  # both copies in the second write
    _check_log_against_chain(relay_env, events)
