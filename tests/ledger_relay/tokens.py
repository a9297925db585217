"""Access tokens for the relay's API tests: an ES256 key made at run time, a static JWKS."""

from __future__ import annotations

import base64
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jose import jwt

ISSUER = "ehr-identity-test"
AUDIENCE = "ledger-relay"


def _b64url(number: int) -> str:
    return base64.urlsafe_b64encode(number.to_bytes(32, "big")).rstrip(b"=").decode()


@dataclass
class TokenKey:
    kid: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )

    def jwks(self) -> dict[str, Any]:
        n = self.key.public_key().public_numbers()
        jwk = {"kty": "EC", "crv": "P-256", "x": _b64url(n.x), "y": _b64url(n.y)}
        return {"keys": [{**jwk, "kid": self.kid, "alg": "ES256", "use": "sig"}]}

    def jwt_settings(self) -> dict[str, Any]:
        return {"issuer": ISSUER, "audience": AUDIENCE, "jwks": self.jwks()}

    def token(self, role: str, **overrides: Any) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": f"{role}-{uuid.uuid4().hex[:8]}",
            "role": role,
            "iat": now,
            "exp": now + 600,
            "jti": uuid.uuid4().hex,
        }
        claims.update(overrides)
        pem = self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        return str(jwt.encode(claims, pem, algorithm="ES256", headers={"kid": self.kid}))

    def headers(self, role: str, **overrides: Any) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(role, **overrides)}"}
