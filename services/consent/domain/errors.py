"""Errors of the consent service (root ``ConsentError``); ``api`` maps them to HTTP."""

from __future__ import annotations


class ConsentError(Exception):
    """Root of every consent service error."""

    code = "consent_error"


class InvalidMessage(ConsentError):
    """The signed message is not acceptable as it stands (scope, times, grantee)."""

    code = "invalid_message"


class MessageExpired(InvalidMessage):
    """The message's deadline has passed (or its grant would already be over)."""

    code = "message_expired"


class ExpiryTooFar(InvalidMessage):
    """The grant would run longer than the registry's horizon (``MAX_GRANT_HORIZON``)."""

    code = "expiry_too_far"


class BadSignature(InvalidMessage):
    """The signature is malformed or was not made by the patient for this message."""

    code = "bad_signature"


class NonceMismatch(ConsentError):
    """The message's nonce is not the patient's next nonce: a replay, or out of order."""

    code = "nonce_mismatch"


class UnknownAccount(ConsentError):
    """An account or address the message names is not registered."""

    code = "unknown_account"


class NotOwnConsent(ConsentError):
    """The caller may not act on or see this patient's consents."""

    code = "not_own_consent"


class RejectedByChain(ConsentError):
    """The registry refused the message; ``error_name`` is its custom error."""

    code = "rejected_by_chain"

    def __init__(self, message: str, error_name: str | None) -> None:
        super().__init__(message)
        self.error_name = error_name


class RegistryUnavailable(ConsentError):
    """The chain could not be reached, or did not confirm in time."""

    code = "registry_unavailable"


class ChangeQuarantined(ConsentError):
    """The registry recorded the message but its log cannot be held by the projection;
    the log was quarantined for an operator (``GET /consent/quarantine``)."""

    code = "change_quarantined"


class UnrepresentableChange(ConsentError):
    """The repository cannot store a registry log's values (raised by ``apply``)."""

    code = "unrepresentable_change"
