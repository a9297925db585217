"""Settings every service shares, read from ``EHR_``-prefixed environment variables.

A service subclasses :class:`ServiceSettings` with its own fields, builds it once in its
composition root (``main.py``) and passes it down; nothing reads the environment anywhere
else. Nested fields use ``__``: ``EHR_JWT__AUDIENCE=consent``.

What every service needs from its surroundings has one name in every service, in the
devstack and in the chart: ``EHR_DATA_DIR``, ``EHR_DATABASE_URL``,
``EHR_KAFKA_BOOTSTRAP_SERVERS``, ``EHR_CHAIN_RPC_URLS``, ``EHR_CHAIN_ID``,
``EHR_CHAIN_KEY_FILE`` / ``EHR_CHAIN_PRIVATE_KEY`` and ``EHR_LOG_LEVEL``. A service
declares in ``deployed_requires`` which of them its process cannot run without
(``services.platform.app.runtime.run_service`` refuses to start without them): only the
embedded default composes the in-process chain, the embedded log and SQLite.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]

#: The metrics port of a service whose ``EHR_METRICS_PORT`` is not set: its API port
#: plus this.
METRICS_PORT_OFFSET = 1000


class JwtSettings(BaseModel):
    """How a service verifies the access tokens the identity service issues."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    issuer: str = Field(min_length=1, description="expected `iss` claim")
    audience: str = Field(min_length=1, description="this service's `aud` value")
    jwks_url: HttpUrl | None = Field(
        default=None, description="identity's JWKS endpoint (deployed mode)"
    )
    jwks: dict[str, Any] | None = Field(
        default=None, description="a static JWKS document (embedded mode, tests)"
    )
    clock_skew_seconds: int = Field(default=30, ge=0, le=300)
    jwks_cache_seconds: float = Field(
        default=300.0, gt=0, description="refetch the JWKS after this long"
    )
    jwks_min_refresh_seconds: float = Field(
        default=10.0, ge=0, description="least time between two fetches for an unknown kid"
    )
    jwks_fetch_timeout_seconds: float = Field(default=3.0, gt=0)

    @model_validator(mode="after")
    def _one_key_source(self) -> Self:
        if (self.jwks_url is None) == (self.jwks is None):
            raise ValueError("set exactly one of jwt.jwks_url and jwt.jwks")
        return self


class ServiceSettings(BaseSettings):
    """Base settings of every service; subclass it and add the service's own fields."""

    model_config = SettingsConfigDict(
        env_prefix="EHR_", env_nested_delimiter="__", extra="ignore", frozen=True
    )

    service_name: str = Field(min_length=1, pattern=r"^[a-z][a-z0-9-]*$")
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    metrics_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="/metrics on this port of the same host, never on the API port "
        f"(default: port + {METRICS_PORT_OFFSET}; 0: any free port)",
    )
    log_level: LogLevel = "INFO"
    max_body_bytes: int = Field(default=1_048_576, gt=0)
    body_timeout_seconds: float = Field(
        default=30.0, gt=0, description="a request body must arrive within this time (408)"
    )
    max_json_depth: int = Field(default=32, ge=2, le=256, description="JSON nesting bound")
    max_json_items: int = Field(default=10_000, ge=1, description="values in one JSON body")
    readiness_timeout_seconds: float = Field(default=2.0, gt=0)
    jwt: JwtSettings

    # What every service needs from its surroundings (the same names everywhere).
    data_dir: Path = Field(
        default=Path(".run/service"), description="keys and the embedded state of this service"
    )
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL (postgresql+psycopg://...); embedded: SQLite"
    )
    kafka_bootstrap_servers: str | None = Field(
        default=None, description="Kafka brokers (host:port,...); embedded: the embedded log"
    )
    chain_rpc_urls: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Geth JSON-RPC URLs, failover in order (a JSON list or comma-separated)",
    )
    chain_id: int | None = Field(default=None, ge=1, description="with chain_rpc_urls")
    chain_key_file: Path | None = Field(
        default=None, description="file with the hex key of the account that pays the gas"
    )
    chain_private_key: SecretStr | None = Field(
        default=None, description="that key itself (a secret from the environment)"
    )

    #: The settings this service's own process cannot start without (field names).
    #: ``chain_key`` stands for ``chain_key_file`` or ``chain_private_key``.
    deployed_requires: ClassVar[tuple[str, ...]] = (
        "database_url",
        "kafka_bootstrap_servers",
        "chain_rpc_urls",
        "chain_id",
    )

    @model_validator(mode="after")
    def _metrics_port_apart(self) -> Self:
        """The metrics port is the scraper's only: sharing the API port (which a gateway
        routes to) would make it public again."""
        metrics = self.metrics_port_or_default
        if not 0 <= metrics <= 65535:
            raise ValueError(f"port + {METRICS_PORT_OFFSET} is no port: set metrics_port")
        if metrics and metrics == self.port:
            raise ValueError("metrics_port must differ from port")
        return self

    @property
    def metrics_port_or_default(self) -> int:
        """The port ``/metrics`` is served on (``metrics_port``, else ``port`` +
        ``METRICS_PORT_OFFSET``; 0 when the API port is 0: any free port)."""
        if self.metrics_port is not None:
            return self.metrics_port
        return self.port + METRICS_PORT_OFFSET if self.port else 0

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_case_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("chain_rpc_urls", mode="before")
    @classmethod
    def _url_list(cls, value: object) -> object:
        """``["http://a", "http://b"]`` (JSON) or ``http://a,http://b`` from the environment."""
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    def missing_for_service(self) -> list[str]:
        """The environment variables of ``deployed_requires`` that are not set."""
        missing = []
        for name in self.deployed_requires:
            if name == "chain_key":
                present = self.chain_key_file is not None or self.chain_private_key is not None
                label = "EHR_CHAIN_KEY_FILE (or EHR_CHAIN_PRIVATE_KEY)"
            else:
                present = bool(getattr(self, name))
                label = env_name(name)
            if not present:
                missing.append(label)
        return missing


def env_name(field: str) -> str:
    """The variable of a settings field path: ``jwt.audience`` -> ``EHR_JWT__AUDIENCE``."""
    return "EHR_" + "__".join(field.split(".")).upper()
