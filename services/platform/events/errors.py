"""Errors of the event envelope codec and catalogue."""


class EventError(Exception):
    """Root of every error raised by `services.platform.events`."""


class MalformedEvent(EventError):
    """Bytes or an envelope that are not a valid event."""


class UnknownEventType(EventError):
    """An event type that this catalogue does not know."""


class WrongPayloadType(EventError):
    """The payload was asked for as a message class it is not."""


class GeneratedCodeError(EventError):
    """Code generation failed, or generated code drifted from `proto/`."""
