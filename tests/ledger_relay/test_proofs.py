"""Proof use cases and the standalone verifier, against a relay-anchored log."""

from __future__ import annotations

import pytest
from ledger_relay.conftest import RelayEnv, make_event
from ledger_relay.test_relay import _publish, _run_until_anchored

from services.ledger_relay.adapters.sql import SqlLogRepository
from services.ledger_relay.domain.errors import EventNotFound, ProofInvalid
from services.ledger_relay.domain.merkle import verify_consistency
from services.ledger_relay.domain.proofs import ProofService
from services.ledger_relay.verify import Web3CheckpointReader, inclusion_to_json, verify_event
from services.platform.events.envelope import decode


async def test_an_event_verifies_with_its_bytes_proof_and_the_chain(relay_env: RelayEnv) -> None:
    events = [make_event(i) for i in range(260)]
    await _publish(relay_env, events[:130])
    relay, _ = await relay_env.relay()
    await _run_until_anchored(relay, 130)
    await _publish(relay_env, events[130:])
    await _run_until_anchored(relay, len(events))
    proofs = ProofService(SqlLogRepository(relay_env.engine))
    for raw in (events[0], events[131], events[-1]):
        proof = proofs.inclusion(decode(raw).id)
        document = inclusion_to_json(proof)
        verified = verify_event(raw, document, relay_env.anchor)
        assert verified.leaf_index == proof.leaf_index
        assert verified.tx_hash == proof.checkpoint.tx_hash
        with pytest.raises(ProofInvalid):
            verify_event(raw + b"x", document, relay_env.anchor)
        forged = {**document, "leaf_index": (proof.leaf_index + 1) % proof.checkpoint.tree_size}
        with pytest.raises(ProofInvalid):
            verify_event(raw, forged, relay_env.anchor)
    if relay_env.name == "real":  # the CLI's reader: plain JSON-RPC, no key
        reader = Web3CheckpointReader(relay_env.chain.current_url, relay_env.anchor.address)
        document = inclusion_to_json(proofs.inclusion(decode(events[7]).id))
        assert verify_event(events[7], document, reader).leaf_index == document["leaf_index"]
        with pytest.raises(ProofInvalid):
            verify_event(events[8], document, reader)
    with pytest.raises(EventNotFound):
        proofs.inclusion("0190f5d2-0000-7000-8000-000000000000")
    count = relay_env.anchor.count()
    assert count >= 2
    consistency = proofs.consistency(0, count - 1)
    verify_consistency(
        consistency.first.tree_size,
        consistency.second.tree_size,
        relay_env.anchor.checkpoint_at(0).root,
        relay_env.anchor.checkpoint_at(count - 1).root,
        consistency.proof,
    )
