"""The ``ConsentCheck`` port over the consent service's HTTP ``check`` endpoint.

The record store calls it with a short-lived service token (role ``service``, audience
``consent``) signed by its own service key (``ServiceTokenSigner``); the consent service
must trust that key's JWKS entry (``GET /records/service-jwks.json``).
"""

from __future__ import annotations

import base64
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jose import jwt

from services.record_store.domain.errors import DependencyUnavailable


def _b64url(number: int) -> str:
    return base64.urlsafe_b64encode(number.to_bytes(32, "big")).rstrip(b"=").decode()


class ServiceTokenSigner:
    """Signs the record store's ES256 service tokens."""

    def __init__(
        self, private_pem: str, issuer: str, subject: str = "record-store", ttl_s: int = 120
    ) -> None:
        key = serialization.load_pem_private_key(private_pem.encode(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError("the service key must be an EC P-256 private key")
        self._key = key
        self._pem = private_pem
        self.issuer = issuer
        self.subject = subject
        self.ttl_s = ttl_s
        numbers = key.public_key().public_numbers()
        self.kid = f"record-store-{numbers.x:064x}"[:28]
        self._cache: dict[str, tuple[float, str]] = {}

    @classmethod
    def load_or_create(cls, path: Path, issuer: str) -> ServiceTokenSigner:
        """The key in ``path`` (PEM, 0600), generated there when missing."""
        if not path.is_file():
            key = ec.generate_private_key(ec.SECP256R1())
            pem = key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ).decode()
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch(mode=0o600)
            path.write_text(pem)
        return cls(path.read_text(), issuer)

    def jwks(self) -> dict[str, Any]:
        n = self._key.public_key().public_numbers()
        jwk = {"kty": "EC", "crv": "P-256", "x": _b64url(n.x), "y": _b64url(n.y)}
        return {"keys": [{**jwk, "kid": self.kid, "alg": "ES256", "use": "sig"}]}

    def token(self, audience: str) -> str:
        now = time.time()
        cached = self._cache.get(audience)
        if cached is not None and cached[0] > now + 30:
            return cached[1]
        claims = {
            "iss": self.issuer,
            "aud": audience,
            "sub": self.subject,
            "role": "service",
            "iat": int(now),
            "exp": int(now) + self.ttl_s,
            "jti": uuid.uuid4().hex,
        }
        token = str(jwt.encode(claims, self._pem, algorithm="ES256", headers={"kid": self.kid}))
        self._cache[audience] = (now + self.ttl_s, token)
        return token


class HttpConsentCheck:
    """Asks ``GET {base}/consent/check`` on every call (no caching: a revocation counts
    for every read that starts after the revoke call returned)."""

    def __init__(self, base_url: str, signer: ServiceTokenSigner, timeout_s: float = 5.0) -> None:
        self._http = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout_s)
        self._signer = signer

    def close(self) -> None:
        self._http.close()

    def is_authorised(
        self, patient_id: str, grantee_id: str, category_bit: int, purpose: int
    ) -> bool:
        params: dict[str, str | int] = {
            "patient": patient_id,
            "grantee": grantee_id,
            "category": category_bit,
            "purpose": purpose,
        }
        headers = {"Authorization": f"Bearer {self._signer.token('consent')}"}
        try:
            response = self._http.get("/consent/check", params=params, headers=headers)
        except httpx.HTTPError as exc:
            raise DependencyUnavailable(f"consent service unreachable: {exc}") from exc
        if response.status_code == 404:
            return False  # an account consent does not know holds no grant
        if response.status_code != 200:
            raise DependencyUnavailable(
                f"consent check answered {response.status_code}: {response.text[:200]}"
            )
        return bool(response.json().get("authorised"))
