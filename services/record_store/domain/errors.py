"""Errors of the record store (root ``RecordStoreError``); ``api`` maps them to HTTP."""

from __future__ import annotations


class RecordStoreError(Exception):
    """Root of every record store error."""

    code = "record_store_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class InvalidUpload(RecordStoreError):
    """The upload or key material is not acceptable as it stands (nothing is written)."""

    code = "invalid_upload"


class PayloadTooLarge(RecordStoreError):
    """The ciphertext is larger than the configured limit."""

    code = "payload_too_large"


class UnknownAccount(RecordStoreError):
    """An account the request names is not known to the record store."""

    code = "unknown_account"


class RecordNotFound(RecordStoreError):
    """No such record or version."""

    code = "record_not_found"


class RecordExists(RecordStoreError):
    """A record (or version) with this id exists: a replayed upload."""

    code = "record_exists"


class RecordShredded(RecordStoreError):
    """The record was crypto-shredded: only its metadata and hashes remain."""

    code = "record_shredded"


class NotAllowed(RecordStoreError):
    """The caller's role or ownership does not allow this action."""

    code = "not_allowed"


class ProviderNotVerified(NotAllowed):
    """The provider is not verified in ``ProviderRegistry``."""

    code = "provider_not_verified"


class ProviderVerificationPending(RecordStoreError):
    """The provider is verified (identity or the chain says so) but the record store has
    not yet read the account from identity's events: retry shortly."""

    code = "provider_verification_pending"
    retry_after_seconds = 1


class AccessDenied(NotAllowed):
    """The read was refused (and recorded as a denied read); ``code`` names the reason
    (``no_grant``, ``grant_revoked``, ``grant_expired``, ...)."""

    code = "access_denied"


class KeyNotAvailable(RecordStoreError):
    """Access is allowed but no data key is wrapped for the reader yet."""

    code = "key_not_available"


class DependencyUnavailable(RecordStoreError):
    """The consent service or the chain could not answer."""

    code = "dependency_unavailable"
