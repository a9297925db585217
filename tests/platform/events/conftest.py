"""Fixtures for the event envelope tests: fully populated sample payloads."""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from services.platform.events.catalogue import payload_class


def populate(message: Message, seed: str = "x") -> Message:
    """Set every field of `message` (recursively) to a distinct non-default value."""
    for field in message.DESCRIPTOR.fields:
        values = [
            _value(cast(FieldDescriptor, field), f"{seed}-{field.name}-{i}") for i in range(2)
        ]
        if field.is_repeated:
            container = getattr(message, field.name)
            for value in values:
                if field.type == FieldDescriptor.TYPE_MESSAGE:
                    container.add().CopyFrom(value)
                else:
                    container.append(value)
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            getattr(message, field.name).CopyFrom(values[0])
        else:
            setattr(message, field.name, values[0])
    return message


def _value(field: FieldDescriptor, text: str) -> object:
    kind = field.type
    if kind == FieldDescriptor.TYPE_STRING:
        return text
    if kind == FieldDescriptor.TYPE_BYTES:
        return text.encode()
    if kind == FieldDescriptor.TYPE_BOOL:
        return True
    if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return 0.5
    if kind == FieldDescriptor.TYPE_ENUM:
        assert field.enum_type is not None
        return field.enum_type.values[-1].number
    if kind == FieldDescriptor.TYPE_MESSAGE:
        assert field.message_type is not None
        sub = message_factory.GetMessageClass(field.message_type)()
        if isinstance(sub, Timestamp):
            sub.FromSeconds(1_790_000_000 + len(text))
            return sub
        return populate(sub, text)
    return 7 + len(text)  # integers


@pytest.fixture
def sample_payload() -> Callable[[str], Message]:
    """Build a fully populated payload for an event type."""

    def build(event_type: str) -> Message:
        return populate(payload_class(event_type)(), event_type.split(".")[2])

    return build
