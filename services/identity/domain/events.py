"""Domain events of identity; the adapters encode them as protobuf envelopes."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from services.identity.domain.model import ChainReceipt, Role


class LoginFailure(enum.StrEnum):
    UNKNOWN_ACCOUNT = "unknown_account"
    BAD_SIGNATURE = "bad_signature"
    EXPIRED_CHALLENGE = "expired_challenge"
    REPLAYED_CHALLENGE = "replayed_challenge"


@dataclass(frozen=True)
class Actor:
    """Who caused an event: an account (with role and token) or the service itself."""

    id: str
    role: Role | None
    token_id: str | None = None
    correlation_id: str | None = None


@dataclass(frozen=True)
class AccountRegistered:
    account_id: str
    role: Role
    signing_address: str
    encryption_key: str
    # The signed-in account that registered this one; None when it registered itself.
    registered_by: str | None = None


@dataclass(frozen=True)
class ProviderVerified:
    account_id: str
    provider_address: str
    licence_hash: bytes
    receipt: ChainReceipt


@dataclass(frozen=True)
class ProviderSuspended:
    account_id: str
    provider_address: str
    reason_code: str
    receipt: ChainReceipt


@dataclass(frozen=True)
class ProviderReinstated:
    account_id: str
    provider_address: str
    licence_hash: bytes
    receipt: ChainReceipt


@dataclass(frozen=True)
class LoginSucceeded:
    account_id: str
    role: Role
    session_id: str
    token_id: str
    token_expires_at: datetime


@dataclass(frozen=True)
class LoginFailed:
    account_id: str
    reason: LoginFailure


DomainEvent = (
    AccountRegistered
    | ProviderVerified
    | ProviderSuspended
    | ProviderReinstated
    | LoginSucceeded
    | LoginFailed
)


@dataclass(frozen=True)
class Recorded:
    """An event with the actor that caused it."""

    event: DomainEvent
    actor: Actor
