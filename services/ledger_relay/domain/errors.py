"""Errors of the ledger relay (root ``LedgerError``)."""

from __future__ import annotations

import ehr_protocol.errors as protocol


class LedgerError(Exception):
    """Root of every ledger relay error."""

    code = "ledger_error"


class EventNotFound(LedgerError):
    """No leaf of the log holds this event."""

    code = "event_not_found"


class CheckpointNotFound(LedgerError, protocol.CheckpointNotFound):
    """No anchored checkpoint with this index or size (a verifier catches the protocol's
    ``CheckpointNotFound``, whichever reader raised it)."""

    code = "checkpoint_not_found"


class NotYetAnchored(LedgerError):
    """The event is in the log but no anchored checkpoint covers it yet."""

    code = "not_yet_anchored"


class InvalidRange(LedgerError):
    """A proof was asked for sizes or indices outside the tree."""

    code = "invalid_range"


ProofInvalid = protocol.ProofInvalid
"""A proof does not verify: the protocol's own error (its checks raise it), code
``proof_invalid``."""


class LogDiverged(LedgerError):
    """The local log and the chain's checkpoints disagree (never expected)."""

    code = "log_diverged"
