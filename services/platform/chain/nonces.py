"""Per-sender nonce allocation, so one sender can pipeline many transactions."""

from __future__ import annotations

import threading
from collections.abc import Callable

# Substrings of node errors that mean "the nonce we used is stale".
STALE_NONCE_MARKERS = (
    "nonce too low",
    "replacement transaction underpriced",
    "invalid transaction nonce",
    "nonce too high",
)


def is_stale_nonce_error(message: str) -> bool:
    """Whether a node's refusal means the nonce must be re-read from the chain."""
    lowered = message.lower()
    return any(marker in lowered for marker in STALE_NONCE_MARKERS)


class NonceManager:
    """Hands out consecutive nonces per sender without waiting for receipts.

    A sender's first nonce is its pending transaction count on the chain; later
    ones are counted locally. ``resync`` re-reads the chain (after another client
    used the same key, or after a transaction was refused and left a gap);
    ``forget_all`` drops every local count, so the next allocation re-reads the
    chain (after the nodes were unreachable: a restarted node may have lost its
    pool, and counting on from a lost transaction would leave a gap no later
    transaction can pass). Thread safe.
    """

    def __init__(self, pending_count: Callable[[str], int]) -> None:
        self._pending_count = pending_count
        self._next: dict[str, int] = {}
        self._lock = threading.Lock()

    def allocate(self, address: str) -> int:
        """The next unused nonce of ``address``."""
        with self._lock:
            nonce = self._next.get(address)
            if nonce is None:
                nonce = self._pending_count(address)
            self._next[address] = nonce + 1
            return nonce

    def resync(self, address: str) -> int:
        """Re-read the pending count from the chain; returns the next nonce."""
        with self._lock:
            nonce = self._pending_count(address)
            self._next[address] = nonce
            return nonce

    def forget(self, address: str) -> None:
        """Drop the local count; the next ``allocate`` reads the chain."""
        with self._lock:
            self._next.pop(address, None)

    def forget_all(self) -> None:
        """Drop every sender's local count (e.g. the nodes' pools may have been lost)."""
        with self._lock:
            self._next.clear()
