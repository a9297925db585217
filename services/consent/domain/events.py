"""Domain events of the consent service; adapters turn them into bus envelopes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

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
    """A patient-signed message was refused, by the service's pre-check of a registry
    rule (``refused_by="service"``) or by the registry itself (``"registry"``).

    ``error_name`` is the registry's custom error for the rule, ``refusal_code`` the
    service's error code returned to the caller. ``expires_at`` is 0 for a revocation.
    """

    kind: Literal["grant", "revoke"]
    patient: str
    patient_id: str
    grantee: str
    grantee_id: str
    categories: int
    purpose: int
    expires_at: int
    nonce: int
    message_digest: bytes
    refused_by: Literal["service", "registry"]
    error_name: str
    refusal_code: str
    detail: str
    actor: Actor
    at: float


DomainEvent = ConsentGranted | ConsentRevoked | ConsentExpired | ConsentRejected
