"""The event types this platform knows, read from the payload messages themselves.

Every payload message in `proto/ehr/<context>/v1` declares its CloudEvents type
with the `(ehr.envelope.v1.event_type)` message option, so the `.proto` files
are the one source of truth for "which message is the payload of which type".
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType, ModuleType

from ehr.access.v1 import access_pb2
from ehr.audit.v1 import audit_pb2
from ehr.consent.v1 import consent_pb2
from ehr.envelope.v1 import options_pb2
from ehr.identity.v1 import identity_pb2
from ehr.ledger.v1 import ledger_pb2
from ehr.records.v1 import records_pb2
from google.protobuf.message import Message

from services.platform.events.errors import UnknownEventType

EVENT_TYPE_PATTERN = re.compile(
    r"^ehr\.(?P<context>[a-z]+)\.(?P<event>[a-z][a-z0-9_]*)\.v(?P<major>[1-9][0-9]*)$"
)
"""`ehr.<context>.<event>.v<major>`."""

PAYLOAD_MODULES: tuple[ModuleType, ...] = (
    identity_pb2,
    consent_pb2,
    records_pb2,
    access_pb2,
    ledger_pb2,
    audit_pb2,
)


def declared_event_type(message_class: type[Message]) -> str:
    """The `event_type` option of a message class, or "" when it is not an event payload."""
    options = message_class.DESCRIPTOR.GetOptions()
    return str(options.Extensions[options_pb2.event_type])


def _collect() -> dict[str, type[Message]]:
    found: dict[str, type[Message]] = {}
    for module in PAYLOAD_MODULES:
        for name in module.DESCRIPTOR.message_types_by_name:
            message_class: type[Message] = getattr(module, name)
            event_type = declared_event_type(message_class)
            if not event_type:
                continue
            if not EVENT_TYPE_PATTERN.match(event_type):
                raise RuntimeError(f"{name}: event type {event_type!r} is not well formed")
            if event_type in found:
                raise RuntimeError(f"event type {event_type!r} is declared twice")
            found[event_type] = message_class
    return found


PAYLOAD_BY_EVENT_TYPE: Mapping[str, type[Message]] = MappingProxyType(_collect())
"""Event type -> payload message class."""

EVENT_TYPES: tuple[str, ...] = tuple(sorted(PAYLOAD_BY_EVENT_TYPE))

_EVENT_TYPE_BY_FULL_NAME = {
    cls.DESCRIPTOR.full_name: event_type for event_type, cls in PAYLOAD_BY_EVENT_TYPE.items()
}


def payload_class(event_type: str) -> type[Message]:
    """The payload message class of an event type."""
    try:
        return PAYLOAD_BY_EVENT_TYPE[event_type]
    except KeyError:
        raise UnknownEventType(event_type) from None


def event_type_of(payload: Message | type[Message]) -> str:
    """The event type whose payload is this message (or message class)."""
    full_name = payload.DESCRIPTOR.full_name
    try:
        return _EVENT_TYPE_BY_FULL_NAME[full_name]
    except KeyError:
        raise UnknownEventType(f"{full_name} is not an event payload") from None
