"""Domain events -> bus messages (``ehr.consent.v1`` payloads in the shared envelope).

One grant, revocation, expiry or refusal is one event: ``GrantScope.categories`` holds
every category of the contract's mask. Category and purpose codes come from the one
mapping in ``services.platform.events.vocabulary`` (the vocabulary is numbered like the
contract: purpose codes are the purpose ids, category code n is bit 1 << (n - 1)).
"""

from __future__ import annotations

from datetime import UTC, datetime

from ehr.consent.v1 import consent_pb2
from ehr.envelope.v1 import envelope_pb2
from ehr.vocabulary.v1 import vocabulary_pb2
from google.protobuf.message import Message as ProtoMessage

from services.consent.domain.events import (
    Actor,
    ConsentExpired,
    ConsentGranted,
    ConsentRejected,
    ConsentRevoked,
    DomainEvent,
)
from services.consent.domain.model import Grant
from services.platform.bus.port import Message
from services.platform.events import envelope as codec
from services.platform.events import vocabulary
from services.platform.events.topics import topic_for

SOURCE = "consent"

MESSAGE_KINDS: dict[str, consent_pb2.ConsentMessageKind.ValueType] = {
    "grant": consent_pb2.CONSENT_MESSAGE_KIND_GRANT,
    "revoke": consent_pb2.CONSENT_MESSAGE_KIND_REVOKE,
}
REFUSERS: dict[str, consent_pb2.RefusedBy.ValueType] = {
    "service": consent_pb2.REFUSED_BY_SERVICE,
    "registry": consent_pb2.REFUSED_BY_REGISTRY,
}


def _timestamp(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _scope(
    grantee_id: str, grantee: str, categories: int, purpose: int, expires_at: int
) -> consent_pb2.GrantScope:
    scope = consent_pb2.GrantScope(
        grantee_id=grantee_id,
        grantee_address=grantee,
        categories=vocabulary.categories_of(categories),
        purpose=vocabulary.purpose_of(purpose),
    )
    if expires_at:
        scope.expires_at.FromDatetime(_timestamp(expires_at))
    return scope


def _grant_scope(grant: Grant, categories: int) -> consent_pb2.GrantScope:
    return _scope(grant.grantee_id, grant.grantee, categories, grant.purpose, grant.expires_at)


def _receipt(grant: Grant) -> vocabulary_pb2.ChainReceipt:
    p = grant.position
    return vocabulary_pb2.ChainReceipt(
        chain_id=p.chain_id,
        transaction_hash=p.tx_hash,
        block_number=p.block_number,
        contract_address=p.contract_address,
        gas_used=p.gas_used,
    )


def payload_of(event: DomainEvent) -> ProtoMessage:
    """The proto payload announcing one domain event."""
    if isinstance(event, ConsentGranted):
        g = event.grant
        return consent_pb2.ConsentGranted(
            grant_id=g.grant_id,
            patient_id=g.patient_id,
            patient_address=g.patient,
            scope=_grant_scope(g, g.categories),
            nonce=g.nonce,
            message_digest=event.message_digest,
            receipt=_receipt(g),
        )
    if isinstance(event, ConsentRevoked):
        g = event.grant
        revoked = consent_pb2.ConsentRevoked(
            grant_id=g.grant_id,
            patient_id=g.patient_id,
            patient_address=g.patient,
            scope=_grant_scope(g, event.revoked),
            nonce=event.nonce,
            message_digest=event.message_digest,
            receipt=_receipt(g),
            remaining_categories=vocabulary.categories_of(g.categories & ~event.revoked),
        )
        revoked.effective_at.FromDatetime(_timestamp(event.effective_at))
        return revoked
    if isinstance(event, ConsentExpired):
        g = event.grant
        return consent_pb2.ConsentExpired(
            grant_id=g.grant_id, patient_id=g.patient_id, scope=_grant_scope(g, g.categories)
        )
    assert isinstance(event, ConsentRejected)
    return consent_pb2.ConsentRejected(
        patient_id=event.patient_id,
        patient_address=event.patient,
        kind=MESSAGE_KINDS[event.kind],
        scope=_scope(
            event.grantee_id, event.grantee, event.categories, event.purpose, event.expires_at
        ),
        nonce=event.nonce,
        message_digest=event.message_digest,
        refused_by=REFUSERS[event.refused_by],
        error_name=event.error_name,
        refusal_code=event.refusal_code,
        outcome=vocabulary_pb2.OUTCOME_MINOR_FAILURE,
    )


def _actor(actor: Actor) -> envelope_pb2.Actor:
    return envelope_pb2.Actor(
        id=actor.account_id,
        role=vocabulary.ROLE_CODES.get(actor.role, vocabulary_pb2.ROLE_SERVICE),
        token_id=actor.token_id,
    )


def to_messages(event: DomainEvent) -> list[Message]:
    """The bus message (topic, key = patient id, envelope bytes) of one domain event."""
    envelope = codec.new_envelope(
        payload_of(event),
        source=SOURCE,
        actor=_actor(event.actor),
        correlation_id=event.actor.correlation_id or None,
    )
    return [
        Message(
            topic=topic_for(envelope.type).name,
            key=codec.partition_key(envelope),
            value=codec.encode(envelope),
        )
    ]
