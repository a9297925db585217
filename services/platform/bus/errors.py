"""Errors of the event bus, the outbox and the consumer runner (root: ``BusError``)."""

from __future__ import annotations


class BusError(Exception):
    """Root of every error raised by ``services.platform.bus``."""


class BusClosedError(BusError):
    """The bus or consumer is not started, or was closed."""


class UnknownTopicError(BusError):
    """The topic does not exist; topics are created explicitly, never on first use."""


class TopicConflictError(BusError):
    """A topic exists already with a different number of partitions."""


class PublishError(BusError):
    """The broker or log did not acknowledge a record."""


class CommitError(BusError):
    """Offsets could not be committed (e.g. the partition was reassigned meanwhile)."""


class LogCorruptedError(BusError):
    """The embedded log's files are unreadable or inconsistent."""


class HandlerFailedError(BusError):
    """A consumer handler raised; its effect was rolled back and its offset not committed."""


class TransientHandlerError(BusError):
    """Raised by a handler whose dependency is unavailable for now: the runner rewinds and
    retries the record instead of quarantining it (see ``consumer.is_transient``)."""
