"""Errors of the chain port (root: ``ChainError``, the protocol's: a verifier reading the
chain without this port raises the same ``ChainUnavailable``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ehr_protocol.errors import ChainError, ChainUnavailable

__all__ = [
    "ChainError",
    "ChainUnavailable",
    "InvalidArguments",
    "TransactionRejected",
    "TransactionReverted",
    "TransactionTimeout",
    "UnknownContractMember",
]


class TransactionRejected(ChainError):
    """The node refused the transaction before execution (funds, nonce, fees, size)."""


class TransactionTimeout(ChainError):
    """No receipt arrived before the deadline; the transaction may still be mined."""

    def __init__(self, tx_hash: str, timeout_s: float) -> None:
        super().__init__(f"no receipt for {tx_hash} after {timeout_s:.1f} s")
        self.tx_hash = tx_hash
        self.timeout_s = timeout_s


class TransactionReverted(ChainError):
    """Execution failed: during a call or gas estimation, or in a mined receipt (status 0).

    ``reason`` is the ``Error(string)`` message; ``error_name``/``error_args`` are a
    decoded custom error of the contract's ABI (e.g. ``"Probe__TooLarge"``,
    ``{"value": 1001, "limit": 1000}``). All three stay empty when the chain gives
    no revert data (invalid opcode, out of gas, or a mined failure Geth cannot replay).
    """

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        error_name: str | None = None,
        error_args: Mapping[str, Any] | None = None,
        data: bytes = b"",
        tx_hash: str | None = None,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.error_name = error_name
        self.error_args: dict[str, Any] = dict(error_args or {})
        self.data = data
        self.tx_hash = tx_hash


class UnknownContractMember(ChainError):
    """The function, event or error name is not in the contract's ABI."""


class InvalidArguments(ChainError):
    """The arguments do not match the function's or constructor's ABI types."""
