"""Errors of the protocol's checks and of reading the chain.

The services' own error trees build on these (the chain port's ``ChainError`` is this
one; the ledger relay's ``CheckpointNotFound`` is a subclass), so a caller catches the
same class whichever side raised it.
"""

from __future__ import annotations


class ProofInvalid(Exception):
    """A proof does not verify (or is malformed, or names a checkpoint the chain lacks)."""

    code = "proof_invalid"


class CheckpointNotFound(Exception):
    """No anchored checkpoint with this index or size."""

    code = "checkpoint_not_found"


class ChainError(Exception):
    """Root of every error raised when reading from or writing to the chain."""


class ChainUnavailable(ChainError):
    """No RPC endpoint answered (every URL of the adapter was tried)."""
