"""Errors of audit-analytics: one root, specific subclasses (mapped to HTTP in ``api/``)."""

from __future__ import annotations


class AuditError(Exception):
    code = "audit_error"


class EventNotFound(AuditError):
    code = "event_not_found"


class FindingNotFound(AuditError):
    code = "finding_not_found"


class NotYetAnchored(AuditError):
    code = "not_yet_anchored"


class InvalidQuery(AuditError):
    code = "invalid_query"


class ProofsUnavailable(AuditError):
    """The ledger relay cannot be asked (HTTP error, timeout)."""

    code = "proofs_unavailable"
