"""ES256 signing keys of identity's access tokens, with rotation without downtime.

Keys live as PEM files (mode 0600) in a folder of the data dir, generated at run
time. ``active`` names the key new tokens are signed with. Rotation: ``rotate()``
adds a new key, publishes it in the JWKS and makes it active; tokens signed with
the previous key stay valid because that key stays in the JWKS until
``retire(kid)`` (call it after the longest token lifetime has passed).
"""

from __future__ import annotations

import base64
import json
import os
import threading
from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import uuid6
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)
from jose import jwt

from services.identity.domain.model import IssuedToken
from services.identity.domain.ports import TokenIssuer


def _b64(value: int) -> str:
    return base64.urlsafe_b64encode(value.to_bytes(32, "big")).rstrip(b"=").decode()


class SigningKeyRing:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._lock = threading.Lock()
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._keys: dict[str, ec.EllipticCurvePrivateKey] = {}
        for path in sorted(folder.glob("*.pem")):
            key = load_pem_private_key(path.read_bytes(), password=None)
            if isinstance(key, ec.EllipticCurvePrivateKey):
                self._keys[path.stem] = key
        state = folder / "active.json"
        self._active = json.loads(state.read_text())["kid"] if state.is_file() else None
        if self._active not in self._keys:
            self.rotate()

    @property
    def active_kid(self) -> str:
        assert self._active is not None
        return str(self._active)

    def kids(self) -> list[str]:
        return sorted(self._keys)

    def rotate(self) -> str:
        """A new key becomes active; the old ones stay published."""
        with self._lock:
            kid = str(uuid6.uuid7())
            key = ec.generate_private_key(ec.SECP256R1())
            path = self.folder / f"{kid}.pem"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
            self._keys[kid] = key
            self._active = kid
            (self.folder / "active.json").write_text(json.dumps({"kid": kid}))
            return kid

    def retire(self, kid: str) -> None:
        """Withdraw a key from the JWKS (tokens it signed stop verifying)."""
        with self._lock:
            if kid == self._active:
                raise ValueError("the active key cannot be retired; rotate first")
            if kid not in self._keys:
                raise KeyError(kid)
            del self._keys[kid]
            (self.folder / f"{kid}.pem").unlink(missing_ok=True)

    def jwks(self) -> dict[str, Any]:
        keys = []
        for kid, key in sorted(self._keys.items()):
            numbers = key.public_key().public_numbers()
            keys.append(
                {
                    "kty": "EC",
                    "crv": "P-256",
                    "x": _b64(numbers.x),
                    "y": _b64(numbers.y),
                    "kid": kid,
                    "alg": "ES256",
                    "use": "sig",
                }
            )
        return {"keys": keys}

    async def fetch(self) -> Mapping[str, Any]:
        """``JwksSource`` for identity's own token verifier (no HTTP round trip)."""
        return self.jwks()

    def sign(self, claims: Mapping[str, Any]) -> str:
        with self._lock:
            kid = self.active_kid
            pem = self._keys[kid].private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
        return str(jwt.encode(dict(claims), pem.decode(), algorithm="ES256", headers={"kid": kid}))


class JwtTokenIssuer(TokenIssuer):
    def __init__(self, keys: SigningKeyRing, issuer: str, ttl: timedelta) -> None:
        self.keys = keys
        self.issuer = issuer
        self.ttl = ttl

    def issue(
        self, *, subject: str, role: str, audience: str, session_id: str, now: datetime
    ) -> IssuedToken:
        token_id = str(uuid6.uuid7())
        expires = now + self.ttl
        token = self.keys.sign(
            {
                "iss": self.issuer,
                "aud": audience,
                "sub": subject,
                "role": role,
                "sid": session_id,
                "jti": token_id,
                "iat": int(now.timestamp()),
                "exp": int(expires.timestamp()),
            }
        )
        return IssuedToken(
            token, token_id, audience, datetime.fromtimestamp(int(expires.timestamp()), now.tzinfo)
        )
