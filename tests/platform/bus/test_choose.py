"""Which bus adapter a service gets from its settings."""

from __future__ import annotations

from pathlib import Path

from services.platform.bus.choose import kafka_or_embedded
from services.platform.bus.embedded import EmbeddedEventBus
from services.platform.bus.kafka import KafkaEventBus


def test_bootstrap_servers_select_kafka(tmp_path: Path) -> None:
    bus = kafka_or_embedded("127.0.0.1:19092", tmp_path)
    assert isinstance(bus, KafkaEventBus)
    assert bus.bootstrap_servers == "127.0.0.1:19092"


def test_no_bootstrap_servers_select_the_embedded_log_under_the_data_dir(tmp_path: Path) -> None:
    for unset in (None, ""):
        bus = kafka_or_embedded(unset, tmp_path)
        assert isinstance(bus, EmbeddedEventBus)
        assert bus.data_dir == tmp_path / "bus"
