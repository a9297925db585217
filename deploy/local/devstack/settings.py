"""Settings of the local real stack, read once from the environment.

Every field can be set with an environment variable: the prefix is
``EHR_STACK__`` and nested fields use ``__``, e.g. ``EHR_STACK__KAFKA__PORT=9092``
or ``EHR_STACK__GETH__SEALERS=1``.
"""

from __future__ import annotations

import ipaddress
import shutil
import sys
from pathlib import Path

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parents[3]
CACHE_DIR = PROJECT_ROOT / ".cache"


class KafkaSettings(BaseModel):
    """One combined KRaft broker/controller."""

    port: int = Field(19092, description="PLAINTEXT listener (clients)")
    controller_port: int = Field(19093, description="KRaft controller listener")
    heap_mb: int = Field(512, ge=256, le=512, description="JVM heap, at most 512 MiB")
    libs_dir: Path = Field(CACHE_DIR / "kafka" / "libs", description="broker classpath")
    java: str = Field("java", description="java executable")


class GethSettings(BaseModel):
    """A private Clique proof-of-authority network of ``sealers`` nodes.

    Node ``i`` (0-based) uses ``<base>_port + i`` for each of its ports.
    """

    sealers: int = Field(3, ge=1, le=9)
    chain_id: int = Field(4242, ge=1)
    period: int = Field(1, ge=0, description="Clique block period in seconds (0: seal on demand)")
    epoch: int = Field(30000, ge=1)
    gas_limit: int = Field(30_000_000, description="block gas limit (0x1c9c380)")
    p2p_port: int = 30311
    http_port: int = 18545
    authrpc_port: int = 18651
    metrics_port: int = 16061
    cache_mb: int = Field(128, ge=16, description="geth --cache per node")
    binary: Path = Field(CACHE_DIR / "bin" / "geth", description="geth v1.13.15 executable")


class PostgresSettings(BaseModel):
    """A throwaway PostgreSQL cluster with its own data directory."""

    port: int = 15432
    user: str = "ehr"
    database: str = "ehr"
    bin_dir: Path | None = Field(
        None, description="folder with initdb/pg_ctl; found under /usr/lib/postgresql when unset"
    )
    os_user: str = Field(
        "postgres", description="system user that runs the server when started as root"
    )


class ServicesSettings(BaseModel):
    """The five services, each its own process (``python -m services.<name>.main``).

    Service ``i`` in start order (identity, consent, ledger-relay, record-store,
    audit-analytics) listens on ``base_port + i``.
    """

    base_port: int = Field(18100, ge=1024, le=65530)
    python: Path = Field(Path(sys.executable), description="interpreter with the project installed")
    log_level: str = "INFO"
    funding_wei: int = Field(10**21, gt=0, description="given to each service account once")


def _nginx() -> Path:
    found = shutil.which("nginx") or "/usr/sbin/nginx"
    return Path(found)


class GatewaySettings(BaseModel):
    """nginx in front of the services: /identity, /consent, /records, /ledger, /audit."""

    port: int = Field(18080, ge=1024, le=65535)
    binary: Path = Field(default_factory=_nginx, description="nginx from Debian's packages")
    os_user: str = Field(
        "www-data", description="system user nginx runs as when the stack is started by root"
    )


def _prometheus() -> Path:
    return Path(shutil.which("prometheus") or "/usr/bin/prometheus")


class PrometheusSettings(BaseModel):
    """Prometheus scraping the services' /metrics and the Geth sealers' metrics."""

    port: int = Field(19090, ge=1024, le=65535)
    binary: Path = Field(default_factory=_prometheus, description="prometheus (Debian)")
    scrape_interval_s: int = Field(5, ge=1, le=60)
    retention: str = Field("2d", description="--storage.tsdb.retention.time")


ALL_COMPONENTS = ("postgres", "kafka", "geth", "services", "gateway", "prometheus")


class StackSettings(BaseSettings):
    """Where the stack keeps its state and which loopback ports it uses."""

    model_config = SettingsConfigDict(
        env_prefix="EHR_STACK__", env_nested_delimiter="__", extra="ignore"
    )

    run_dir: Path = Field(PROJECT_ROOT / ".run" / "stack", description="state, pid files, logs")
    host: str = Field("127.0.0.1", description="every server binds here; must be loopback")
    start_timeout_s: float = Field(120.0, gt=0)
    stop_timeout_s: float = Field(30.0, gt=0)
    kafka: KafkaSettings = KafkaSettings()
    geth: GethSettings = GethSettings()
    postgres: PostgresSettings = PostgresSettings()
    services: ServicesSettings = ServicesSettings()
    gateway: GatewaySettings = GatewaySettings()
    prometheus: PrometheusSettings = PrometheusSettings()
    components: list[str] = Field(
        default_factory=lambda: list(ALL_COMPONENTS),
        description="what `up` and `status` act on when no component is named "
        '(e.g. EHR_STACK__COMPONENTS=\'["postgres","kafka","geth"]\')',
    )

    @field_validator("components")
    @classmethod
    def _known_components(cls, value: list[str]) -> list[str]:
        unknown = [name for name in value if name not in ALL_COMPONENTS]
        if unknown:
            raise ValueError(f"unknown component(s) {unknown}; choose from {ALL_COMPONENTS}")
        return value

    @field_validator("host")
    @classmethod
    def _loopback_only(cls, value: str) -> str:
        if not ipaddress.ip_address(value).is_loopback:
            raise ValueError(f"host must be a loopback address, got {value}")
        return value

    @property
    def logs_dir(self) -> Path:
        return self.run_dir / "logs"
