"""Domain events -> bus messages (``ehr.records.v1`` and ``ehr.access.v1`` payloads in the
shared envelope)."""

from __future__ import annotations

from datetime import UTC, datetime

from ehr.access.v1 import access_pb2
from ehr.envelope.v1 import envelope_pb2
from ehr.records.v1 import records_pb2
from ehr.vocabulary.v1 import vocabulary_pb2
from google.protobuf.message import Message as ProtoMessage

from services.platform.bus.port import Message
from services.platform.events import envelope as codec
from services.platform.events.vocabulary import ROLE_CODES
from services.record_store.domain.events import (
    Actor,
    BreakGlassDeclared,
    DomainEvent,
    KeysRemoved,
    KeysShared,
    ReadWasDenied,
    RecordWasRead,
    RecordWasShredded,
    VersionRotated,
    VersionStored,
)
from services.record_store.domain.model import Category

SOURCE = "record-store"


def _category(category: Category | None) -> vocabulary_pb2.RecordCategory.ValueType:
    if category is None:
        return vocabulary_pb2.RECORD_CATEGORY_UNSPECIFIED
    return vocabulary_pb2.RecordCategory.ValueType(category.code)


def _purpose(purpose: int) -> vocabulary_pb2.PurposeOfUse.ValueType:
    return vocabulary_pb2.PurposeOfUse.ValueType(purpose if 1 <= purpose <= 6 else 0)


def _role(role: str) -> vocabulary_pb2.Role.ValueType:
    return ROLE_CODES.get(role, vocabulary_pb2.ROLE_UNSPECIFIED)


def payload_of(event: DomainEvent) -> ProtoMessage:
    """The proto payload announcing one domain event."""
    if isinstance(event, VersionStored):
        if event.version == 1:
            return records_pb2.RecordCreated(
                record_id=event.record_id,
                version=1,
                patient_id=event.patient_id,
                provider_id=event.provider_id,
                provider_address=event.provider_address,
                category=_category(event.category),
                ciphertext_sha256=event.ciphertext_sha256,
                ciphertext_size=event.ciphertext_size,
                key_holder_ids=list(event.key_holder_ids),
            )
        return records_pb2.RecordAmended(
            record_id=event.record_id,
            version=event.version,
            previous_version=event.version - 1,
            patient_id=event.patient_id,
            provider_id=event.provider_id,
            provider_address=event.provider_address,
            category=_category(event.category),
            ciphertext_sha256=event.ciphertext_sha256,
            ciphertext_size=event.ciphertext_size,
            key_holder_ids=list(event.key_holder_ids),
        )
    if isinstance(event, RecordWasRead):
        return access_pb2.RecordRead(
            record_id=event.record_id,
            version=event.version,
            patient_id=event.patient_id,
            reader_id=event.actor.account_id,
            reader_role=_role(event.actor.role),
            category=_category(event.category),
            purpose=_purpose(event.purpose),
            basis=access_pb2.AccessBasis.ValueType(int(event.basis)),
            grant_id=event.grant_id,
            break_glass_id=event.break_glass_id,
        )
    if isinstance(event, ReadWasDenied):
        return access_pb2.ReadDenied(
            record_id=event.record_id,
            patient_id=event.patient_id,
            reader_id=event.actor.account_id,
            reader_role=_role(event.actor.role),
            category=_category(event.category),
            purpose=_purpose(event.purpose),
            reason=access_pb2.DenialReason.ValueType(int(event.reason)),
            outcome=vocabulary_pb2.OUTCOME_MINOR_FAILURE,
        )
    if isinstance(event, KeysShared):
        return records_pb2.RecordKeysShared(
            patient_id=event.patient_id,
            holder_id=event.holder_id,
            record_ids=list(event.record_ids),
            key_count=event.key_count,
        )
    if isinstance(event, KeysRemoved):
        return records_pb2.RecordKeysRemoved(
            patient_id=event.patient_id,
            holder_id=event.holder_id,
            categories=[_category(c) for c in event.categories],
            key_count=event.key_count,
        )
    if isinstance(event, VersionRotated):
        return records_pb2.RecordRotated(
            record_id=event.record_id,
            version=event.version,
            patient_id=event.patient_id,
            key_generation=event.key_generation,
            ciphertext_sha256=event.ciphertext_sha256,
            ciphertext_size=event.ciphertext_size,
            key_holder_ids=list(event.key_holder_ids),
        )
    if isinstance(event, RecordWasShredded):
        return records_pb2.RecordShredded(
            record_id=event.record_id,
            patient_id=event.patient_id,
            category=_category(event.category),
            versions=event.versions,
            key_count=event.key_count,
        )
    assert isinstance(event, BreakGlassDeclared)
    used = access_pb2.BreakGlassUsed(
        break_glass_id=event.break_glass_id,
        patient_id=event.patient_id,
        reader_id=event.actor.account_id,
        reader_role=_role(event.actor.role),
        categories=[_category(c) for c in event.categories],
        justification=event.justification,
    )
    used.expires_at.FromDatetime(datetime.fromtimestamp(event.expires_at, UTC))
    return used


def _actor(actor: Actor) -> envelope_pb2.Actor:
    return envelope_pb2.Actor(id=actor.account_id, role=_role(actor.role), token_id=actor.token_id)


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
            topic=codec.topic_of(envelope).name,
            key=codec.partition_key(envelope),
            value=codec.encode(envelope),
        )
    ]
