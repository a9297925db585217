"""Chain keys kept in a file: generated once, private to their owner, read back."""

from __future__ import annotations

import stat
from pathlib import Path

from eth_account import Account

from services.platform.chain.keyfile import load_or_create_account


def test_a_missing_key_is_generated_once_and_readable_by_its_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "service.key"
    created = load_or_create_account(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().startswith("0x")
    assert load_or_create_account(path).address == created.address
    assert load_or_create_account(tmp_path / "other.key").address != created.address


def test_an_existing_key_is_used_with_or_without_its_0x(tmp_path: Path) -> None:
    account = Account.create()
    bare, prefixed = tmp_path / "bare.key", tmp_path / "prefixed.key"
    bare.write_text(account.key.hex().removeprefix("0x") + "\n")
    prefixed.write_text("0x" + account.key.hex().removeprefix("0x"))
    assert load_or_create_account(bare).address == account.address
    assert load_or_create_account(prefixed).address == account.address
