"""The embedded default restarted on its data dir: the in-process chain goes on from its
last block, so the contracts, the consent grants and the anchored checkpoints are the
ones of the first run (before the chain was kept, every start deployed new contracts
and the relay forgot its checkpoints)."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from e2e.embedded import scenario_on
from ehr_client.keys import UserKeys

from services.consent.adapters.sql import grants
from services.embedded.main import EmbeddedSettings, EmbeddedSystem, compose
from services.ledger_relay.domain.model import CheckpointStatus
from services.platform.app.loopback import bind_loopback


def _addresses(system: EmbeddedSystem) -> tuple[str, str, str]:
    return (
        system.identity.registry.contract.address,
        system.consent.registry.address,
        system.relay.anchor.address,
    )


def _grants(system: EmbeddedSystem) -> list[tuple[object, ...]]:
    """Consent's projection of the grants (reset when its registry changes)."""
    with system.consent.engine.connect() as connection:
        return [tuple(row) for row in connection.execute(sa.select(grants))]


def _anchored(system: EmbeddedSystem) -> list[tuple[int, int, str]]:
    return [
        (c.index, c.tree_size, c.anchor.tx_hash if c.anchor else "")
        for c in system.relay.repository.checkpoints(CheckpointStatus.ANCHORED)
    ]


def test_a_restart_keeps_the_chain_its_contracts_and_the_anchored_checkpoints(
    tmp_path: Path,
) -> None:
    admin = UserKeys.generate()
    settings = EmbeddedSettings(data_dir=tmp_path / "state", admin_address=admin.address)
    with scenario_on(settings, admin, tmp_path / "report", timeout_s=60) as (first, result):
        assert result.ok, [step.error for step in result.steps if not step.ok]
        addresses, anchored = _addresses(first), _anchored(first)
        head, grants = first.chain.block_number(), _grants(first)
    assert anchored and grants

    second = compose(settings, bind_loopback())
    try:
        assert _addresses(second) == addresses
        assert second.chain.block_number() >= head  # (the start tops up service accounts)
        assert _anchored(second) == anchored  # not forgotten, same transactions
        assert second.relay.anchor.count() == len(anchored)
        for index, tree_size, tx_hash in anchored:
            assert second.relay.anchor.checkpoint_at(index).tree_size == tree_size
            assert second.chain.wait(tx_hash, timeout_s=1).status == 1
        assert _grants(second) == grants
    finally:
        second.close()
