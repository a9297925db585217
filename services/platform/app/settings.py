"""Settings every service shares, read from ``EHR_``-prefixed environment variables.

A service subclasses :class:`ServiceSettings` with its own fields, builds it once in its
composition root (``main.py``) and passes it down; nothing reads the environment anywhere
else. Nested fields use ``__``: ``EHR_JWT__AUDIENCE=consent``.
"""

from __future__ import annotations

from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]


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
    log_level: LogLevel = "INFO"
    max_body_bytes: int = Field(default=1_048_576, gt=0)
    body_timeout_seconds: float = Field(
        default=30.0, gt=0, description="a request body must arrive within this time (408)"
    )
    max_json_depth: int = Field(default=32, ge=2, le=256, description="JSON nesting bound")
    max_json_items: int = Field(default=10_000, ge=1, description="values in one JSON body")
    readiness_timeout_seconds: float = Field(default=2.0, gt=0)
    jwt: JwtSettings

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_case_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value
