"""Domain events -> bus messages (``ehr.consent.v1`` payloads in the shared envelope).

The proto's ``GrantScope`` holds ONE category, with the vocabulary's own codes, so one
grant or revocation over several category bits is announced as one event per bit, all
with the same ``grant_id``. Category and purpose codes are mapped below; the registry's
NOTES bit has no vocabulary code of its own and is announced as GENERAL.
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
    ConsentRevoked,
    DomainEvent,
)
from services.consent.domain.model import Category, Grant, Purpose, Role, category_bits
from services.platform.bus.port import Message
from services.platform.events import envelope as codec
from services.platform.events.topics import topic_for

SOURCE = "consent"

CATEGORY_CODES: dict[Category, int] = {
    Category.LABS: vocabulary_pb2.RECORD_CATEGORY_LABORATORY,
    Category.IMAGING: vocabulary_pb2.RECORD_CATEGORY_IMAGING,
    Category.MEDICATIONS: vocabulary_pb2.RECORD_CATEGORY_MEDICATION,
    Category.NOTES: vocabulary_pb2.RECORD_CATEGORY_GENERAL,
    Category.MENTAL_HEALTH: vocabulary_pb2.RECORD_CATEGORY_MENTAL_HEALTH,
}
PURPOSE_CODES: dict[Purpose, int] = {
    Purpose.TREATMENT: vocabulary_pb2.PURPOSE_OF_USE_TREATMENT,
    Purpose.PAYMENT: vocabulary_pb2.PURPOSE_OF_USE_PAYMENT,
    Purpose.OPERATIONS: vocabulary_pb2.PURPOSE_OF_USE_OPERATIONS,
    Purpose.RESEARCH: vocabulary_pb2.PURPOSE_OF_USE_RESEARCH,
    Purpose.EMERGENCY: vocabulary_pb2.PURPOSE_OF_USE_EMERGENCY,
}
ROLE_CODES: dict[str, int] = {
    Role.PATIENT: vocabulary_pb2.ROLE_PATIENT,
    Role.PROVIDER: vocabulary_pb2.ROLE_PROVIDER,
    Role.AUDITOR: vocabulary_pb2.ROLE_AUDITOR,
    Role.ADMINISTRATOR: vocabulary_pb2.ROLE_ADMINISTRATOR,
    Role.SERVICE: vocabulary_pb2.ROLE_SERVICE,
}


def _scope(grant: Grant, category: Category) -> consent_pb2.GrantScope:
    scope = consent_pb2.GrantScope(
        grantee_id=grant.grantee_id,
        grantee_address=grant.grantee,
        category=CATEGORY_CODES[category],  # type: ignore[arg-type]
        purpose=PURPOSE_CODES[Purpose(grant.purpose)],  # type: ignore[arg-type]
    )
    scope.expires_at.FromDatetime(datetime.fromtimestamp(grant.expires_at, UTC))
    return scope


def _receipt(grant: Grant) -> vocabulary_pb2.ChainReceipt:
    p = grant.position
    return vocabulary_pb2.ChainReceipt(
        chain_id=p.chain_id,
        transaction_hash=p.tx_hash,
        block_number=p.block_number,
        contract_address=p.contract_address,
        gas_used=p.gas_used,
    )


def payloads(event: DomainEvent) -> list[ProtoMessage]:
    """The proto payloads announcing one domain event (one per category bit)."""
    out: list[ProtoMessage] = []
    if isinstance(event, ConsentGranted):
        g = event.grant
        for category in category_bits(g.categories):
            out.append(
                consent_pb2.ConsentGranted(
                    grant_id=g.grant_id,
                    patient_id=g.patient_id,
                    patient_address=g.patient,
                    scope=_scope(g, category),
                    nonce=g.nonce,
                    message_digest=event.message_digest,
                    receipt=_receipt(g),
                )
            )
    elif isinstance(event, ConsentRevoked):
        g = event.grant
        for category in category_bits(event.revoked):
            revoked = consent_pb2.ConsentRevoked(
                grant_id=g.grant_id,
                patient_id=g.patient_id,
                patient_address=g.patient,
                scope=_scope(g, category),
                nonce=event.nonce,
                message_digest=event.message_digest,
                receipt=_receipt(g),
            )
            revoked.effective_at.FromDatetime(datetime.fromtimestamp(event.effective_at, UTC))
            out.append(revoked)
    elif isinstance(event, ConsentExpired):
        g = event.grant
        for category in category_bits(g.categories):
            out.append(
                consent_pb2.ConsentExpired(
                    grant_id=g.grant_id, patient_id=g.patient_id, scope=_scope(g, category)
                )
            )
    return out


def _actor(actor: Actor) -> envelope_pb2.Actor:
    return envelope_pb2.Actor(
        id=actor.account_id,
        role=ROLE_CODES.get(actor.role, vocabulary_pb2.ROLE_SERVICE),  # type: ignore[arg-type]
        token_id=actor.token_id,
    )


def to_messages(event: DomainEvent) -> list[Message]:
    """Bus messages (topic, key = patient id, envelope bytes) for one domain event."""
    messages: list[Message] = []
    for payload in payloads(event):
        envelope = codec.new_envelope(
            payload,
            source=SOURCE,
            actor=_actor(event.actor),
            correlation_id=event.actor.correlation_id or None,
        )
        messages.append(
            Message(
                topic=topic_for(envelope.type).name,
                key=codec.partition_key(envelope),
                value=codec.encode(envelope),
            )
        )
    return messages
