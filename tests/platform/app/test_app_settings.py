"""Service settings: read from EHR_ environment variables, validated, frozen."""

from __future__ import annotations

import json
import os

import pytest
from pydantic import ValidationError

from services.platform.app.settings import JwtSettings, ServiceSettings


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("EHR_") and not name.startswith("EHR_TEST_STACK__"):
            monkeypatch.delenv(name)


def _jwt_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EHR_JWT__ISSUER", "ehr-identity")
    monkeypatch.setenv("EHR_JWT__AUDIENCE", "consent")
    monkeypatch.setenv("EHR_JWT__JWKS_URL", "http://127.0.0.1:8001/.well-known/jwks.json")


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    _jwt_env(monkeypatch)
    monkeypatch.setenv("EHR_SERVICE_NAME", "consent")
    monkeypatch.setenv("EHR_PORT", "8102")
    monkeypatch.setenv("EHR_LOG_LEVEL", "debug")
    monkeypatch.setenv("EHR_MAX_BODY_BYTES", "2048")
    monkeypatch.setenv("EHR_JWT__CLOCK_SKEW_SECONDS", "5")
    settings = ServiceSettings()  # type: ignore[call-arg]
    assert settings.service_name == "consent"
    assert settings.host == "127.0.0.1"
    assert settings.port == 8102
    assert settings.log_level == "DEBUG"
    assert settings.max_body_bytes == 2048
    assert settings.jwt.audience == "consent"
    assert settings.jwt.issuer == "ehr-identity"
    assert str(settings.jwt.jwks_url) == "http://127.0.0.1:8001/.well-known/jwks.json"
    assert settings.jwt.jwks is None
    assert settings.jwt.clock_skew_seconds == 5


def test_static_jwks_from_json(monkeypatch: pytest.MonkeyPatch) -> None:
    document = {"keys": [{"kty": "EC", "crv": "P-256", "x": "a", "y": "b", "kid": "k1"}]}
    monkeypatch.setenv("EHR_SERVICE_NAME", "records")
    monkeypatch.setenv("EHR_JWT__ISSUER", "ehr-identity")
    monkeypatch.setenv("EHR_JWT__AUDIENCE", "records")
    monkeypatch.setenv("EHR_JWT__JWKS", json.dumps(document))
    settings = ServiceSettings()  # type: ignore[call-arg]
    assert settings.jwt.jwks == document
    assert settings.jwt.jwks_url is None


def test_jwt_settings_are_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EHR_SERVICE_NAME", "consent")
    with pytest.raises(ValidationError, match="jwt"):
        ServiceSettings()  # type: ignore[call-arg]


def test_service_name_is_required(monkeypatch: pytest.MonkeyPatch) -> None:
    _jwt_env(monkeypatch)
    with pytest.raises(ValidationError, match="service_name"):
        ServiceSettings()  # type: ignore[call-arg]


@pytest.mark.parametrize(
    "sources",
    [{}, {"jwks_url": "http://127.0.0.1:1/jwks", "jwks": {"keys": []}}],
    ids=["neither", "both"],
)
def test_exactly_one_key_source(sources: dict[str, object]) -> None:
    with pytest.raises(ValidationError, match="exactly one"):
        JwtSettings(issuer="i", audience="a", **sources)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("EHR_PORT", "70000"),
        ("EHR_LOG_LEVEL", "chatty"),
        ("EHR_MAX_BODY_BYTES", "0"),
        ("EHR_SERVICE_NAME", "Bad Name"),
        ("EHR_JWT__CLOCK_SKEW_SECONDS", "3600"),
    ],
)
def test_invalid_values_are_refused(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    _jwt_env(monkeypatch)
    monkeypatch.setenv("EHR_SERVICE_NAME", "consent")
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        ServiceSettings()  # type: ignore[call-arg]


def test_settings_are_frozen(monkeypatch: pytest.MonkeyPatch) -> None:
    _jwt_env(monkeypatch)
    monkeypatch.setenv("EHR_SERVICE_NAME", "consent")
    settings = ServiceSettings()  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        settings.port = 1  # type: ignore[misc]
    with pytest.raises(ValidationError):
        settings.jwt.audience = "records"  # type: ignore[misc]


def test_a_service_adds_its_own_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    class ConsentSettings(ServiceSettings):
        service_name: str = "consent"
        database_url: str

    _jwt_env(monkeypatch)
    monkeypatch.setenv("EHR_DATABASE_URL", "sqlite:///consent.db")
    settings = ConsentSettings()  # type: ignore[call-arg]
    assert (settings.service_name, settings.database_url) == ("consent", "sqlite:///consent.db")
