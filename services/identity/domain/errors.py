"""Errors of the identity service; mapped to HTTP statuses only in ``api/``."""

from __future__ import annotations


class IdentityError(Exception):
    """Root of identity errors; ``code`` is the machine-readable error code."""

    code = "identity_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class InvalidInput(IdentityError):
    code = "invalid_input"


class BadSignature(IdentityError):
    code = "bad_signature"


class AccountNotFound(IdentityError):
    code = "account_not_found"


class AccountExists(IdentityError):
    code = "account_exists"


class RoleNotPermitted(IdentityError):
    """The caller may not register or act in this role."""

    code = "role_not_permitted"


class ChallengeRejected(IdentityError):
    """Unknown, expired or already used login challenge."""

    code = "challenge_rejected"


class NotAProvider(IdentityError):
    code = "not_a_provider"


class ProviderStateConflict(IdentityError):
    """Verify/suspend/reinstate does not apply in the provider's current state."""

    code = "provider_state_conflict"


class RegistryUnavailable(IdentityError):
    """The chain did not accept or confirm the registry transaction."""

    code = "registry_unavailable"
