"""The event envelope codec: build, encode, decode and hash events.

An event is an `ehr.envelope.v1.Envelope` whose `payload` is a
`google.protobuf.Any` holding the typed payload message. The bytes returned by
`encode` are the event: publish them as they are, and hash them with
`event_hash`. Never hash a re-encoding: protobuf does not promise one encoding
per message, so only the published bytes identify an event.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time as clock
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import TypeVar

import uuid6
from ehr.envelope.v1 import envelope_pb2
from ehr_protocol.verify import event_hash
from google.protobuf.message import DecodeError, Message

from services.platform.events.catalogue import (
    EVENT_TYPE_PATTERN,
    event_type_of,
    payload_class,
)
from services.platform.events.errors import MalformedEvent, UnknownEventType, WrongPayloadType
from services.platform.events.topics import Topic, subject_of, topic_for

Envelope = envelope_pb2.Envelope
EnvelopeId = envelope_pb2.EnvelopeId
Actor = envelope_pb2.Actor
P = TypeVar("P", bound=Message)

SPEC_VERSION = "1.0"
TYPE_URL_PREFIX = "type.googleapis.com/"


class EventIdGenerator:
    """UUIDv7 ids (RFC 9562) that sort by creation time and stay close to the clock.

    The 48-bit millisecond timestamp is extended with 12 bits of sub-millisecond
    precision (RFC 9562 section 6.2, method 3); an id created in the same tick as
    the previous one takes the next tick, so ids from one process are strictly
    increasing. The embedded time runs ahead of the clock only beyond 4,096 ids
    per millisecond. (`uuid6.uuid7()` instead adds 1 ms per id within a
    millisecond, which drifts by seconds under a burst of events.)
    """

    def __init__(self, clock_ns: Callable[[], int] = clock.time_ns) -> None:
        self._clock_ns = clock_ns
        self._lock = threading.Lock()
        self._last_tick = 0

    def new(self) -> str:
        millis, rest = divmod(self._clock_ns(), 1_000_000)
        tick = (millis << 12) | (rest * 4096 // 1_000_000)
        with self._lock:
            tick = max(tick, self._last_tick + 1)
            self._last_tick = tick
        value = ((tick >> 12) << 80) | ((tick & 0xFFF) << 64) | secrets.randbits(62)
        return str(uuid6.UUID(int=value, version=7))


_EVENT_IDS = EventIdGenerator()


def new_event_id() -> str:
    """A fresh UUIDv7 in canonical text form (sorts by creation time)."""
    return _EVENT_IDS.new()


def new_envelope(
    payload: Message,
    *,
    source: str,
    actor: Actor,
    correlation_id: str | None = None,
    causation_id: str = "",
    event_id: str | None = None,
    time: datetime | None = None,
) -> Envelope:
    """Wrap a payload: type from the payload's message, subject from the key rule.

    `correlation_id` defaults to the new event's own id (the start of a workflow);
    `time` defaults to now and must be timezone-aware.
    """
    event_id = event_id or new_event_id()
    time = time or datetime.now(UTC)
    if time.tzinfo is None:
        raise MalformedEvent("event time must be timezone-aware")
    envelope = Envelope(
        spec_version=SPEC_VERSION,
        id=event_id,
        source=source,
        type=event_type_of(payload),
        subject=subject_of(payload),
        actor=actor,
        correlation_id=correlation_id or event_id,
        causation_id=causation_id,
    )
    envelope.time.FromDatetime(time.astimezone(UTC))
    envelope.payload.Pack(payload, deterministic=True)
    validate(envelope)
    return envelope


def encode(envelope: Envelope) -> bytes:
    """The bytes to publish (validated first)."""
    validate(envelope)
    return envelope.SerializeToString(deterministic=True)


def decode(raw: bytes) -> Envelope:
    """Parse and validate published bytes.

    Raises `MalformedEvent` for bytes that are not a valid envelope and
    `UnknownEventType` for a well-formed envelope of a type this code does not know.
    """
    envelope = Envelope()
    try:
        envelope.ParseFromString(raw)
    except (DecodeError, RuntimeError, ValueError) as error:
        raise MalformedEvent(f"not an event envelope: {error}") from error
    validate(envelope)
    return envelope


def validate(envelope: Envelope) -> None:
    """Check every envelope rule; raise `MalformedEvent` or `UnknownEventType`."""
    if envelope.spec_version != SPEC_VERSION:
        raise MalformedEvent(
            f"spec_version must be {SPEC_VERSION!r}, got {envelope.spec_version!r}"
        )
    _check_uuid7(envelope.id)
    if not envelope.source:
        raise MalformedEvent("source is empty")
    if not EVENT_TYPE_PATTERN.match(envelope.type):
        raise MalformedEvent(f"type {envelope.type!r} is not ehr.<context>.<event>.v<major>")
    expected_class = payload_class(envelope.type)  # UnknownEventType
    if not envelope.subject:
        raise MalformedEvent("subject is empty")
    if not envelope.HasField("time"):
        raise MalformedEvent("time is missing")
    try:
        envelope.time.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError) as error:
        raise MalformedEvent(f"time is invalid: {error}") from error
    if not envelope.HasField("actor") or not envelope.actor.id or not envelope.actor.role:
        raise MalformedEvent("actor id and role are required")
    if not envelope.correlation_id:
        raise MalformedEvent("correlation_id is empty")
    if not envelope.HasField("payload"):
        raise MalformedEvent("payload is missing")
    expected_url = TYPE_URL_PREFIX + expected_class.DESCRIPTOR.full_name
    if envelope.payload.type_url != expected_url:
        raise MalformedEvent(
            f"type {envelope.type} carries {envelope.payload.type_url!r}, expected {expected_url!r}"
        )
    payload = _unpack(envelope, expected_class)
    if subject_of(payload) != envelope.subject:
        raise MalformedEvent(
            f"subject {envelope.subject!r} differs from the payload's {subject_of(payload)!r}"
        )


def payload(envelope: Envelope, message_class: type[P]) -> P:
    """The payload as `message_class`; `WrongPayloadType` if the event is of another type."""
    if event_type_of(message_class) != envelope.type:
        raise WrongPayloadType(
            f"event of type {envelope.type} does not carry {message_class.DESCRIPTOR.full_name}"
        )
    return _unpack(envelope, message_class)


def unpack_payload(envelope: Envelope) -> Message:
    """The payload as the message class the catalogue gives for the envelope's type."""
    return _unpack(envelope, payload_class(envelope.type))


def event_time(envelope: Envelope) -> datetime:
    """The event time as an aware UTC datetime."""
    return envelope.time.ToDatetime(tzinfo=UTC)


def topic_of(envelope: Envelope) -> Topic:
    """The topic this envelope is published to."""
    return topic_for(envelope.type)


def partition_key(envelope: Envelope) -> str:
    """The partition key: the subject (patient or account id)."""
    return envelope.subject


def event_hashes(raws: Iterable[bytes]) -> list[bytes]:
    """``event_hash`` of each, in one loop (for readers that hash every event)."""
    sha256 = hashlib.sha256
    return [sha256(raw).digest() for raw in raws]


def _unpack(envelope: Envelope, message_class: type[P]) -> P:
    message = message_class()
    try:
        unpacked = envelope.payload.Unpack(message)
    except (DecodeError, RuntimeError, ValueError) as error:
        raise MalformedEvent(f"payload of {envelope.type} does not parse: {error}") from error
    if not unpacked:
        expected = message_class.DESCRIPTOR.full_name
        raise MalformedEvent(f"payload of {envelope.type} is not {expected}")
    return message


def _check_uuid7(value: str) -> None:
    try:
        parsed = uuid.UUID(value)
    except ValueError:
        raise MalformedEvent(f"id {value!r} is not a UUID") from None
    if parsed.version != 7 or parsed.variant != uuid.RFC_4122 or str(parsed) != value:
        raise MalformedEvent(f"id {value!r} is not a canonical UUIDv7")


__all__ = [
    "Actor",
    "Envelope",
    "EnvelopeId",
    "EventIdGenerator",
    "MalformedEvent",
    "UnknownEventType",
    "WrongPayloadType",
    "decode",
    "encode",
    "event_hash",
    "event_hashes",
    "event_time",
    "new_envelope",
    "new_event_id",
    "partition_key",
    "payload",
    "topic_of",
    "unpack_payload",
    "validate",
]
