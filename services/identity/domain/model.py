"""Accounts, login challenges and sessions of the identity service (pure Python)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from datetime import datetime


class Role(enum.StrEnum):
    PATIENT = "patient"
    PROVIDER = "provider"
    AUDITOR = "auditor"
    ADMIN = "admin"
    #: a service's own account (e.g. the record store asking consent): registered by an
    #: admin, logs in by signed challenge like any user
    SERVICE = "service"


#: Roles anyone may register for themselves; the others need an admin (or the
#: bootstrap admin address, for the first admin).
SELF_SERVICE_ROLES = frozenset({Role.PATIENT, Role.PROVIDER})


class ProviderStatus(enum.StrEnum):
    """Verification state of a provider account (mirrors ProviderRegistry)."""

    UNVERIFIED = "unverified"
    VERIFIED = "verified"
    SUSPENDED = "suspended"


@dataclass(frozen=True)
class Account:
    account_id: str
    name: str
    role: Role
    signing_address: str  # checksummed
    encryption_key: str  # X25519 public key, 64 hex characters
    created_at: datetime
    provider_status: ProviderStatus | None = None
    licence_hash: str | None = None  # 0x + 64 hex once verified

    def with_provider_status(
        self, status: ProviderStatus, licence_hash: str | None = None
    ) -> Account:
        return replace(self, provider_status=status, licence_hash=licence_hash or self.licence_hash)


@dataclass(frozen=True)
class Challenge:
    """A login challenge: an EIP-4361 style message the account must sign once."""

    nonce: str
    account_id: str
    message: str
    issued_at: datetime
    expires_at: datetime


@dataclass(frozen=True)
class Session:
    session_id: str
    account_id: str
    token_ids: tuple[str, ...]
    created_at: datetime
    expires_at: datetime


@dataclass(frozen=True)
class IssuedToken:
    token: str
    token_id: str
    audience: str
    expires_at: datetime


@dataclass(frozen=True)
class ChainReceipt:
    chain_id: int
    transaction_hash: str
    block_number: int
    contract_address: str
    gas_used: int
