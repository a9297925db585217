"""Structured JSON logs: one JSON object a line, with service name and request id.

Logging is process-wide, so the composition root calls :func:`configure_logging` once.
The app factory binds ``service`` and ``request_id`` to every log line written while a
request is handled, so services embedded in one process still log their own name.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog
from structlog.typing import EventDict, WrappedLogger

_LEVELS = {
    "DEBUG": logging.DEBUG,
    "INFO": logging.INFO,
    "WARNING": logging.WARNING,
    "ERROR": logging.ERROR,
}


def _default_service(service_name: str) -> structlog.typing.Processor:
    def add_service(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
        event_dict.setdefault("service", service_name)
        return event_dict

    return add_service


def configure_logging(service_name: str, level: str = "INFO", stream: TextIO | None = None) -> None:
    """Send structlog's output as JSON lines to ``stream`` (stdout by default)."""
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            _default_service(service_name),
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.dict_tracebacks,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level.upper()]),
        logger_factory=structlog.WriteLoggerFactory(file=stream or sys.stdout),
        cache_logger_on_first_use=False,
    )
