"""Fixtures for the service scaffolding tests: ES256 keys, signed tokens, a JWKS server."""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jose import jwt

from services.platform.app.settings import JwtSettings, ServiceSettings

ISSUER = "ehr-identity-test"
AUDIENCE = "test-service"


def _b64url(number: int) -> str:
    return base64.urlsafe_b64encode(number.to_bytes(32, "big")).rstrip(b"=").decode()


@dataclass
class SigningKey:
    """An ES256 key pair generated for one test run."""

    kid: str
    private_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )

    @property
    def private_pem(self) -> str:
        return self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()

    @property
    def public_pem(self) -> str:
        return (
            self.private_key.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )

    @property
    def public_jwk(self) -> dict[str, str]:
        numbers = self.private_key.public_key().public_numbers()
        return {
            "kty": "EC",
            "crv": "P-256",
            "x": _b64url(numbers.x),
            "y": _b64url(numbers.y),
            "kid": self.kid,
            "alg": "ES256",
            "use": "sig",
        }

    def sign(self, claims: dict[str, Any], *, kid: str | None = None) -> str:
        return jwt.encode(
            claims, self.private_pem, algorithm="ES256", headers={"kid": kid or self.kid}
        )


def claims(
    *,
    sub: str = "account-1",
    role: str = "provider",
    audience: str = AUDIENCE,
    issuer: str = ISSUER,
    lifetime: int = 300,
    issued_offset: int = 0,
    **extra: Any,
) -> dict[str, Any]:
    """Standard claims of a token issued now (+ ``issued_offset`` seconds)."""
    now = int(time.time()) + issued_offset
    return {
        "iss": issuer,
        "aud": audience,
        "sub": sub,
        "role": role,
        "iat": now,
        "exp": now + lifetime,
        "jti": str(uuid.uuid4()),
        **extra,
    }


def jwks_of(*keys: SigningKey) -> dict[str, Any]:
    return {"keys": [key.public_jwk for key in keys]}


def make_settings(
    jwks: dict[str, Any] | None = None, jwks_url: str | None = None, **over: Any
) -> ServiceSettings:
    """Service settings for tests; the clock skew and refresh interval default to 0."""
    jwt_settings = JwtSettings(
        issuer=ISSUER,
        audience=AUDIENCE,
        jwks=jwks,
        jwks_url=jwks_url,  # type: ignore[arg-type]
        clock_skew_seconds=over.pop("clock_skew_seconds", 0),
        jwks_min_refresh_seconds=over.pop("jwks_min_refresh_seconds", 0),
    )
    return ServiceSettings(service_name="test-service", jwt=jwt_settings, **over)


class JwksServer:
    """A real HTTP server on 127.0.0.1 serving a JWKS document that tests can change."""

    def __init__(self) -> None:
        self.document: dict[str, Any] = {"keys": []}
        self.fetches = 0
        self.failing = False
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.fetches += 1
                if owner.failing or self.path != "/.well-known/jwks.json":
                    self.send_response(503 if owner.failing else 404)
                    self.end_headers()
                    return
                body = json.dumps(owner.document).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/.well-known/jwks.json"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


@pytest.fixture
def jwks_server() -> Iterator[JwksServer]:
    server = JwksServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def signing_key() -> SigningKey:
    return SigningKey(kid="key-1")


@pytest.fixture
def key_factory() -> type[SigningKey]:
    """Makes more ES256 keys: ``key_factory(kid="key-2")``."""
    return SigningKey


@pytest.fixture
def token_claims() -> Callable[..., dict[str, Any]]:
    return claims


@pytest.fixture
def jwks_document() -> Callable[..., dict[str, Any]]:
    return jwks_of


@pytest.fixture
def settings_factory() -> Callable[..., ServiceSettings]:
    return make_settings
