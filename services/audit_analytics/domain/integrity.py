"""Verification of one event against the chain, and reconciliation of the whole store.

Reconciliation checks that every stored event is anchored with a matching hash, that
every column read by search, reports and detection is what the verified bytes (or the
events recording findings and reviews, or the chain) give, and that every consumed bus
position is accounted for; it reports what is missing, altered, reordered, inserted or
duplicated, plus proofs that do not verify, and lists what it cannot prove.
"""

from __future__ import annotations

import hashlib
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

from ehr_protocol.errors import CheckpointNotFound, ProofInvalid
from ehr_protocol.merkle import verify_consistency
from ehr_protocol.verify import verify_event

from services.platform.events.errors import EventError

from .errors import EventNotFound, NotYetAnchored
from .model import AuditRepository, PositionRow, StoredEvent
from .ports import CachedCheckpointReader, CheckpointReader, EventProofs
from .provenance import (
    NOT_PROVEN,
    ActionEvents,
    Discrepancy,
    altered_event_columns,
    check_break_glass_reviews,
    check_findings,
    check_positions,
    check_state,
    is_action,
)
from .records import audit_record_of

Slot = tuple[str, int]
Offsets = Mapping[Slot, int] | Callable[[], Mapping[Slot, int]]
"""Offsets per (topic, partition), or a function that reads them when reconciliation needs
them."""
KINDS = ("missing", "altered", "reordered", "inserted", "duplicated", "proof_invalid", "fork")


@dataclass(frozen=True, slots=True)
class Verification:
    event_id: str
    verified: bool
    leaf_index: int | None
    checkpoint_index: int | None
    tree_size: int | None
    tx_hash: str
    block_number: int | None
    detail: str
    proof: dict[str, Any] | None


@dataclass
class Reconciliation:
    events: int = 0
    positions: int = 0
    anchored: int = 0
    pending: int = 0
    """Stored events whose checkpoint is not anchored yet."""
    not_logged: int = 0
    """Stored events the ledger relay has not consumed yet (its log lags the store)."""
    bus_offsets_known: bool = False
    """Whether the bus's end offsets were given (else lag cannot be told from loss)."""
    not_consumed: dict[str, int] = field(default_factory=dict)
    """Per ``topic/partition``: offsets on the bus the store has not consumed yet."""
    leaves_not_consumed: int = 0
    """Anchored leaves without a stored event, explained by ``not_consumed``."""
    checkpoint: dict[str, Any] | None = None
    discrepancies: list[Discrepancy] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.discrepancies

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(KINDS, 0)
        for d in self.discrepancies:
            counts[d.kind] += 1
        return counts

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "events": self.events,
            "positions": self.positions,
            "anchored": self.anchored,
            "pending": self.pending,
            "not_logged": self.not_logged,
            "bus_offsets_known": self.bus_offsets_known,
            "not_consumed": dict(self.not_consumed),
            "positions_not_consumed": sum(self.not_consumed.values()),
            "leaves_not_consumed": self.leaves_not_consumed,
            "checkpoint": self.checkpoint,
            "counts": self.counts(),
            "discrepancies": [
                {
                    "kind": d.kind,
                    "detail": d.detail,
                    "event_id": d.event_id,
                    "position": d.position,
                    "leaf_index": d.leaf_index,
                }
                for d in self.discrepancies
            ],
            "not_proven": dict(NOT_PROVEN),
            "seconds": round(self.seconds, 3),
        }


@dataclass
class _Seen:
    """What one reconciliation pass keeps from the stored events for its later phases."""

    reader: CheckpointReader
    hashes: set[bytes] = field(default_factory=set)
    ids: set[str] = field(default_factory=set)
    leaf_of: dict[str, int] = field(default_factory=dict)
    per_partition: dict[Slot, list[tuple[int, int, str, str]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    unlogged: list[StoredEvent] = field(default_factory=list)
    """Stored events the relay's log lacks, at or beyond its position."""
    stored_at: dict[tuple[str, int, int], tuple[bytes, str]] = field(default_factory=dict)
    """(topic, partition, offset) -> (hash, event id) of each stored event."""
    position_rows: list[PositionRow] = field(default_factory=list)
    actions: ActionEvents = field(default_factory=ActionEvents)


def _where(event: StoredEvent) -> str:
    p = event.position
    return f"{p.topic}/{p.partition}@{p.offset}"


class IntegrityService:
    """Verification and reconciliation over the store, the relay's proofs and the chain."""

    def __init__(
        self,
        repository: AuditRepository,
        proofs: EventProofs,
        reader: CheckpointReader,
        anchored_topics: frozenset[str],
    ) -> None:
        self.repository = repository
        self.proofs = proofs
        self.reader = reader
        self.anchored_topics = anchored_topics

    def verify(self, event_id: str) -> Verification:
        """Checks the stored bytes of ``event_id`` against the root anchored on chain."""
        stored = self.repository.get(event_id)
        if stored is None:
            raise EventNotFound(f"no event {event_id} in the audit store")
        proof = self.proofs.inclusion(event_id)
        if proof is None:
            return Verification(
                event_id, False, None, None, None, "", None, "the event is not in the ledger", None
            )
        try:
            result = verify_event(stored.raw, proof, self.reader)
        except ProofInvalid as invalid:
            return Verification(event_id, False, None, None, None, "", None, str(invalid), proof)
        if stored.proof is None:
            self.repository.set_proof(event_id, proof)
        return Verification(
            event_id,
            True,
            result.leaf_index,
            result.checkpoint_index,
            result.tree_size,
            result.tx_hash,
            result.block_number,
            "the event bytes are in a checkpoint anchored on chain",
            proof,
        )

    def attach_proofs(self, limit: int = 1000) -> int:
        """Stores the proof of events whose checkpoint is anchored; returns how many."""
        attached = 0
        found: dict[str, dict[str, Any]] = {}
        for event in self.repository.without_proof(limit, self.anchored_topics):
            try:
                proof = self.proofs.inclusion(event.record.event_id)
            except NotYetAnchored:
                continue
            if proof is not None:
                found[event.record.event_id] = proof
            if len(found) >= 1000:
                self.repository.set_proofs(found)
                attached += len(found)
                found = {}
        self.repository.set_proofs(found)
        return attached + len(found)

    def reconcile(
        self,
        end_offsets: Offsets | None = None,
        *,
        logged_offsets: Offsets | None = None,
        consumed_offsets: Offsets | None = None,
    ) -> Reconciliation:
        """Reconciles the store with the relay's log, the chain and (when given) the bus.

        ``end_offsets`` are the bus's high watermarks per (topic, partition), or a function
        that reads them: it is called after the store's positions are read, so that what
        the consumer stores meanwhile cannot look beyond the end (inserted). With them,
        what the store has not consumed yet is told apart from what is missing: offsets
        from a partition's consumed position (its highest stored offset + 1) up to the end
        are ``not_consumed`` (pending), and so are as many of the anchored leaves without
        a stored event, newest first; an offset below the consumed position that never
        reached the store (a gap) is ``missing``. Without them every leaf of the latest
        checkpoint that no stored event maps to is ``missing``.

        ``logged_offsets`` are how far the ledger relay has consumed each anchored
        partition (its consumer group's committed offsets), or a function that reads
        them: it is called before the relay is asked for any proof. The relay and the
        store read the bus independently, so the store may hold events the relay has not
        logged yet: a stored event the log lacks is ``not_logged`` (pending) when its
        offset is at or beyond the relay's position and below the bus's end, and
        ``inserted`` otherwise. Without them, every such event is ``inserted``.

        ``consumed_offsets`` are the store's own consumer group's committed offsets (kept
        by the bus, not the store), or a function that reads them: it is called before the
        store's positions are read. The store commits an offset only after storing what
        lies below it, so an offset below it that the store lacks is ``missing`` even at
        the end of a partition (a deleted tail), where the highest stored offset alone
        would make it look like lag.
        """
        started = time.perf_counter()
        if callable(logged_offsets):
            logged_offsets = logged_offsets()
        if callable(consumed_offsets):
            consumed_offsets = consumed_offsets()
        out = Reconciliation(bus_offsets_known=end_offsets is not None)
        out.checkpoint = self.proofs.latest_checkpoint()
        seen = _Seen(CachedCheckpointReader(self.reader))
        self._check_stored_events(out, seen, logged_offsets)
        positions = self._check_positions(out, seen)
        if callable(end_offsets):
            end_offsets = end_offsets()
        consumed = self._check_offsets(out, positions, end_offsets, consumed_offsets)
        self._check_unlogged(out, seen, end_offsets)
        anchored_not_consumed = self._check_lag(out, consumed, end_offsets)
        self._check_order(out, seen)
        self._check_leaves(out, seen, anchored_not_consumed)
        self._check_auditor_records(out, seen)
        out.seconds = time.perf_counter() - started
        return out

    def _check_stored_events(
        self, out: Reconciliation, seen: _Seen, logged_offsets: Mapping[Slot, int] | None
    ) -> None:
        """Every stored event (read in batches): duplicates, bytes against hashes, its
        columns against its bytes, and its anchoring. A stored proof that verifies on chain
        is evidence enough (the relay is not asked again); without one, the relay gives a
        fresh proof, which must verify too. Only what later checks need is kept in memory."""
        found = out.discrepancies
        for event in self.repository.iter_events():
            out.events += 1
            event_id = event.record.event_id
            p = event.position
            seen.stored_at[(p.topic, p.partition, p.offset)] = (event.event_hash, event_id)
            if event_id in seen.ids or event.event_hash in seen.hashes:
                seen.hashes.add(event.event_hash)
                found.append(
                    Discrepancy(
                        "duplicated", "the event is stored more than once", event_id, _where(event)
                    )
                )
                continue
            seen.ids.add(event_id)
            seen.hashes.add(event.event_hash)
            self._check_columns(out, seen, event)
            leaf_index = self._check_event(event, seen.reader, out, logged_offsets, seen.unlogged)
            if leaf_index is not None:
                seen.leaf_of[event_id] = leaf_index
                seen.per_partition[(p.topic, p.partition)].append(
                    (p.offset, leaf_index, event_id, _where(event))
                )

    def _check_columns(self, out: Reconciliation, seen: _Seen, event: StoredEvent) -> None:
        """The columns search, reports and detection read are the ones the bytes give."""
        if hashlib.sha256(event.raw).digest() != event.event_hash:
            return  # the bytes themselves are reported altered; nothing to derive from
        try:
            record = audit_record_of(event.raw, event.position)
        except EventError as error:
            out.discrepancies.append(
                Discrepancy(
                    "altered",
                    f"audit_events.raw: the stored bytes are not an event: {error}",
                    event.record.event_id,
                    _where(event),
                )
            )
            return
        derived = self.repository.derived_columns(record, event.raw)
        for column in altered_event_columns(event, derived):
            out.discrepancies.append(
                Discrepancy(
                    "altered",
                    f"audit_events.{column}: the stored value is not the one its bytes give",
                    record.event_id,
                    _where(event),
                )
            )
        if is_action(record):
            seen.actions.add(event.raw)

    def _check_positions(self, out: Reconciliation, seen: _Seen) -> dict[Slot, list[int]]:
        """Every consumed position's event (or an earlier copy of it) is in the store;
        returns the consumed offsets per partition."""
        by_partition: dict[Slot, list[int]] = defaultdict(list)
        rows = self.repository.positions()
        for row in rows:
            out.positions += 1
            by_partition[(row.position.topic, row.position.partition)].append(row.position.offset)
            if row.kind != "undecodable" and row.event_hash not in seen.hashes:
                out.discrepancies.append(
                    Discrepancy(
                        "missing",
                        "a consumed position's event is not in the store",
                        position=f"{row.position.topic}/{row.position.partition}@{row.position.offset}",
                    )
                )
        seen.position_rows = rows
        return by_partition

    @staticmethod
    def _check_offsets(
        out: Reconciliation,
        by_partition: dict[Slot, list[int]],
        end_offsets: Mapping[Slot, int] | None,
        consumed_offsets: Mapping[Slot, int] | None,
    ) -> dict[Slot, int]:
        """Contiguous offsets per partition, up to the store's committed offsets; returns
        the consumed position per partition."""
        found = out.discrepancies
        consumed: dict[Slot, int] = {}
        for (topic, partition), offsets in by_partition.items():
            offsets.sort()
            consumed[(topic, partition)] = offsets[-1] + 1
            if end_offsets is not None and offsets[0] > 0:
                found.append(
                    Discrepancy(
                        "missing",
                        f"offsets 0..{offsets[0] - 1} were never accounted for",
                        position=f"{topic}/{partition}@0",
                    )
                )
            for previous, current in pairwise(offsets):
                if current != previous + 1:
                    found.append(
                        Discrepancy(
                            "missing",
                            f"offsets {previous + 1}..{current - 1} were never accounted for",
                            position=f"{topic}/{partition}@{previous + 1}",
                        )
                    )
        for (topic, partition), committed in sorted((consumed_offsets or {}).items()):
            stored = consumed.get((topic, partition), 0)
            if committed > stored:  # the store's group went past positions it does not hold
                found.append(
                    Discrepancy(
                        "missing",
                        f"offsets {stored}..{committed - 1} were consumed but are not stored",
                        position=f"{topic}/{partition}@{stored}",
                    )
                )
                consumed[(topic, partition)] = committed
        return consumed

    @staticmethod
    def _check_unlogged(
        out: Reconciliation, seen: _Seen, end_offsets: Mapping[Slot, int] | None
    ) -> None:
        """Events not in the relay's log, at or beyond its position: pending unless beyond
        the bus's end."""
        for event in seen.unlogged:
            slot = (event.position.topic, event.position.partition)
            if end_offsets is not None and event.position.offset >= end_offsets.get(slot, 0):
                out.discrepancies.append(
                    Discrepancy(
                        "inserted",
                        "the event is not in the ledger's log, and beyond the bus's end offset",
                        event.record.event_id,
                        _where(event),
                    )
                )
            else:
                out.not_logged += 1

    def _check_lag(
        self,
        out: Reconciliation,
        consumed: dict[Slot, int],
        end_offsets: Mapping[Slot, int] | None,
    ) -> int:
        """Positions beyond the bus's end are inserted; those below it not consumed yet are
        pending. Returns how many of those are on anchored topics."""
        anchored_not_consumed = 0
        for (topic, partition), end in sorted((end_offsets or {}).items()):
            position = consumed.get((topic, partition), 0)
            if position > end:
                out.discrepancies.append(
                    Discrepancy(
                        "inserted",
                        f"offsets {end}..{position - 1} are beyond the bus's end offset",
                        position=f"{topic}/{partition}@{end}",
                    )
                )
            elif position < end:
                out.not_consumed[f"{topic}/{partition}"] = end - position
                if topic in self.anchored_topics:
                    anchored_not_consumed += end - position
        return anchored_not_consumed

    @staticmethod
    def _check_order(out: Reconciliation, seen: _Seen) -> None:
        """Within a partition, the log's order is the bus order."""
        for members in seen.per_partition.values():
            members.sort()
            for a, b in pairwise(members):
                if a[1] > b[1]:
                    out.discrepancies.append(
                        Discrepancy(
                            "reordered",
                            f"stored before {a[2]} but logged after it",
                            b[2],
                            b[3],
                            b[1],
                        )
                    )

    def _check_leaves(self, out: Reconciliation, seen: _Seen, anchored_not_consumed: int) -> None:
        """Every anchored leaf has its event in the store (deletions, truncation), unless the
        store has not consumed it yet: the store reads the bus in order, so the leaves it
        lacks because of its lag are the newest ones."""
        if out.checkpoint is None:
            return
        found = out.discrepancies
        covered = set(seen.leaf_of.values())
        size = int(out.checkpoint["tree_size"])
        gaps = [i for i in range(size) if i not in covered]
        lagging = min(len(gaps), anchored_not_consumed)
        out.leaves_not_consumed = lagging
        gaps = gaps[: len(gaps) - lagging]
        for index in gaps[:1000]:
            found.append(
                Discrepancy("missing", "an anchored event is not in the store", leaf_index=index)
            )
        if len(gaps) > 1000:
            found.append(
                Discrepancy("missing", f"{len(gaps) - 1000} more anchored events are missing")
            )
        self._check_chain_root(out, seen.reader)

    def _check_auditor_records(self, out: Reconciliation, seen: _Seen) -> None:
        """The tables not derived from one event's bytes: positions against the stored
        events, findings and reviews against the events that record them (consumed, else
        queued in the outbox), the kept state against the chain."""
        inserted = {d.event_id for d in out.discrepancies if d.kind == "inserted"}
        found = out.discrepancies
        found += check_positions(seen.position_rows, seen.stored_at, inserted)
        for raw in self.repository.queued_events():
            seen.actions.add(raw)
        found += check_findings(self.repository.findings(), seen.actions)
        found += check_break_glass_reviews(self.repository.break_glass_reviews(), seen.actions)
        found += check_state(self.repository.state(), seen.reader)

    def _check_event(
        self,
        event: StoredEvent,
        reader: CheckpointReader,
        out: Reconciliation,
        logged_offsets: Mapping[Slot, int] | None,
        unlogged: list[StoredEvent],
    ) -> int | None:
        """Checks one event's bytes and anchoring; returns its leaf index when it has one.
        An event the relay's log lacks, at or beyond the relay's position, goes to
        ``unlogged`` (told from ``inserted`` once the bus's end offsets are known)."""
        found = out.discrepancies
        event_id = event.record.event_id
        actual = hashlib.sha256(event.raw).digest()
        if actual != event.event_hash:
            found.append(
                Discrepancy(
                    "altered",
                    "the stored bytes no longer match their hash",
                    event_id,
                    _where(event),
                )
            )
        if event.position.topic not in self.anchored_topics:
            return None
        proof, stored = event.proof, event.proof is not None
        if proof is None:
            try:
                proof = self.proofs.inclusion(event_id)
            except NotYetAnchored:
                out.pending += 1
                return None
        if proof is None:
            slot = (event.position.topic, event.position.partition)
            if logged_offsets is not None and event.position.offset >= logged_offsets.get(slot, 0):
                unlogged.append(event)
                return None
            found.append(
                Discrepancy(
                    "inserted", "the event is not in the ledger's log", event_id, _where(event)
                )
            )
            return None
        try:
            proven_id, proven_hash = proof.get("event_id"), str(proof["event_hash"])
            leaf_index = int(proof["leaf_index"])
        except (KeyError, TypeError, ValueError) as invalid:
            found.append(
                Discrepancy(
                    "proof_invalid", f"malformed proof: {invalid!r}", event_id, _where(event)
                )
            )
            return None
        if proven_id not in (None, event_id):
            found.append(
                Discrepancy(
                    "inserted",
                    f"the event carries the proof of {proven_id}",
                    event_id,
                    _where(event),
                )
            )
            return None
        if proven_hash != actual.hex():
            if actual == event.event_hash:
                found.append(
                    Discrepancy(
                        "altered",
                        "the stored bytes differ from the anchored event",
                        event_id,
                        _where(event),
                        leaf_index,
                    )
                )
            return leaf_index
        try:
            verify_event(event.raw, proof, reader)
        except (ProofInvalid, KeyError, TypeError, ValueError) as invalid:
            found.append(
                Discrepancy(
                    "proof_invalid" if stored else "fork",
                    ("the stored proof" if stored else "the ledger's proof")
                    + f" fails on chain: {invalid}",
                    event_id,
                    _where(event),
                    leaf_index,
                )
            )
            return leaf_index
        out.anchored += 1
        return leaf_index

    def _check_chain_root(self, out: Reconciliation, reader: CheckpointReader) -> None:
        """The relay's latest checkpoint is the chain's (a forked log has another root)."""
        assert out.checkpoint is not None
        index = int(out.checkpoint["index"])
        try:
            on_chain = reader.checkpoint_at(index)
        except CheckpointNotFound:
            on_chain = None
        if (
            on_chain is None
            or on_chain.root.hex() != out.checkpoint["root"]
            or on_chain.tree_size != int(out.checkpoint["tree_size"])
        ):
            out.discrepancies.append(
                Discrepancy("fork", f"checkpoint {index} of the ledger differs from the chain's")
            )


def verify_consistency_of(
    proofs: EventProofs, reader: CheckpointReader, older: dict[str, Any], newer: dict[str, Any]
) -> bool:
    """Whether the log of ``older`` is a prefix of ``newer``, both roots read from the chain."""
    size_a, size_b = int(older["tree_size"]), int(newer["tree_size"])
    if size_a == size_b:
        return bool(older["root"] == newer["root"])
    document = proofs.consistency(size_a, size_b)
    try:
        root_a = reader.checkpoint_at(int(older["index"])).root
        root_b = reader.checkpoint_at(int(newer["index"])).root
    except CheckpointNotFound:  # a checkpoint of another contract, or none
        return False
    try:
        verify_consistency(
            size_a, size_b, root_a, root_b, [bytes.fromhex(p) for p in document["proof"]]
        )
    except ProofInvalid:
        return False
    return True
