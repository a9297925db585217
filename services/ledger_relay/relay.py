"""The relay use case: consume every domain topic into the log, anchor checkpoints on chain.

Exactly once, by construction:

- Consuming: the leaves of a fetched batch and their bus positions are stored in
  one transaction; offsets are committed only afterwards. A redelivered event
  (same bytes, hence same hash and id) is skipped, so it keeps its first leaf
  position: a batch is written optimistically, and the log's unique (event id,
  event hash) rejects one that holds a known event, which is then looked up and the
  batch built again.
- Anchoring: a checkpoint is recorded as *pending* before its transaction is
  sent and marked *anchored* (with the checkpoint-anchored event in the outbox,
  same transaction) after the receipt. The chain is the source of truth: on
  start and after any chain error the relay waits for its in-flight
  transactions to settle, reads the contract's checkpoints, checks each against
  its own log (same root at that size) and records them; pending checkpoints the
  chain does not hold are forgotten and cut again. ``AuditAnchor`` only accepts
  a larger tree with a consistency proof from its latest checkpoint, so a stale
  retry can never anchor the same leaves twice.

The relay reads the bus as columns (``ColumnConsumer``): the bus's own consumer, or, with
Kafka in production, a consumer in a child process (``ProcessConsumer``) that fetches and
decodes records outside this process's GIL and commits only when the relay asks.

Off the event loop: the relay's database and chain calls run on its own threads, so
consuming, cutting and receipt polling do not wait on each other:

- ``ledger-build`` (one thread): a fetched batch's event hashes, ids and Merkle appends,
  on top of the batches built before it, while those are being written;
- ``ledger-store`` (one thread): the bulk write of the batches built so far, in one
  transaction (one write at a time, in bus order). The consume loop fetches and builds
  while a write runs, and commits offsets only once their write has committed;
- ``ledger-anchor`` (one thread): cutting a checkpoint (root and consistency proof from
  the stored subtrees, the pending row), sending its transaction, marking it anchored;
- ``ledger-receipts`` (one thread): receipt waits, oldest first (transactions are mined
  in nonce order, and anchors are recorded in that order).

A checkpoint covers only leaves whose write has committed (``stored``), never the ones
of a batch still being written, so the chain never holds a root the log could lose.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from itertools import pairwise
from typing import TypeVar

from ehr.ledger.v1 import ledger_pb2
from ehr.vocabulary.v1 import vocabulary_pb2
from google.protobuf.message import DecodeError

from services.ledger_relay.domain.errors import LedgerError, LogDiverged
from services.ledger_relay.domain.merkle import (
    EMPTY_ROOT,
    STORED_FROM_LEVEL,
    CompactRange,
    Node,
    consistency_proof,
    leaf_hashes,
    root_of,
)
from services.ledger_relay.domain.model import (
    EVENT_ID_MAX_CHARS,
    AnchorLedger,
    ChainAnchor,
    Checkpoint,
    CheckpointStatus,
    LeafBatch,
    LogRepository,
    OutgoingEvent,
)
from services.ledger_relay.domain.policy import CheckpointPolicy
from services.ledger_relay.metrics import RelayMetrics
from services.platform.bus.port import ColumnConsumer, EventBus, RecordColumns, TopicSpec
from services.platform.chain.port import ChainError
from services.platform.events.envelope import (
    Actor,
    EnvelopeId,
    encode,
    event_hashes,
    new_envelope,
)
from services.platform.events.topics import DOMAIN_TOPICS as DOMAIN_TOPICS
from services.platform.events.topics import (
    LEDGER_CHECKPOINTS,
    LEDGER_RELAY_CONSUMER_GROUP,
)

log = logging.getLogger(__name__)

CONSUMER_GROUP = LEDGER_RELAY_CONSUMER_GROUP
"""The relay's consumer group: its committed offsets tell how far the log has consumed."""

CrashHook = Callable[[str], None]
ConsumerFactory = Callable[[str, list[str]], ColumnConsumer]
T = TypeVar("T")


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class RelayConfig:
    log_id: str = "ehr-audit-log"
    group: str = CONSUMER_GROUP
    topics: tuple[str, ...] = DOMAIN_TOPICS
    partitions: int = 3
    policy: CheckpointPolicy = field(default_factory=CheckpointPolicy)
    max_in_flight: int = 8
    """Anchoring transactions in flight at once (each proves consistency from the previous)."""
    fetch_max_records: int = 2000
    max_write_records: int = 20000
    """At most this many records in one write (fetched while the previous write runs)."""
    settle_blocks: int = 0
    """Blocks to wait, before reading the chain, for transactions a crash left in flight."""
    retry_initial_s: float = 0.2
    retry_max_s: float = 5.0
    tick_s: float = 0.02
    max_checkpoint_leaves: int | None = None
    """At most this many new leaves per checkpoint (1: the per-event baseline)."""


UNPARSABLE = (DecodeError, RuntimeError, ValueError)
"""What protobuf raises for bytes that are not an ``EnvelopeId``."""


def event_ids_of(values: Sequence[bytes], digests: Sequence[bytes]) -> list[str]:
    """The envelope id of each event; its hash in hex if its bytes are not an envelope or
    their id is empty, not printable or longer than ``EVENT_ID_MAX_CHARS`` (so any bytes
    on the bus make a leaf the log can store). Runs for every event consumed: only the id
    field is decoded (``EnvelopeId``), and the checks are made over the whole batch at
    once, event by event only when one fails."""
    parse = EnvelopeId.FromString
    try:
        ids = [parse(raw).id for raw in values]
    except UNPARSABLE:
        ids = [_envelope_id(raw) for raw in values]
    if ids and (
        "" in ids or max(map(len, ids)) > EVENT_ID_MAX_CHARS or not "".join(ids).isprintable()
    ):
        ids = [
            event_id
            if 0 < len(event_id) <= EVENT_ID_MAX_CHARS and event_id.isprintable()
            else digest.hex()
            for event_id, digest in zip(ids, digests, strict=True)
        ]
    return ids


def _envelope_id(raw: bytes) -> str:
    """The id field of ``raw``, or "" if it does not parse."""
    try:
        return EnvelopeId.FromString(raw).id
    except UNPARSABLE:
        return ""


@dataclass(frozen=True, slots=True)
class _Built:
    """A fetched batch made into leaves on top of ``base`` (the range it was built on)."""

    columns: RecordColumns
    base: CompactRange
    batch: LeafBatch
    nodes: list[Node]
    compact: CompactRange


class LedgerRelay:
    def __init__(
        self,
        repository: LogRepository,
        anchor: AnchorLedger,
        bus: EventBus,
        config: RelayConfig,
        metrics: RelayMetrics,
        publish_outbox: Callable[[], Awaitable[int]] | None = None,
        crash_hook: CrashHook | None = None,
        consumer: ConsumerFactory | None = None,
    ) -> None:
        """``consumer`` makes the group member the relay reads (default: the bus's own
        consumer, in this process)."""
        self._repo = repository
        self._anchor = anchor
        self._bus = bus
        self._config = config
        self._metrics = metrics
        self._publish_outbox = publish_outbox
        self._crash_hook = crash_hook or (lambda _point: None)
        self._consumer: ConsumerFactory = consumer or bus.consumer
        self._compact = CompactRange()
        """The store thread's range: every leaf whose write has committed."""
        self._tip = self._compact
        """The build thread's range: the last batch built, maybe not written yet."""
        self._stored = CompactRange()
        """The leaves whose write has committed: what a checkpoint may cover."""
        self._cut_size = 0
        self._cut_root = EMPTY_ROOT
        self._next_index = 0
        self._anchored_size = 0
        self._uncovered_since_ms: int | None = None
        self._in_flight: deque[tuple[Checkpoint, int, asyncio.Future[ChainAnchor]]] = deque()
        self._wake = asyncio.Event()
        self._executors: dict[str, ThreadPoolExecutor] = {}
        self._outbox_task: asyncio.Task[None] | None = None
        self._outbox_due = False

    # -- threads -----------------------------------------------------------------

    async def _on(self, thread: str, work: Callable[[], T]) -> T:
        """Runs ``work`` on the relay's thread ``thread`` (one worker each, in order)."""
        executor = self._executors.get(thread)
        if executor is None:
            executor = ThreadPoolExecutor(1, thread_name_prefix=f"ledger-{thread}")
            self._executors[thread] = executor
        return await asyncio.get_running_loop().run_in_executor(executor, work)

    def _release_threads(self) -> None:
        """Lets the threads end (work already running finishes; queued work is dropped)."""
        executors, self._executors = self._executors, {}
        for executor in executors.values():
            executor.shutdown(wait=False, cancel_futures=True)

    # -- state -------------------------------------------------------------------

    @property
    def tree_size(self) -> int:
        """Leaves stored (their write committed)."""
        return self._stored.size

    @property
    def anchored_size(self) -> int:
        return self._anchored_size

    async def open(self) -> None:
        """Creates the schema and topics, reconciles with the chain, restores the tree."""
        self._repo.create_schema()
        await self._bus.create_topics(
            [TopicSpec(t, self._config.partitions) for t in (*self._config.topics,)]
            + [TopicSpec(LEDGER_CHECKPOINTS.name, self._config.partitions)]
        )
        size = self._repo.tree_size()
        self._compact = CompactRange.restore(size, self._repo.nodes)
        self._stored = self._compact.copy()
        await self.reconcile()
        self._metrics.tree_size.set(size)

    async def reconcile(self) -> None:
        """Makes the local checkpoints agree with the chain's (see the module docstring)."""
        if self._repo.checkpoints(CheckpointStatus.PENDING) and self._config.settle_blocks:
            start = await asyncio.to_thread(self._anchor.block_number)
            while (
                await asyncio.to_thread(self._anchor.block_number)
                < start + self._config.settle_blocks
            ):
                await asyncio.sleep(0.1)
        count = await asyncio.to_thread(self._anchor.count)
        latest = self._repo.latest_anchored()
        first = 0 if latest is None else latest.index + 1
        previous = (0, EMPTY_ROOT) if latest is None else (latest.tree_size, latest.root)
        for index in range(first, count):
            on_chain = await asyncio.to_thread(self._anchor.checkpoint_at, index)
            if on_chain.tree_size > self._stored.size or (
                root_of(on_chain.tree_size, self._repo.nodes) != on_chain.root
            ):
                raise LogDiverged(
                    f"chain checkpoint {index} (size {on_chain.tree_size}) "
                    "is not a prefix of the log"
                )
            local = self._repo.checkpoint(index)
            if local is None or local.tree_size != on_chain.tree_size:
                self._repo.drop_pending(index)
                local = Checkpoint(
                    index,
                    on_chain.tree_size,
                    on_chain.root,
                    previous[0],
                    previous[1],
                    CheckpointStatus.PENDING,
                    cut_at_ms=_now_ms(),
                )
                self._repo.add_checkpoint(local)
            found = await asyncio.to_thread(self._anchor.find_anchor, index)
            self._record_anchored(local, found, None)
            previous = (on_chain.tree_size, on_chain.root)
        dropped = self._repo.drop_pending(count)
        if dropped:
            log.info("forgot %d pending checkpoints the chain does not hold", dropped)
        self._cut_size, self._cut_root = previous
        self._anchored_size = previous[0]
        self._next_index = count
        if self._stored.size > self._cut_size and self._uncovered_since_ms is None:
            self._uncovered_since_ms = _now_ms()
        self._metrics.lag.set(self._stored.size - self._anchored_size)
        await self._flush_outbox()

    # -- consuming ---------------------------------------------------------------

    def _build(self, columns: RecordColumns) -> _Built:
        """Makes a fetched batch's leaves and stored subtrees on top of the last batch built
        (``ledger-build`` thread), as if every event were new: the write checks that."""
        base = self._tip
        batch, nodes, compact = self._leaves_of(columns, base, set())
        self._tip = compact
        return _Built(columns, base, batch, nodes, compact)

    @staticmethod
    def _leaves_of(
        columns: RecordColumns, base: CompactRange, seen: set[bytes]
    ) -> tuple[LeafBatch, list[Node], CompactRange]:
        """The leaves of the records whose hash is not in ``seen`` (each hash once),
        appended to a copy of ``base``, with the subtrees they complete at the stored
        levels. Column by column: this runs for every event consumed."""
        digests = event_hashes(columns.values)
        distinct = set(digests)
        if len(distinct) != len(digests) or not seen.isdisjoint(distinct):
            seen = set(seen)
            kept = []
            for k, digest in enumerate(digests):
                if digest not in seen:
                    seen.add(digest)
                    kept.append(k)
            columns = columns.take(kept)
            digests = [digests[k] for k in kept]
        compact = base.copy()
        batch = LeafBatch(
            compact.size,
            digests,
            event_ids_of(columns.values, digests),
            columns.topics,
            columns.partitions,
            columns.offsets,
            _now_ms(),
        )
        nodes = compact.extend(leaf_hashes(digests), STORED_FROM_LEVEL)
        return batch, nodes, compact

    def _write(
        self, group: Sequence[_Built], columns: RecordColumns
    ) -> tuple[int, int, CompactRange | None, bool]:
        """Writes built batches in one transaction (``ledger-store`` thread), skipping events
        already in the log. They are written as built when they follow the stored range and
        each other; if that write is refused for a known event (a redelivery, a batch before
        them that held one, or one event in two of them), the repository has them built
        again on the stored range, without the known events. Returns the leaves appended,
        the duplicates skipped, the stored range (``None`` if no leaf) and whether they were
        built again. ``columns`` are the group's records, in order."""
        result: list[CompactRange] = []
        chained = group[0].base is self._compact and all(
            after.base is before.compact for before, after in pairwise(group)
        )

        def build(seen: set[bytes]) -> tuple[LeafBatch, list[Node]]:
            if chained and not result:  # the first, optimistic call: as built
                result[:] = [group[-1].compact]
                return (
                    LeafBatch.concat([built.batch for built in group]),
                    [node for built in group for node in built.nodes],
                )
            batch, nodes, compact = self._leaves_of(columns, self._compact, seen)
            result[:] = [compact]
            return batch, nodes

        try:
            leaves = self._repo.append_unknown(build)
        except Exception:
            self._compact = CompactRange.restore(self._repo.tree_size(), self._repo.nodes)
            raise
        rebuilt = not result or result[0] is not group[-1].compact
        duplicates = len(columns) - len(leaves)
        if not leaves:
            return 0, duplicates, None, rebuilt
        self._compact = result[0]
        return len(leaves), duplicates, self._compact.copy(), rebuilt

    async def _write_and_commit(self, consumer: ColumnConsumer, group: Sequence[_Built]) -> bool:
        """Writes built batches on the store thread, publishes the stored size, commits
        their offsets; returns whether they had to be built again."""
        columns = RecordColumns.concat([built.columns for built in group])
        appended, duplicates, stored, rebuilt = await self._on(
            "store", lambda: self._write(group, columns)
        )
        if duplicates:
            self._metrics.duplicates_skipped.inc(duplicates)
        if stored is not None:
            self._stored = stored
            if self._uncovered_since_ms is None:
                self._uncovered_since_ms = _now_ms()
            self._metrics.leaves_appended.inc(appended)
            self._metrics.tree_size.set(stored.size)
            self._metrics.lag.set(stored.size - self._anchored_size)
            self._wake.set()
        self._crash_hook("before_commit")
        await consumer.commit(columns.next_offsets())
        return rebuilt

    async def consume_batch(self, consumer: ColumnConsumer, timeout_s: float = 0.2) -> int:
        """Fetches, stores and commits one batch; returns the leaves appended."""
        columns = await consumer.fetch_columns(self._config.fetch_max_records, timeout_s=timeout_s)
        if not columns:
            return 0
        before = self.tree_size
        self._tip = self._compact
        built = await self._on("build", partial(self._build, columns))
        await self._write_and_commit(consumer, [built])
        return self.tree_size - before

    async def _consume_loop(self, consumer: ColumnConsumer, stop: asyncio.Event) -> None:
        """Fetches and builds while a write runs; the next write takes everything built
        meanwhile.

        One write at a time, in bus order. Writes grow with the load (up to
        ``max_write_records``), so a write's fixed costs (the commit's flush, the offset
        commit) are shared by more events the busier the relay is, and a quiet relay
        writes each fetch at once. Batches are built on top of the ones before them,
        before those are written; if a write had to build its batches again (it skipped
        known events), the batches built since are built again on what was stored.
        """
        built: list[_Built] = []
        waiting = 0
        writing: asyncio.Task[bool] | None = None
        self._tip = self._compact
        try:
            while not stop.is_set():
                if writing is not None and waiting >= self._config.max_write_records:
                    await asyncio.wait([writing])
                else:
                    # Short waits while writing: its end is noticed within milliseconds.
                    columns = await consumer.fetch_columns(
                        self._config.fetch_max_records, timeout_s=0.2 if writing is None else 0.005
                    )
                    if columns:
                        built.append(await self._on("build", partial(self._build, columns)))
                        waiting += len(columns)
                if writing is not None and writing.done():
                    if await writing:
                        self._tip = self._compact
                        built = [
                            await self._on("build", partial(self._build, b.columns)) for b in built
                        ]
                    writing = None
                if writing is None and built:
                    writing = asyncio.create_task(self._write_and_commit(consumer, built))
                    built, waiting = [], 0
            if writing is not None:
                await writing
        finally:
            if writing is not None and not writing.done():
                writing.cancel()

    # -- anchoring ---------------------------------------------------------------

    def _due(self) -> bool:
        return len(self._in_flight) < self._config.max_in_flight and self._config.policy.due(
            self._stored.size - self._cut_size, self._uncovered_since_ms, _now_ms()
        )

    async def anchor_step(self, force: bool = False) -> None:
        """Records finished anchors, then cuts and sends one checkpoint if one is due."""
        recorded = False
        while self._in_flight and self._in_flight[0][2].done():
            checkpoint, oldest_ms, future = self._in_flight.popleft()
            await self._record_receipt(checkpoint, future.result(), oldest_ms)
            recorded = True
        if recorded:
            self._schedule_outbox()
        if self._stored.size > self._cut_size and self._uncovered_since_ms is None:
            self._uncovered_since_ms = _now_ms()  # e.g. after a failed send
        if self._stored.size > self._cut_size and (force or self._due()):
            await self._cut_and_send()

    async def _cut_and_send(self) -> None:
        stored = self._stored
        size = stored.size
        if self._config.max_checkpoint_leaves is not None:
            size = min(size, self._cut_size + self._config.max_checkpoint_leaves)
        known_root = stored.root() if size == stored.size else None
        index, previous_size, previous_root = self._next_index, self._cut_size, self._cut_root

        def cut_and_send() -> tuple[Checkpoint, str]:
            root = known_root or root_of(size, self._repo.nodes)
            proof = (
                consistency_proof(previous_size, size, self._repo.nodes) if previous_size else []
            )
            checkpoint = Checkpoint(
                index,
                size,
                root,
                previous_size,
                previous_root,
                CheckpointStatus.PENDING,
                cut_at_ms=_now_ms(),
            )
            self._repo.add_checkpoint(checkpoint)
            self._crash_hook("before_send")
            tx_hash = self._anchor.submit(size, root, proof)
            self._crash_hook("after_send")
            return checkpoint, tx_hash

        # Leaves stored while the transaction is sent are not in this cut: they start
        # their own delay (a failed send is re-cut after reconcile).
        oldest = self._uncovered_since_ms or _now_ms()
        self._uncovered_since_ms = None if size == stored.size else oldest
        checkpoint, tx_hash = await self._on("anchor", cut_and_send)
        self._cut_size, self._cut_root = checkpoint.tree_size, checkpoint.root
        self._next_index += 1
        future = asyncio.ensure_future(self._on("receipts", lambda: self._anchor.wait(tx_hash)))
        future.add_done_callback(lambda _f: self._wake.set())
        self._in_flight.append((checkpoint, oldest, future))

    async def _record_receipt(
        self, checkpoint: Checkpoint, found: ChainAnchor, oldest_ms: int
    ) -> None:
        """Marks a checkpoint anchored (on the anchor thread) once its receipt is in."""
        self._crash_hook("after_receipt")
        event = self._anchored_event(checkpoint, found)

        def mark() -> int:
            now = _now_ms()
            self._repo.mark_anchored(checkpoint.index, found, now, [event])
            return now

        now = await self._on("anchor", mark)
        self._anchored(checkpoint, found, oldest_ms, now)

    def _record_anchored(
        self, checkpoint: Checkpoint, found: ChainAnchor, oldest_ms: int | None
    ) -> None:
        self._crash_hook("after_receipt")
        now = _now_ms()
        event = self._anchored_event(checkpoint, found)
        self._repo.mark_anchored(checkpoint.index, found, now, [event])
        self._anchored(checkpoint, found, oldest_ms, now)

    def _anchored(
        self, checkpoint: Checkpoint, found: ChainAnchor, oldest_ms: int | None, now: int
    ) -> None:
        self._anchored_size = max(self._anchored_size, checkpoint.tree_size)
        self._metrics.checkpoints_anchored.inc()
        self._metrics.gas_per_checkpoint.observe(found.gas_used)
        if oldest_ms is not None:
            self._metrics.anchoring_latency.observe(max(0, now - oldest_ms) / 1000)
        self._metrics.lag.set(self._stored.size - self._anchored_size)

    def _anchored_event(self, checkpoint: Checkpoint, found: ChainAnchor) -> OutgoingEvent:
        payload = ledger_pb2.CheckpointAnchored(
            log_id=self._config.log_id,
            tree_size=checkpoint.tree_size,
            root_hash=checkpoint.root,
            previous_tree_size=checkpoint.previous_size,
            previous_root_hash=checkpoint.previous_root,
            receipt=vocabulary_pb2.ChainReceipt(
                chain_id=self._anchor.chain_id,
                transaction_hash=found.tx_hash,
                block_number=found.block_number,
                contract_address=self._anchor.address,
                gas_used=found.gas_used,
            ),
        )
        envelope = new_envelope(
            payload,
            source="ledger-relay",
            actor=Actor(id="ledger-relay", role=vocabulary_pb2.ROLE_SERVICE),
        )
        return OutgoingEvent(LEDGER_CHECKPOINTS.name, self._config.log_id, encode(envelope))

    async def _flush_outbox(self) -> None:
        if self._publish_outbox is None:
            return
        try:
            await self._publish_outbox()
        except Exception:  # the outbox keeps the rows; the next flush retries
            log.exception("publishing checkpoint events failed; will retry")

    def _schedule_outbox(self) -> None:
        """Publishes the checkpoint events in the background (the anchor loop goes on)."""
        if self._publish_outbox is None:
            return
        self._outbox_due = True
        if self._outbox_task is None or self._outbox_task.done():
            self._outbox_task = asyncio.create_task(self._outbox_worker())

    async def _outbox_worker(self) -> None:
        while self._outbox_due:
            self._outbox_due = False
            await self._flush_outbox()

    async def _outbox_idle(self) -> None:
        if self._outbox_task is not None:
            await asyncio.gather(self._outbox_task, return_exceptions=True)

    async def _drain(self) -> None:
        """Waits for every in-flight transaction to settle (results are re-read from chain)."""
        futures = [future for _, _, future in self._in_flight]
        self._in_flight.clear()
        await asyncio.gather(*futures, return_exceptions=True)

    async def anchor_all(self, timeout_s: float = 60) -> None:
        """Anchors every leaf appended so far and waits for the receipts (tests, shutdown)."""
        deadline = time.monotonic() + timeout_s
        while self._anchored_size < self._stored.size or self._in_flight:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self._stored.size - self._anchored_size} leaves unanchored")
            try:
                await self.anchor_step(force=not self._in_flight)
            except ChainError:
                await self._recover_from_chain_error()
            if self._in_flight:
                await asyncio.wait([self._in_flight[0][2]], timeout=1)
        await self._outbox_idle()

    async def _recover_from_chain_error(self) -> None:
        self._metrics.chain_errors.labels("anchor").inc()
        await self._drain()
        await self.reconcile()

    async def _anchor_loop(self, stop: asyncio.Event) -> None:
        """Anchors until ``stop``; after a chain error, reconciles (with backoff) before
        cutting again: the failed checkpoint stays pending until the chain says whether
        it holds it, and only then is it adopted or forgotten and cut again."""
        delay = self._config.retry_initial_s
        reconciled = True
        while not stop.is_set():
            try:
                if not reconciled:
                    await self._drain()
                    await self.reconcile()
                    reconciled = True
                    log.info("reconciled with the chain; anchoring resumes")
                await self.anchor_step()
                delay = self._config.retry_initial_s
            except (ChainError, LedgerError) as error:
                if isinstance(error, LogDiverged):
                    raise
                reconciled = False
                log.warning("anchoring failed (%s); retrying in %.1fs", error, delay)
                self._metrics.chain_errors.labels(type(error).__name__).inc()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=delay)
                delay = min(delay * 2, self._config.retry_max_s)
                continue
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._config.tick_s)

    async def run(self, stop: asyncio.Event) -> None:
        """Consumes and anchors until ``stop`` is set."""
        async with self._consumer(self._config.group, list(self._config.topics)) as consumer:
            tasks = [
                asyncio.create_task(self._consume_loop(consumer, stop)),
                asyncio.create_task(self._anchor_loop(stop)),
            ]
            try:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
                for task in done:
                    task.result()
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                await self._outbox_idle()
                self._release_threads()
