"""Which AuditAnchor the relay uses on start: configured, recorded, or new."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from services.ledger_relay.adapters.anchor import AuditAnchorLedger
from services.ledger_relay.adapters.sql import SqlLogRepository
from services.ledger_relay.main import ANCHOR_ADDRESS_STATE, anchor_is_deployed, ensure_anchor
from services.platform.chain.artifacts import load_artifact
from services.platform.chain.inprocess import InProcessChain


@pytest.fixture
def chain() -> Iterator[InProcessChain]:
    with InProcessChain() as chain:
        yield chain


@pytest.fixture
def repository(tmp_path: Path) -> Iterator[SqlLogRepository]:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'ledger.sqlite3'}")
    repository = SqlLogRepository(engine)
    repository.create_schema()
    yield repository
    engine.dispose()


def test_the_recorded_contract_is_reused(
    chain: InProcessChain, repository: SqlLogRepository
) -> None:
    account = chain.new_account()
    first = ensure_anchor(chain, account, None, repository)
    assert repository.get_state(ANCHOR_ADDRESS_STATE) == first.address
    assert anchor_is_deployed(chain, first.address)

    again = ensure_anchor(chain, account, None, repository)

    assert again.address == first.address


def test_a_recorded_address_holding_other_code_gets_a_new_contract(
    chain: InProcessChain, repository: SqlLogRepository
) -> None:
    """As after an upgrade that changed AuditAnchor: the recorded contract is not this
    build's, so its storage cannot be read with this build's ABI."""
    account = chain.new_account()
    other = chain.deploy(load_artifact("Probe"), account)
    repository.set_state(ANCHOR_ADDRESS_STATE, other.address)
    assert not anchor_is_deployed(chain, other.address)
    assert not anchor_is_deployed(chain, chain.new_account(0).address)

    ledger = ensure_anchor(chain, account, None, repository)

    assert ledger.address != other.address
    assert anchor_is_deployed(chain, ledger.address)
    assert repository.get_state(ANCHOR_ADDRESS_STATE) == ledger.address
    assert ledger.count() == 0


def test_a_configured_address_wins_over_the_recorded_one(
    chain: InProcessChain, repository: SqlLogRepository
) -> None:
    account = chain.new_account()
    recorded = ensure_anchor(chain, account, None, repository)
    other = AuditAnchorLedger.deploy(chain, account, account)

    ledger = ensure_anchor(chain, account, other.address, repository)

    assert ledger.address == other.address != recorded.address
    assert repository.get_state(ANCHOR_ADDRESS_STATE) == other.address
