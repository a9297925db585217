"""A py-evm key-value database kept in one SQLite file, so the in-process chain survives
a restart of its process.

py-evm stores everything (headers, blocks, receipts, trie nodes, the canonical head)
as keys and values in one ``AtomicDatabaseAPI``; eth-tester's default is a dict in
memory. Here every write also goes to a SQLite table (WAL, ``synchronous=FULL``, like
the embedded event log), and an atomic batch (py-evm writes a whole block as one) is
one SQLite transaction: after a crash the file holds whole blocks or none. Reads are
served from a dict loaded at open, so reading costs what it costs in memory.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from eth.abc import AtomicWriteBatchAPI
from eth.db.atomic import AtomicDBWriteBatch
from eth.db.backends.base import BaseAtomicDB


class SqliteStateDB(BaseAtomicDB):
    """py-evm's atomic key-value store on one SQLite file (``path``)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._sql = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._sql.execute("PRAGMA journal_mode=WAL")
        self._sql.execute("PRAGMA synchronous=FULL")
        self._sql.execute(
            "CREATE TABLE IF NOT EXISTS kv (key BLOB PRIMARY KEY, value BLOB NOT NULL) "
            "WITHOUT ROWID"
        )
        self._values: dict[bytes, bytes] = dict(self._sql.execute("SELECT key, value FROM kv"))
        self._lock = threading.RLock()
        # While a batch's transaction is open: its writes, applied to ``_values`` once
        # it commits (None: no transaction open).
        self._uncommitted: dict[bytes, bytes | None] | None = None

    @property
    def is_empty(self) -> bool:
        """Whether nothing was ever stored (a new chain must be created from genesis)."""
        return not self._values

    def __getitem__(self, key: bytes) -> bytes:
        if self._uncommitted is not None and key in self._uncommitted:
            value = self._uncommitted[key]
            if value is None:
                raise KeyError(key)
            return value
        return self._values[key]

    def _exists(self, key: bytes) -> bool:
        if self._uncommitted is not None and key in self._uncommitted:
            return self._uncommitted[key] is not None
        return key in self._values

    def __setitem__(self, key: bytes, value: bytes) -> None:
        with self._lock:
            self._sql.execute("INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)", (key, value))
            self._stage(key, value)

    def __delitem__(self, key: bytes) -> None:
        with self._lock:
            if not self._exists(key):
                raise KeyError(key)
            self._sql.execute("DELETE FROM kv WHERE key = ?", (key,))
            self._stage(key, None)

    def _stage(self, key: bytes, value: bytes | None) -> None:
        if self._uncommitted is not None:
            self._uncommitted[key] = value
        elif value is None:
            self._values.pop(key, None)
        else:
            self._values[key] = value

    @contextmanager
    def atomic_batch(self) -> Iterator[AtomicWriteBatchAPI]:
        """Writes made through the batch are saved together, in one SQLite transaction,
        or not at all (when the block raises). py-evm does not nest batches; a nested
        one fails at its BEGIN."""
        with self._lock:
            self._sql.execute("BEGIN IMMEDIATE")
            self._uncommitted = {}
            try:
                with AtomicDBWriteBatch._commit_unless_raises(self) as batch:
                    yield batch
                self._sql.execute("COMMIT")
            except BaseException:
                self._sql.execute("ROLLBACK")
                raise
            finally:
                committed, self._uncommitted = self._uncommitted, None
            for key, value in committed.items():
                self._stage(key, value)

    def close(self) -> None:
        with self._lock:
            self._sql.close()
