"""Adapters of the ledger relay: SQL log storage and the AuditAnchor client."""
