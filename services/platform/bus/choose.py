"""Which adapter a service's bus is: Kafka when bootstrap servers are configured, else
the embedded log under the service's data directory (the one-process default)."""

from __future__ import annotations

from pathlib import Path

from .embedded import EmbeddedEventBus
from .kafka import KafkaEventBus
from .port import EventBus


def kafka_or_embedded(bootstrap_servers: str | None, data_dir: Path) -> EventBus:
    """``KafkaEventBus(bootstrap_servers)`` if set, else ``EmbeddedEventBus(data_dir / "bus")``."""
    if bootstrap_servers:
        return KafkaEventBus(bootstrap_servers)
    return EmbeddedEventBus(data_dir / "bus")
