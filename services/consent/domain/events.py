"""Domain events of the consent service; adapters turn them into bus envelopes."""

from __future__ import annotations

from dataclasses import dataclass

from services.consent.domain.model import Grant


@dataclass(frozen=True, slots=True)
class Actor:
    """Who caused an event: an account (with its token id) or the service itself."""

    account_id: str
    role: str
    token_id: str = ""
    correlation_id: str = ""


SERVICE_ACTOR = Actor("consent", "service")


@dataclass(frozen=True, slots=True)
class ConsentGranted:
    """A grant was recorded on chain; ``grant`` is the projection row after it."""

    grant: Grant
    message_digest: bytes
    actor: Actor


@dataclass(frozen=True, slots=True)
class ConsentRevoked:
    """Categories of a grant were revoked on chain (``revoked`` bits of ``grant``)."""

    grant: Grant
    revoked: int
    nonce: int
    message_digest: bytes
    effective_at: float
    actor: Actor


@dataclass(frozen=True, slots=True)
class ConsentExpired:
    """A grant reached its expiry time (it stopped authorising at ``grant.expires_at``)."""

    grant: Grant
    actor: Actor


@dataclass(frozen=True, slots=True)
class ConsentRejected:
    """A signed message was refused (``error_name``: the registry's custom error)."""

    kind: str
    patient: str
    grantee: str
    nonce: int
    error_name: str
    detail: str
    actor: Actor
    at: float


DomainEvent = ConsentGranted | ConsentRevoked | ConsentExpired
