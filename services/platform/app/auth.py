"""Verification of the access tokens (JWTs) the identity service issues.

Tokens are ES256-signed; every other algorithm (``none``, ``HS*``, RSA, ...) is refused
before any key is looked at. The key is chosen by the token's ``kid`` from identity's
JWKS, which is cached and fetched again when a token names an unknown ``kid`` (so identity
can rotate keys without downtime) or when the cache is older than its lifetime.

Claims a token must carry: ``iss``, ``aud`` (the service's audience), ``sub`` (the
account id), ``role``, ``exp`` and ``iat``; ``nbf`` and ``jti`` are checked/used when
present.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Protocol

import httpx
import structlog
from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from jose import jwk, jwt
from jose.backends.base import Key
from jose.exceptions import ExpiredSignatureError, JOSEError

from services.platform.app.errors import Forbidden, ServiceUnavailable, Unauthorized
from services.platform.app.settings import JwtSettings

ALGORITHM = "ES256"
ROLE_CLAIM = "role"

log = structlog.get_logger(__name__)

_BEARER_CHALLENGE = {"WWW-Authenticate": "Bearer"}


class AuthenticationFailed(Unauthorized):
    """Root of the authentication errors: the request has no acceptable token (401)."""

    def __init__(self, message: str | None = None, *, code: str | None = None) -> None:
        super().__init__(message, code=code, headers=_BEARER_CHALLENGE)


class MissingToken(AuthenticationFailed):
    """The request carries no bearer token."""

    code = "missing_token"
    default_message = "a bearer token is required"


class InvalidToken(AuthenticationFailed):
    """The token is malformed, badly signed, or its claims are not acceptable.

    The reason is logged, not returned, so a caller learns nothing about the check that
    failed.
    """

    code = "invalid_token"
    default_message = "the bearer token is not valid"


class TokenExpired(InvalidToken):
    """The token was valid once but has expired; the client should log in again."""

    code = "token_expired"
    default_message = "the bearer token has expired"


class RoleNotAllowed(Forbidden):
    """The principal's role may not use this endpoint (403)."""

    code = "role_not_allowed"
    default_message = "this role may not perform this action"


class SigningKeysUnavailable(ServiceUnavailable):
    """The identity service's keys could not be fetched, so no token can be checked (503)."""

    code = "signing_keys_unavailable"
    default_message = "token signing keys are unavailable"


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller of a request."""

    account_id: str
    role: str
    audience: str
    expires_at: datetime
    token_id: str | None = None


class JwksSource(Protocol):
    """Where the current JSON Web Key Set comes from."""

    async def fetch(self) -> Mapping[str, Any]:
        """The JWKS document (``{"keys": [...]}``); raises on failure."""
        ...


class HttpJwksSource:
    """Fetches the JWKS from the identity service over HTTP."""

    def __init__(self, url: str, timeout_seconds: float = 3.0) -> None:
        self._url = url
        self._timeout = timeout_seconds

    async def fetch(self) -> Mapping[str, Any]:
        async with httpx.AsyncClient(timeout=self._timeout) as client:
            response = await client.get(self._url, headers={"Accept": "application/json"})
            response.raise_for_status()
            document = response.json()
        if not isinstance(document, dict):
            raise ValueError("JWKS document is not a JSON object")
        return document


class StaticJwksSource:
    """A fixed JWKS (embedded mode and tests)."""

    def __init__(self, document: Mapping[str, Any]) -> None:
        self._document = document

    async def fetch(self) -> Mapping[str, Any]:
        return self._document


def jwks_source_from_settings(settings: JwtSettings) -> JwksSource:
    """The JWKS source the settings name."""
    if settings.jwks_url is not None:
        return HttpJwksSource(str(settings.jwks_url), settings.jwks_fetch_timeout_seconds)
    assert settings.jwks is not None  # the settings validator guarantees one source
    return StaticJwksSource(settings.jwks)


def _usable_keys(document: Mapping[str, Any]) -> dict[str, Key]:
    """The P-256 signing keys of a JWKS, by kid; keys for anything else are skipped."""
    keys: dict[str, Key] = {}
    entries = document.get("keys")
    if not isinstance(entries, list):
        raise ValueError("JWKS document has no 'keys' list")
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        kid = entry.get("kid")
        if (
            not isinstance(kid, str)
            or entry.get("kty") != "EC"
            or entry.get("crv") != "P-256"
            or entry.get("alg", ALGORITHM) != ALGORITHM
            or entry.get("use", "sig") != "sig"
            or "d" in entry  # a private key published by mistake is never used
        ):
            continue
        try:
            keys[kid] = jwk.construct(entry, ALGORITHM)
        except JOSEError:
            log.warning("jwks_key_skipped", kid=kid)
    return keys


class KeyCache:
    """Signing keys by kid, fetched from a :class:`JwksSource` when needed.

    The JWKS is fetched again when a kid is unknown (at most once every
    ``min_refresh_seconds``) or when the cached copy is older than ``max_age_seconds``.
    A failed refresh keeps the keys already known.
    """

    def __init__(
        self,
        source: JwksSource,
        *,
        max_age_seconds: float = 300.0,
        min_refresh_seconds: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._source = source
        self._max_age = max_age_seconds
        self._min_refresh = min_refresh_seconds
        self._clock = clock
        self._keys: dict[str, Key] = {}
        self._fetched_at: float | None = None
        self._attempted_at: float | None = None
        self._lock = asyncio.Lock()

    async def key(self, kid: str) -> Key | None:
        """The key with this kid, or None when the JWKS does not (or no longer) hold it."""
        if self._fetched_at is None:
            if not self._may_refresh():
                raise SigningKeysUnavailable()
            await self._refresh(reason="initial")
        elif (self._is_stale() or kid not in self._keys) and self._may_refresh():
            await self._refresh(reason="expired" if self._is_stale() else "unknown_kid")
        return self._keys.get(kid)

    async def load(self) -> None:
        """Fetch the JWKS now; raises :class:`SigningKeysUnavailable` if that fails."""
        async with self._lock:
            await self._fetch()

    def _is_stale(self) -> bool:
        return self._fetched_at is not None and self._clock() - self._fetched_at >= self._max_age

    def _may_refresh(self) -> bool:
        return self._attempted_at is None or self._clock() - self._attempted_at >= self._min_refresh

    async def _refresh(self, reason: str) -> None:
        attempted_before = self._attempted_at
        async with self._lock:
            if self._attempted_at != attempted_before:
                return  # another request refreshed while this one waited
            try:
                await self._fetch()
            except SigningKeysUnavailable:
                if not self._keys:
                    raise
                log.warning("jwks_refresh_failed_keeping_keys", reason=reason)

    async def _fetch(self) -> None:
        self._attempted_at = self._clock()
        try:
            keys = _usable_keys(await self._source.fetch())
        except Exception as exc:
            log.warning("jwks_fetch_failed", error=type(exc).__name__)
            raise SigningKeysUnavailable() from exc
        self._keys = keys
        self._fetched_at = self._clock()
        log.info("jwks_loaded", kids=sorted(keys))


class TokenVerifier:
    """Checks a bearer token and returns the principal it authenticates."""

    def __init__(
        self, keys: KeyCache, *, issuer: str, audience: str, clock_skew_seconds: int = 30
    ) -> None:
        self._keys = keys
        self._issuer = issuer
        self._audience = audience
        self._leeway = clock_skew_seconds

    @classmethod
    def from_settings(
        cls, settings: JwtSettings, source: JwksSource | None = None
    ) -> TokenVerifier:
        """A verifier for the settings; ``source`` replaces the one the settings name."""
        cache = KeyCache(
            source or jwks_source_from_settings(settings),
            max_age_seconds=settings.jwks_cache_seconds,
            min_refresh_seconds=settings.jwks_min_refresh_seconds,
        )
        return cls(
            cache,
            issuer=settings.issuer,
            audience=settings.audience,
            clock_skew_seconds=settings.clock_skew_seconds,
        )

    @property
    def keys(self) -> KeyCache:
        """The verifier's key cache (e.g. to load it in a readiness check)."""
        return self._keys

    async def verify(self, token: str) -> Principal:
        """The principal of a valid token; raises an :class:`AuthenticationFailed` otherwise."""
        try:
            header = jwt.get_unverified_header(token)
        except JOSEError as exc:
            raise self._reject("malformed") from exc
        if header.get("alg") != ALGORITHM:
            raise self._reject("algorithm_refused", alg=str(header.get("alg")))
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise self._reject("missing_kid")
        key = await self._keys.key(kid)
        if key is None:
            raise self._reject("unknown_kid", kid=kid)
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=self._audience,
                issuer=self._issuer,
                options={
                    "require_aud": True,
                    "require_iss": True,
                    "require_exp": True,
                    "require_iat": True,
                    "require_sub": True,
                    "leeway": self._leeway,
                },
            )
        except ExpiredSignatureError as exc:
            log.info("token_rejected", reason="expired", kid=kid)
            raise TokenExpired() from exc
        except JOSEError as exc:
            raise self._reject("claims_or_signature", kid=kid, error=str(exc)) from exc
        return self._principal(claims)

    def _principal(self, claims: Mapping[str, Any]) -> Principal:
        account_id = claims.get("sub")
        role = claims.get(ROLE_CLAIM)
        expires = claims.get("exp")
        token_id = claims.get("jti")
        if not isinstance(account_id, str) or not account_id:
            raise self._reject("bad_sub")
        if not isinstance(role, str) or not role:
            raise self._reject("bad_role")
        if not isinstance(expires, int | float):
            raise self._reject("bad_exp")
        return Principal(
            account_id=account_id,
            role=role,
            audience=self._audience,
            expires_at=datetime.fromtimestamp(expires, tz=UTC),
            token_id=token_id if isinstance(token_id, str) else None,
        )

    @staticmethod
    def _reject(reason: str, **context: str) -> InvalidToken:
        log.info("token_rejected", reason=reason, **context)
        return InvalidToken()


def jwks_readiness_check(verifier: TokenVerifier) -> Callable[[], Awaitable[None]]:
    """A readiness check that passes when the verifier can fetch the signing keys."""

    async def signing_keys() -> None:
        await verifier.keys.load()

    return signing_keys


def _verifier_of(request: Request) -> TokenVerifier:
    verifier = getattr(request.app.state, "token_verifier", None)
    if not isinstance(verifier, TokenVerifier):
        raise RuntimeError("the app has no token verifier; pass one to create_app")
    return verifier


def bearer_token(request: Request) -> str:
    """The bearer token of the request's Authorization header."""
    header = request.headers.get("Authorization")
    if header is None:
        raise MissingToken()
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise InvalidToken()
    return token.strip()


BEARER_SCHEME = HTTPBearer(
    auto_error=False,
    scheme_name="bearerAuth",
    bearerFormat="JWT",
    description="An access token from identity's POST /auth/login (ES256, per-service audience)",
)
"""Declares the bearer-JWT security scheme in the OpenAPI documents; the header itself is
read and judged by :func:`bearer_token`, with the shared error bodies."""


async def current_principal(
    request: Request,
    _documented: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER_SCHEME)] = None,
) -> Principal:
    """FastAPI dependency: the authenticated principal of the request (401 otherwise)."""
    principal = await _verifier_of(request).verify(bearer_token(request))
    structlog.contextvars.bind_contextvars(account_id=principal.account_id, role=principal.role)
    return principal


AuthenticatedPrincipal = Annotated[Principal, Depends(current_principal)]
"""Type of an endpoint parameter that receives the authenticated principal."""


def require_role(*roles: str) -> Callable[[Principal], Awaitable[Principal]]:
    """FastAPI dependency: the principal, if its role is one of ``roles`` (403 otherwise)."""
    if not roles:
        raise ValueError("require_role needs at least one role")
    allowed = frozenset(roles)

    async def principal_with_role(principal: AuthenticatedPrincipal) -> Principal:
        if principal.role not in allowed:
            log.info("role_refused", role=principal.role, allowed=sorted(allowed))
            raise RoleNotAllowed()
        return principal

    return principal_with_role
