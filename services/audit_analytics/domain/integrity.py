"""Verification of one event against the chain, and reconciliation of the whole store.

Reconciliation checks that every stored event is anchored with a matching hash and
that every consumed bus position is accounted for, and reports what is missing,
altered, reordered, inserted or duplicated, plus proofs that do not verify.
"""

from __future__ import annotations

import hashlib
import time
from collections import defaultdict
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

from services.ledger_relay.domain.errors import ProofInvalid
from services.ledger_relay.domain.merkle import verify_consistency
from services.ledger_relay.verify import verify_event

from .errors import EventNotFound, NotYetAnchored
from .model import AuditRepository, StoredEvent
from .ports import CachedCheckpointReader, CheckpointReader, EventProofs

KINDS = ("missing", "altered", "reordered", "inserted", "duplicated", "proof_invalid", "fork")


@dataclass(frozen=True, slots=True)
class Discrepancy:
    kind: str
    detail: str
    event_id: str = ""
    position: str = ""
    leaf_index: int | None = None


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
            "seconds": round(self.seconds, 3),
        }


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

    def reconcile(self) -> Reconciliation:
        started = time.perf_counter()
        reader = CachedCheckpointReader(self.reader)
        out = Reconciliation()
        found = out.discrepancies
        events = self.repository.all_events()
        positions = self.repository.positions()
        out.events, out.positions = len(events), len(positions)
        out.checkpoint = self.proofs.latest_checkpoint()

        # Every bus position is accounted for: contiguous offsets per partition, and each
        # position's event (or an earlier copy of it) is in the store.
        hashes = {e.event_hash for e in events}
        by_partition: dict[tuple[str, int], list[int]] = defaultdict(list)
        for row in positions:
            by_partition[(row.position.topic, row.position.partition)].append(row.position.offset)
            if row.kind != "undecodable" and row.event_hash not in hashes:
                found.append(
                    Discrepancy(
                        "missing",
                        "a consumed position's event is not in the store",
                        position=f"{row.position.topic}/{row.position.partition}@{row.position.offset}",
                    )
                )
        for (topic, partition), offsets in by_partition.items():
            offsets.sort()
            for previous, current in pairwise(offsets):
                if current != previous + 1:
                    found.append(
                        Discrepancy(
                            "missing",
                            f"offsets {previous + 1}..{current - 1} were never accounted for",
                            position=f"{topic}/{partition}@{previous + 1}",
                        )
                    )

        # Duplicates: one event (id or bytes) stored twice.
        seen_ids: dict[str, StoredEvent] = {}
        seen_hashes: set[bytes] = set()
        unique: list[StoredEvent] = []
        for event in events:
            if event.record.event_id in seen_ids or event.event_hash in seen_hashes:
                found.append(
                    Discrepancy(
                        "duplicated",
                        "the event is stored more than once",
                        event.record.event_id,
                        _where(event),
                    )
                )
                continue
            seen_ids[event.record.event_id] = event
            seen_hashes.add(event.event_hash)
            unique.append(event)

        # Every stored event anchored with a matching hash. A stored proof that verifies on
        # chain is evidence enough (the relay is not asked again); without one, the relay
        # gives a fresh proof, which must verify too.
        leaf_of: dict[str, int] = {}
        for event in unique:
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
                continue
            proof, stored = event.proof, event.proof is not None
            if proof is None:
                try:
                    proof = self.proofs.inclusion(event_id)
                except NotYetAnchored:
                    out.pending += 1
                    continue
            if proof is None:
                found.append(
                    Discrepancy(
                        "inserted", "the event is not in the ledger's log", event_id, _where(event)
                    )
                )
                continue
            try:
                proven_id, proven_hash = proof.get("event_id"), str(proof["event_hash"])
                leaf_index = int(proof["leaf_index"])
            except (KeyError, TypeError, ValueError) as invalid:
                found.append(
                    Discrepancy(
                        "proof_invalid", f"malformed proof: {invalid!r}", event_id, _where(event)
                    )
                )
                continue
            if proven_id not in (None, event_id):
                found.append(
                    Discrepancy(
                        "inserted",
                        f"the event carries the proof of {proven_id}",
                        event_id,
                        _where(event),
                    )
                )
                continue
            leaf_of[event_id] = leaf_index
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
                continue
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
                continue
            out.anchored += 1

        # Order: within a partition, the log's order is the bus order.
        per_partition: dict[tuple[str, int], list[StoredEvent]] = defaultdict(list)
        for event in unique:
            if event.record.event_id in leaf_of:
                per_partition[(event.position.topic, event.position.partition)].append(event)
        for members in per_partition.values():
            members.sort(key=lambda e: e.position.offset)
            for a, b in pairwise(members):
                if leaf_of[a.record.event_id] > leaf_of[b.record.event_id]:
                    found.append(
                        Discrepancy(
                            "reordered",
                            f"stored before {a.record.event_id} but logged after it",
                            b.record.event_id,
                            _where(b),
                            leaf_of[b.record.event_id],
                        )
                    )

        # Every anchored leaf has its event in the store (deletions, truncation).
        if out.checkpoint is not None:
            covered = set(leaf_of.values())
            size = int(out.checkpoint["tree_size"])
            gaps = [i for i in range(size) if i not in covered]
            for index in gaps[:1000]:
                found.append(
                    Discrepancy(
                        "missing", "an anchored event is not in the store", leaf_index=index
                    )
                )
            if len(gaps) > 1000:
                found.append(
                    Discrepancy("missing", f"{len(gaps) - 1000} more anchored events are missing")
                )
            self._check_chain_root(out, reader)
        out.seconds = time.perf_counter() - started
        return out

    def _check_chain_root(self, out: Reconciliation, reader: CheckpointReader) -> None:
        """The relay's latest checkpoint is the chain's (a forked log has another root)."""
        assert out.checkpoint is not None
        index = int(out.checkpoint["index"])
        on_chain = reader.checkpoint_at(index)
        if on_chain.root.hex() != out.checkpoint["root"] or on_chain.tree_size != int(
            out.checkpoint["tree_size"]
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
    root_a = reader.checkpoint_at(int(older["index"])).root
    root_b = reader.checkpoint_at(int(newer["index"])).root
    try:
        verify_consistency(
            size_a, size_b, root_a, root_b, [bytes.fromhex(p) for p in document["proof"]]
        )
    except ProofInvalid:
        return False
    return True
