"""A chain account whose private key is kept in a file on this machine (never in the
repository): the services' own keys on the embedded default and the in-process
chain's funder."""

from __future__ import annotations

import os
from pathlib import Path

from eth_account import Account
from eth_account.signers.local import LocalAccount


def load_or_create_account(path: Path) -> LocalAccount:
    """The account whose hex private key is in ``path``; when the file is missing a new
    key is generated into it, readable and writable by its owner only (0600)."""
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        created: LocalAccount = Account.create()
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # created meanwhile by another process: use that one
            pass
        else:
            with os.fdopen(descriptor, "w") as handle:
                handle.write("0x" + created.key.hex().removeprefix("0x"))
            return created
    loaded: LocalAccount = Account.from_key(path.read_text().strip())
    return loaded
