"""Envelope codec: round trips for every event type, ids, validation, hashing."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from ehr.access.v1 import access_pb2
from ehr.audit.v1 import audit_pb2
from ehr.consent.v1 import consent_pb2
from ehr.envelope.v1 import envelope_pb2
from ehr.vocabulary.v1 import vocabulary_pb2
from google.protobuf.message import Message

from services.platform.events import envelope as codec
from services.platform.events.catalogue import EVENT_TYPE_PATTERN, EVENT_TYPES, payload_class
from services.platform.events.errors import (
    EventError,
    MalformedEvent,
    UnknownEventType,
    WrongPayloadType,
)
from services.platform.events.topics import topic_for

PROVIDER = codec.Actor(
    id="acct-provider-1",
    role=vocabulary_pb2.ROLE_PROVIDER,
    network_address="10.0.0.7",
    token_id="jti-1",
)

# Every kind of action ARCHITECTURE.md names has an event type (plus lockouts).
EXPECTED_EVENT_TYPES = {
    "ehr.identity.account_registered.v1",
    "ehr.identity.provider_verified.v1",
    "ehr.identity.provider_suspended.v1",
    "ehr.identity.provider_reinstated.v1",
    "ehr.identity.login_succeeded.v1",
    "ehr.identity.login_failed.v1",
    "ehr.identity.account_locked.v1",
    "ehr.consent.granted.v1",
    "ehr.consent.revoked.v1",
    "ehr.consent.expired.v1",
    "ehr.consent.rejected.v1",
    "ehr.records.record_created.v1",
    "ehr.records.record_amended.v1",
    "ehr.records.keys_shared.v1",
    "ehr.records.keys_removed.v1",
    "ehr.records.record_rotated.v1",
    "ehr.records.record_shredded.v1",
    "ehr.access.record_read.v1",
    "ehr.access.read_denied.v1",
    "ehr.access.break_glass_used.v1",
    "ehr.ledger.checkpoint_anchored.v1",
    "ehr.audit.anomaly_detected.v1",
    "ehr.audit.anomaly_reviewed.v1",
    "ehr.audit.break_glass_reviewed.v1",
    "ehr.audit.report_generated.v1",
}


def granted(patient_id: str = "pat-1") -> consent_pb2.ConsentGranted:
    return consent_pb2.ConsentGranted(
        grant_id="grant-1",
        patient_id=patient_id,
        scope=consent_pb2.GrantScope(
            grantee_id="acct-provider-1",
            categories=[vocabulary_pb2.RECORD_CATEGORY_LABORATORY],
            purpose=vocabulary_pb2.PURPOSE_OF_USE_TREATMENT,
        ),
        nonce=3,
        message_digest=b"\x01" * 32,
    )


def granted_envelope() -> envelope_pb2.Envelope:
    return codec.new_envelope(granted(), source="consent", actor=PROVIDER)


def test_catalogue_holds_exactly_the_expected_event_types() -> None:
    assert set(EVENT_TYPES) == EXPECTED_EVENT_TYPES


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_round_trip_for_every_event_type(
    event_type: str, sample_payload: Callable[[str], Message]
) -> None:
    payload = sample_payload(event_type)
    envelope = codec.new_envelope(
        payload,
        source="test-producer",
        actor=PROVIDER,
        correlation_id="req-42",
        causation_id=codec.new_event_id(),
    )

    raw = codec.encode(envelope)
    decoded = codec.decode(raw)

    assert decoded == envelope
    assert codec.encode(decoded) == raw
    assert decoded.type == event_type
    assert decoded.spec_version == "1.0"
    assert decoded.correlation_id == "req-42"
    assert decoded.actor == PROVIDER
    assert codec.payload(decoded, type(payload)) == payload
    assert codec.unpack_payload(decoded) == payload
    assert codec.topic_of(decoded) == topic_for(event_type)
    assert codec.partition_key(decoded) == decoded.subject != ""


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_event_type_names_the_payload_package(event_type: str) -> None:
    match = EVENT_TYPE_PATTERN.match(event_type)
    assert match is not None
    package = payload_class(event_type).DESCRIPTOR.file.package
    assert package == f"ehr.{match['context']}.v{match['major']}"


def test_event_id_is_a_uuid7_and_ids_sort_by_creation_time() -> None:
    before = datetime.now(UTC)
    envelopes = [granted_envelope() for _ in range(300)]
    after = datetime.now(UTC)

    ids = [e.id for e in envelopes]
    assert len(set(ids)) == len(ids)
    assert sorted(ids) == ids
    for envelope in envelopes:
        parsed = uuid.UUID(envelope.id)
        assert parsed.version == 7
        assert parsed.variant == uuid.RFC_4122
        id_millis = parsed.int >> 80
        assert int(before.timestamp() * 1000) - 1 <= id_millis <= int(after.timestamp() * 1000) + 1
        assert before <= codec.event_time(envelope) <= after


def test_time_is_utc_whatever_the_zone_given() -> None:
    local = datetime(2026, 3, 1, 12, 0, tzinfo=UTC).astimezone(
        __import__("datetime").timezone(timedelta(hours=5))
    )
    envelope = codec.new_envelope(granted(), source="consent", actor=PROVIDER, time=local)
    assert codec.event_time(envelope) == datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    with pytest.raises(MalformedEvent):
        codec.new_envelope(
            granted(), source="consent", actor=PROVIDER, time=datetime(2026, 3, 1, 12, 0)
        )


def test_correlation_id_defaults_to_the_event_id() -> None:
    envelope = granted_envelope()
    assert envelope.correlation_id == envelope.id
    assert envelope.causation_id == ""


def _valid() -> envelope_pb2.Envelope:
    return granted_envelope()


def _corrupt(change: Callable[[envelope_pb2.Envelope], None]) -> bytes:
    envelope = _valid()
    change(envelope)
    return envelope.SerializeToString()


def _other_payload(envelope: envelope_pb2.Envelope) -> None:
    envelope.payload.Pack(access_pb2.RecordRead(patient_id=envelope.subject))


def _garbled_payload(envelope: envelope_pb2.Envelope) -> None:
    envelope.payload.value = b"\xff\xff\xff\xff"


MALFORMED = {
    "garbage": b"\xff\xff\xff\xff\xff",
    "empty": b"",
    "text": b"not an event at all",
    "truncated": b"<truncated>",
    "uuid4 id": _corrupt(lambda e: setattr(e, "id", str(uuid.uuid4()))),
    "non-canonical id": _corrupt(lambda e: setattr(e, "id", e.id.upper())),
    "no source": _corrupt(lambda e: e.ClearField("source")),
    "no time": _corrupt(lambda e: e.ClearField("time")),
    "no actor": _corrupt(lambda e: e.ClearField("actor")),
    "actor without role": _corrupt(lambda e: setattr(e.actor, "role", 0)),
    "no correlation id": _corrupt(lambda e: e.ClearField("correlation_id")),
    "wrong spec version": _corrupt(lambda e: setattr(e, "spec_version", "0.3")),
    "type not ehr-shaped": _corrupt(lambda e: setattr(e, "type", "com.example.thing")),
    "no payload": _corrupt(lambda e: e.ClearField("payload")),
    "payload of another type": _corrupt(_other_payload),
    "payload bytes garbled": _corrupt(_garbled_payload),
    "subject not the payload's": _corrupt(lambda e: setattr(e, "subject", "pat-other")),
}


@pytest.mark.parametrize("raw", list(MALFORMED.values()), ids=list(MALFORMED))
def test_malformed_bytes_raise_malformed_event(raw: bytes) -> None:
    if raw == b"<truncated>":
        valid = codec.encode(_valid())
        raw = valid[: len(valid) - 5]
    with pytest.raises(MalformedEvent):
        codec.decode(raw)


def test_encode_refuses_an_invalid_envelope() -> None:
    envelope = _valid()
    envelope.subject = ""
    with pytest.raises(MalformedEvent):
        codec.encode(envelope)


def test_unknown_event_type_raises_unknown_event_type() -> None:
    raw = _corrupt(lambda e: setattr(e, "type", "ehr.consent.teleported.v1"))
    with pytest.raises(UnknownEventType):
        codec.decode(raw)
    newer = _corrupt(lambda e: setattr(e, "type", "ehr.consent.granted.v2"))
    with pytest.raises(UnknownEventType):
        codec.decode(newer)


def test_a_message_that_is_no_event_payload_is_refused() -> None:
    with pytest.raises(UnknownEventType):
        codec.new_envelope(consent_pb2.GrantScope(grantee_id="x"), source="consent", actor=PROVIDER)


def test_errors_share_one_root() -> None:
    for error in (MalformedEvent, UnknownEventType, WrongPayloadType):
        assert issubclass(error, EventError)


def test_typed_payload_access_refuses_the_wrong_class() -> None:
    envelope = codec.decode(codec.encode(granted_envelope()))
    assert codec.payload(envelope, consent_pb2.ConsentGranted).scope.grantee_id == "acct-provider-1"
    with pytest.raises(WrongPayloadType):
        codec.payload(envelope, access_pb2.RecordRead)


def test_subject_follows_the_key_rule() -> None:
    anomaly = audit_pb2.AnomalyDetected(anomaly_id="a-1", rule="failed_login_burst")
    with pytest.raises(MalformedEvent):
        codec.new_envelope(anomaly, source="audit-analytics", actor=PROVIDER)
    anomaly.account_id = "acct-9"
    assert codec.new_envelope(anomaly, source="audit-analytics", actor=PROVIDER).subject == "acct-9"
    anomaly.patient_id = "pat-3"
    assert codec.new_envelope(anomaly, source="audit-analytics", actor=PROVIDER).subject == "pat-3"


def test_hash_is_sha256_of_the_exact_bytes() -> None:
    raw = codec.encode(granted_envelope())
    digest = codec.event_hash(raw)
    assert digest == hashlib.sha256(raw).digest()
    assert len(digest) == 32
    assert codec.event_hash(bytes(bytearray(raw))) == digest


def test_a_different_encoding_of_the_same_event_has_a_different_hash() -> None:
    envelope = granted_envelope()
    raw = codec.encode(envelope)

    # Protobuf accepts fields in any order: the same event, other bytes.
    payload_only = envelope_pb2.Envelope(payload=envelope.payload).SerializeToString()
    rest = envelope_pb2.Envelope()
    rest.CopyFrom(envelope)
    rest.ClearField("payload")
    reordered = payload_only + rest.SerializeToString()

    assert reordered != raw
    assert codec.decode(reordered) == codec.decode(raw)
    assert codec.event_hash(reordered) != codec.event_hash(raw)


def test_any_changed_byte_changes_the_hash() -> None:
    raw = codec.encode(granted_envelope())
    digest = codec.event_hash(raw)
    for index in range(0, len(raw), 7):
        changed = bytearray(raw)
        changed[index] ^= 0x01
        assert codec.event_hash(bytes(changed)) != digest
