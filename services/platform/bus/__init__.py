"""The event bus port, its Kafka and embedded adapters, the outbox and the consumer runner."""

from .errors import (
    BusClosedError,
    BusError,
    CommitError,
    HandlerFailedError,
    LogCorruptedError,
    PublishError,
    TopicConflictError,
    TransientHandlerError,
    UnknownTopicError,
)
from .port import (
    BusConsumer,
    EventBus,
    Headers,
    Message,
    Position,
    Record,
    TopicSpec,
    next_offsets,
    partition_for_key,
)

__all__ = [
    "BusClosedError",
    "BusConsumer",
    "BusError",
    "CommitError",
    "EventBus",
    "HandlerFailedError",
    "Headers",
    "LogCorruptedError",
    "Message",
    "Position",
    "PublishError",
    "Record",
    "TopicConflictError",
    "TopicSpec",
    "TransientHandlerError",
    "UnknownTopicError",
    "next_offsets",
    "partition_for_key",
]
