"""Ports of the identity service: storage, the provider registry, token signing."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from datetime import datetime

from services.identity.domain.events import Recorded
from services.identity.domain.model import (
    Account,
    ChainReceipt,
    Challenge,
    IssuedToken,
    Session,
)


class IdentityStore(ABC):
    """Accounts, challenges and sessions; each write stores its events in the same
    transaction (outbox)."""

    @abstractmethod
    def add_account(self, account: Account, events: Sequence[Recorded]) -> None:
        """Raises ``AccountExists`` when the signing address is taken."""

    @abstractmethod
    def account(self, account_id: str) -> Account | None: ...

    @abstractmethod
    def account_by_address(self, address: str) -> Account | None: ...

    @abstractmethod
    def update_account(self, account: Account, events: Sequence[Recorded]) -> None: ...

    @abstractmethod
    def add_challenge(self, challenge: Challenge) -> None: ...

    @abstractmethod
    def challenge(self, nonce: str) -> tuple[Challenge, datetime | None] | None:
        """The challenge and when it was used (None while unused)."""

    @abstractmethod
    def complete_login(
        self, nonce: str, used_at: datetime, session: Session, events: Sequence[Recorded]
    ) -> bool:
        """Marks the challenge used, stores the session and events; False if it was
        already used (nothing written then)."""

    @abstractmethod
    def record(self, events: Sequence[Recorded]) -> None:
        """Stores events alone (failed logins)."""


class ProviderRegistry(ABC):
    """The on-chain ProviderRegistry, seen from identity (which holds REGISTRAR_ROLE)."""

    @abstractmethod
    def status(self, provider: str) -> str:
        """``none``, ``active`` or ``suspended``."""

    @abstractmethod
    def register(
        self, provider: str, licence_hash: bytes, metadata_hash: bytes
    ) -> ChainReceipt: ...

    @abstractmethod
    def suspend(self, provider: str) -> ChainReceipt: ...

    @abstractmethod
    def reinstate(self, provider: str) -> ChainReceipt: ...


class TokenIssuer(ABC):
    """Signs access tokens (ES256) with the current key of a rotating key set."""

    @abstractmethod
    def issue(
        self, *, subject: str, role: str, audience: str, session_id: str, now: datetime
    ) -> IssuedToken: ...
