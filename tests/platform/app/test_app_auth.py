"""JWT verification: accepted and refused tokens, roles, and JWKS fetching and rotation."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI

from services.platform.app.auth import (
    AuthenticatedPrincipal,
    HttpJwksSource,
    InvalidToken,
    KeyCache,
    Principal,
    StaticJwksSource,
    TokenVerifier,
    jwks_readiness_check,
    require_role,
)
from services.platform.app.factory import create_app
from services.platform.app.settings import ServiceSettings

Claims = Callable[..., dict[str, Any]]


def _router() -> APIRouter:
    router = APIRouter()

    @router.get("/me")
    async def me(principal: AuthenticatedPrincipal) -> dict[str, Any]:
        return {
            "account_id": principal.account_id,
            "role": principal.role,
            "audience": principal.audience,
            "token_id": principal.token_id,
            "expires_at": principal.expires_at.timestamp(),
        }

    @router.get("/audit")
    async def audit(
        principal: Principal = Depends(require_role("auditor", "admin")),  # noqa: B008
    ) -> dict[str, str]:
        return {"account_id": principal.account_id}

    return router


def _client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://svc")


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unsigned(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    return ".".join(
        [
            _b64(json.dumps(header).encode()),
            _b64(json.dumps(claims).encode()),
            _b64(signature),
        ]
    )


@pytest.fixture
async def client(
    settings_factory: Callable[..., ServiceSettings],
    jwks_document: Callable[..., dict[str, Any]],
    signing_key: Any,
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings_factory(jwks=jwks_document(signing_key)), [_router()])
    async with _client(app) as c:
        yield c


def _assert_401(response: httpx.Response, code: str = "invalid_token") -> None:
    assert response.status_code == 401, response.text
    body = response.json()
    assert body["error"]["code"] == code
    assert body["error"]["request_id"] == response.headers["X-Request-ID"]
    assert response.headers["WWW-Authenticate"] == "Bearer"


async def test_valid_token_gives_the_principal(
    client: httpx.AsyncClient, signing_key: Any, token_claims: Claims
) -> None:
    claims = token_claims(sub="acct-7", role="patient")
    response = await client.get("/me", headers=_bearer(signing_key.sign(claims)))
    assert response.status_code == 200, response.text
    assert response.json() == {
        "account_id": "acct-7",
        "role": "patient",
        "audience": "test-service",
        "token_id": claims["jti"],
        "expires_at": float(claims["exp"]),
    }


async def test_missing_token_is_401(client: httpx.AsyncClient) -> None:
    _assert_401(await client.get("/me"), code="missing_token")


@pytest.mark.parametrize("header", ["Basic dXNlcjpwdw==", "Bearer", "Bearer   ", "token"])
async def test_other_authorization_schemes_are_401(client: httpx.AsyncClient, header: str) -> None:
    _assert_401(await client.get("/me", headers={"Authorization": header}))


@pytest.mark.parametrize("token", ["garbage", "a.b.c", "e30.e30.", "..", "x" * 5000])
async def test_garbage_is_401(client: httpx.AsyncClient, token: str) -> None:
    _assert_401(await client.get("/me", headers=_bearer(token)))


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
async def test_alg_none_is_refused(
    client: httpx.AsyncClient, signing_key: Any, token_claims: Claims, alg: str
) -> None:
    token = _unsigned({"alg": alg, "typ": "JWT", "kid": signing_key.kid}, token_claims())
    _assert_401(await client.get("/me", headers=_bearer(token)))


async def test_hs256_signed_with_the_public_key_is_refused(
    client: httpx.AsyncClient, signing_key: Any, token_claims: Claims
) -> None:
    header = {"alg": "HS256", "typ": "JWT", "kid": signing_key.kid}
    claims = token_claims()
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    for secret in (signing_key.public_pem, json.dumps(signing_key.public_jwk)):
        mac = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
        _assert_401(await client.get("/me", headers=_bearer(f"{signing_input}.{_b64(mac)}")))


async def test_token_signed_with_another_key_is_refused(
    client: httpx.AsyncClient, key_factory: Any, signing_key: Any, token_claims: Claims
) -> None:
    impostor = key_factory(kid=signing_key.kid)
    _assert_401(await client.get("/me", headers=_bearer(impostor.sign(token_claims()))))


async def test_tampered_claims_are_refused(
    client: httpx.AsyncClient, signing_key: Any, token_claims: Claims
) -> None:
    header, _, signature = signing_key.sign(token_claims(role="patient")).split(".")
    forged = _b64(json.dumps(token_claims(role="admin")).encode())
    _assert_401(await client.get("/me", headers=_bearer(f"{header}.{forged}.{signature}")))


async def test_expired_token_is_refused_as_expired(
    client: httpx.AsyncClient, signing_key: Any, token_claims: Claims
) -> None:
    token = signing_key.sign(token_claims(issued_offset=-600, lifetime=300))
    _assert_401(await client.get("/me", headers=_bearer(token)), code="token_expired")


async def test_not_yet_valid_token_is_refused(
    client: httpx.AsyncClient, signing_key: Any, token_claims: Claims
) -> None:
    token = signing_key.sign(token_claims(nbf=int(time.time()) + 600))
    _assert_401(await client.get("/me", headers=_bearer(token)))


@pytest.mark.parametrize(
    "overrides",
    [
        {"audience": "record-store"},
        {"audience": ["record-store", "consent"]},
        {"issuer": "someone-else"},
    ],
    ids=["wrong-audience", "wrong-audience-list", "wrong-issuer"],
)
async def test_wrong_audience_or_issuer_is_refused(
    client: httpx.AsyncClient, signing_key: Any, token_claims: Claims, overrides: dict[str, Any]
) -> None:
    token = signing_key.sign(token_claims(**overrides))
    _assert_401(await client.get("/me", headers=_bearer(token)))


async def test_audience_list_naming_this_service_is_accepted(
    client: httpx.AsyncClient, signing_key: Any, token_claims: Claims
) -> None:
    token = signing_key.sign(token_claims(audience=["consent", "test-service"]))
    assert (await client.get("/me", headers=_bearer(token))).status_code == 200


@pytest.mark.parametrize("claim", ["sub", "role", "exp", "iat", "iss", "aud"])
async def test_token_missing_a_required_claim_is_refused(
    client: httpx.AsyncClient, signing_key: Any, token_claims: Claims, claim: str
) -> None:
    claims = token_claims()
    del claims[claim]
    _assert_401(await client.get("/me", headers=_bearer(signing_key.sign(claims))))


async def test_unknown_kid_is_refused(
    client: httpx.AsyncClient, signing_key: Any, token_claims: Claims
) -> None:
    token = signing_key.sign(token_claims(), kid="key-that-was-never-published")
    _assert_401(await client.get("/me", headers=_bearer(token)))


async def test_clock_skew_is_tolerated(
    settings_factory: Callable[..., ServiceSettings],
    jwks_document: Callable[..., dict[str, Any]],
    signing_key: Any,
    token_claims: Claims,
) -> None:
    settings = settings_factory(jwks=jwks_document(signing_key), clock_skew_seconds=60)
    just_expired = signing_key.sign(token_claims(issued_offset=-320, lifetime=300))
    long_expired = signing_key.sign(token_claims(issued_offset=-500, lifetime=300))
    async with _client(create_app(settings, [_router()])) as c:
        assert (await c.get("/me", headers=_bearer(just_expired))).status_code == 200
        _assert_401(await c.get("/me", headers=_bearer(long_expired)), code="token_expired")


async def test_allowed_role_passes(
    client: httpx.AsyncClient, signing_key: Any, token_claims: Claims
) -> None:
    for role in ("auditor", "admin"):
        token = signing_key.sign(token_claims(role=role, sub=f"acct-{role}"))
        response = await client.get("/audit", headers=_bearer(token))
        assert response.status_code == 200
        assert response.json() == {"account_id": f"acct-{role}"}


async def test_wrong_role_is_403(
    client: httpx.AsyncClient, signing_key: Any, token_claims: Claims
) -> None:
    token = signing_key.sign(token_claims(role="provider"))
    response = await client.get("/audit", headers=_bearer(token))
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "role_not_allowed"


async def test_role_check_still_needs_a_valid_token(client: httpx.AsyncClient) -> None:
    _assert_401(await client.get("/audit"), code="missing_token")


def test_require_role_needs_a_role() -> None:
    with pytest.raises(ValueError):
        require_role()


async def test_private_or_foreign_keys_in_the_jwks_are_not_used(
    signing_key: Any, key_factory: Any, token_claims: Claims
) -> None:
    leaked = key_factory(kid="leaked")
    private_jwk = leaked.public_jwk | {
        "d": _b64(leaked.private_key.private_numbers().private_value.to_bytes(32, "big"))
    }
    foreign = key_factory(kid="foreign").public_jwk | {"alg": "ES384"}
    encryption = key_factory(kid="enc").public_jwk | {"use": "enc"}
    document = {"keys": [private_jwk, foreign, encryption, signing_key.public_jwk, {"kty": 1}]}
    verifier = TokenVerifier(
        KeyCache(StaticJwksSource(document), min_refresh_seconds=0),
        issuer="ehr-identity-test",
        audience="test-service",
    )
    assert (await verifier.verify(signing_key.sign(token_claims()))).account_id == "account-1"
    for kid in ("leaked", "foreign", "enc"):
        assert await verifier.keys.key(kid) is None


# JWKS served by a real HTTP server on 127.0.0.1


def _http_app(
    settings_factory: Callable[..., ServiceSettings], url: str, **settings: Any
) -> FastAPI:
    app_settings = settings_factory(jwks_url=url, **settings)
    verifier = TokenVerifier.from_settings(app_settings.jwt)
    return create_app(
        app_settings,
        [_router()],
        {"signing_keys": jwks_readiness_check(verifier)},
        token_verifier=verifier,
    )


async def test_rotated_key_is_accepted_after_the_jwks_publishes_it(
    settings_factory: Callable[..., ServiceSettings],
    jwks_server: Any,
    jwks_document: Callable[..., dict[str, Any]],
    signing_key: Any,
    key_factory: Any,
    token_claims: Claims,
) -> None:
    jwks_server.document = jwks_document(signing_key)
    new_key = key_factory(kid="key-2")
    async with _client(_http_app(settings_factory, jwks_server.url)) as c:
        old_token = signing_key.sign(token_claims())
        assert (await c.get("/me", headers=_bearer(old_token))).status_code == 200
        assert jwks_server.fetches == 1

        new_token = new_key.sign(token_claims(sub="acct-new"))
        _assert_401(await c.get("/me", headers=_bearer(new_token)))  # not published yet
        assert jwks_server.fetches == 2

        jwks_server.document = jwks_document(signing_key, new_key)
        response = await c.get("/me", headers=_bearer(new_token))
        assert response.status_code == 200
        assert response.json()["account_id"] == "acct-new"
        assert jwks_server.fetches == 3

        # both keys are now cached: no further fetch for either
        assert (await c.get("/me", headers=_bearer(old_token))).status_code == 200
        assert (await c.get("/me", headers=_bearer(new_token))).status_code == 200
        assert jwks_server.fetches == 3


async def test_unknown_kids_do_not_hammer_the_identity_service(
    settings_factory: Callable[..., ServiceSettings],
    jwks_server: Any,
    jwks_document: Callable[..., dict[str, Any]],
    signing_key: Any,
    token_claims: Claims,
) -> None:
    jwks_server.document = jwks_document(signing_key)
    app = _http_app(settings_factory, jwks_server.url, jwks_min_refresh_seconds=3600)
    async with _client(app) as c:
        assert (await c.get("/me", headers=_bearer(signing_key.sign(token_claims())))).is_success
        for n in range(5):
            token = signing_key.sign(token_claims(), kid=f"made-up-{n}")
            _assert_401(await c.get("/me", headers=_bearer(token)))
    assert jwks_server.fetches == 1


async def test_unreachable_jwks_is_503_and_not_ready(
    settings_factory: Callable[..., ServiceSettings],
    jwks_server: Any,
    jwks_document: Callable[..., dict[str, Any]],
    signing_key: Any,
    token_claims: Claims,
) -> None:
    jwks_server.failing = True
    jwks_server.document = jwks_document(signing_key)
    async with _client(_http_app(settings_factory, jwks_server.url)) as c:
        response = await c.get("/me", headers=_bearer(signing_key.sign(token_claims())))
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "signing_keys_unavailable"
        ready = await c.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["error"]["details"]["failing"] == ["signing_keys"]

        jwks_server.failing = False
        assert (await c.get("/readyz")).status_code == 200
        response = await c.get("/me", headers=_bearer(signing_key.sign(token_claims())))
        assert response.status_code == 200


async def test_failed_refresh_keeps_the_known_keys(
    settings_factory: Callable[..., ServiceSettings],
    jwks_server: Any,
    jwks_document: Callable[..., dict[str, Any]],
    signing_key: Any,
    token_claims: Claims,
) -> None:
    jwks_server.document = jwks_document(signing_key)
    async with _client(_http_app(settings_factory, jwks_server.url)) as c:
        token = signing_key.sign(token_claims())
        assert (await c.get("/me", headers=_bearer(token))).status_code == 200
        jwks_server.failing = True
        unknown = signing_key.sign(token_claims(), kid="not-there")
        _assert_401(await c.get("/me", headers=_bearer(unknown)))
        assert jwks_server.fetches == 2  # the refresh was tried and failed
        assert (await c.get("/me", headers=_bearer(token))).status_code == 200


async def test_withdrawn_key_is_refused_once_the_cache_expires(
    jwks_server: Any,
    jwks_document: Callable[..., dict[str, Any]],
    signing_key: Any,
    key_factory: Any,
    token_claims: Claims,
) -> None:
    now = [1000.0]
    new_key = key_factory(kid="key-2")
    jwks_server.document = jwks_document(signing_key, new_key)
    cache = KeyCache(
        HttpJwksSource(jwks_server.url),
        max_age_seconds=60,
        min_refresh_seconds=5,
        clock=lambda: now[0],
    )
    verifier = TokenVerifier(cache, issuer="ehr-identity-test", audience="test-service")
    old_token = signing_key.sign(token_claims())
    assert (await verifier.verify(old_token)).account_id == "account-1"

    jwks_server.document = jwks_document(new_key)  # identity withdraws key-1
    now[0] += 30
    assert (await verifier.verify(old_token)).account_id == "account-1"  # cache still fresh
    assert jwks_server.fetches == 1

    now[0] += 31
    with pytest.raises(InvalidToken) as refused:
        await verifier.verify(old_token)
    assert refused.value.code == "invalid_token"
    assert jwks_server.fetches == 2
    assert (await verifier.verify(new_key.sign(token_claims()))).account_id == "account-1"


@pytest.mark.parametrize("alg", ["none", "HS256", "RS256", "ES384"])
async def test_refused_algorithms_never_trigger_a_key_fetch(
    settings_factory: Callable[..., ServiceSettings],
    jwks_server: Any,
    token_claims: Claims,
    alg: str,
) -> None:
    token = _unsigned({"alg": alg, "typ": "JWT", "kid": "unknown"}, token_claims(), b"sig")
    async with _client(_http_app(settings_factory, jwks_server.url)) as c:
        _assert_401(await c.get("/me", headers=_bearer(token)))
    assert jwks_server.fetches == 0
