"""Bad input gets a clear 4xx JSON error and writes nothing (no row, no event); a
failed login writes exactly its LoginFailed event."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from ehr.identity.v1 import identity_pb2
from ehr_client.identity import registration_text
from ehr_client.keys import UserKeys
from identity.conftest import Served
from jose import jwt

from services.platform.events import envelope as events


@dataclass
class Call:
    method: str
    path: str
    json: Any = None
    token: str | None = None
    raw: bytes | None = None


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _claims(served: Served, **over: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": "ehr-identity",
        "aud": "identity",
        "sub": served.admin_session.account_id,
        "role": "admin",
        "iat": now,
        "exp": now + 300,
        "jti": "t-1",
    }
    claims.update(over)
    return claims


def _registration(
    keys: UserKeys, *, name: str = "Eve", role: str = "patient", signer: UserKeys | None = None
) -> dict[str, Any]:
    public = keys.public()
    text = registration_text(name, role, public.address, public.encryption_key)
    return {
        "name": name,
        "role": role,
        "signing_address": public.address,
        "encryption_key": public.encryption_key,
        "signature": "0x" + (signer or keys).sign_text(text).hex(),
    }


def _login_with(
    served: Served, sign: Callable[[UserKeys, dict[str, Any]], str], *, use_twice: bool = False
) -> Call:
    user = UserKeys.generate()
    served.client.register(user, name="Login target", role="patient")
    challenge = served.client.challenge(user.address)
    signature = sign(user, challenge)
    if use_twice:
        served.client.submit_login(challenge["nonce"], signature)
    return Call("POST", "/auth/login", {"nonce": challenge["nonce"], "signature": signature})


def _provider_id(served: Served) -> str:
    provider = UserKeys.generate()
    return str(served.client.register(provider, name="Dr P", role="provider")["account_id"])


def _case_bad_token(served: Served, token: str) -> Call:
    return Call(
        "POST",
        f"/providers/{_provider_id(served)}/verify",
        {"licence_hash": "0x" + "11" * 32},
        token,
    )


def _wrong_key_token(served: Served) -> str:
    other = ec.generate_private_key(ec.SECP256R1())
    pem = other.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()).decode()
    return str(
        jwt.encode(
            _claims(served), pem, algorithm="ES256", headers={"kid": served.runtime.keys.active_kid}
        )
    )


def _expired_token(served: Served) -> str:
    past = int((datetime.now(UTC) - timedelta(hours=1)).timestamp())
    return str(served.runtime.keys.sign(_claims(served, iat=past - 60, exp=past)))


CASES: dict[str, tuple[Callable[[Served], Call], int, bool]] = {
    # name: (build the request, expected status, a LoginFailed event is written)
    "malformed json": (lambda s: Call("POST", "/accounts", raw=b"{not json"), 400, False),
    "missing field": (
        lambda s: Call("POST", "/accounts", {"name": "x", "role": "patient"}),
        422,
        False,
    ),
    "unknown role": (
        lambda s: Call("POST", "/accounts", {**_registration(UserKeys.generate()), "role": "god"}),
        422,
        False,
    ),
    "bad address": (
        lambda s: Call(
            "POST",
            "/accounts",
            {**_registration(UserKeys.generate()), "signing_address": "0x" + "zz" * 20},
        ),
        422,
        False,
    ),
    "registration signed by another key": (
        lambda s: Call(
            "POST", "/accounts", _registration(UserKeys.generate(), signer=UserKeys.generate())
        ),
        401,
        False,
    ),
    "registration signature garbage": (
        lambda s: Call(
            "POST",
            "/accounts",
            {**_registration(UserKeys.generate()), "signature": "0x" + "00" * 65},
        ),
        401,
        False,
    ),
    "self-registered admin": (
        lambda s: Call("POST", "/accounts", _registration(UserKeys.generate(), role="admin")),
        403,
        False,
    ),
    "self-registered auditor": (
        lambda s: Call("POST", "/accounts", _registration(UserKeys.generate(), role="auditor")),
        403,
        False,
    ),
    "self-registered service": (
        lambda s: Call("POST", "/accounts", _registration(UserKeys.generate(), role="service")),
        403,
        False,
    ),
    "duplicate address": (
        lambda s: Call("POST", "/accounts", _registration(s.admin, name="Admin", role="admin")),
        409,
        False,
    ),
    "challenge for unknown account": (
        lambda s: Call("POST", "/auth/challenge", {"signing_address": UserKeys.generate().address}),
        404,
        False,
    ),
    "login with unknown nonce": (
        lambda s: Call("POST", "/auth/login", {"nonce": "ab" * 16, "signature": "0x" + "11" * 65}),
        401,
        False,
    ),
    "login signed by another key": (
        lambda s: _login_with(
            s, lambda u, c: "0x" + UserKeys.generate().sign_text(c["message"]).hex()
        ),
        401,
        True,
    ),
    "login bad signature bytes": (
        lambda s: _login_with(s, lambda u, c: "0x" + "00" * 65),
        401,
        True,
    ),
    "login signed other text": (
        lambda s: _login_with(s, lambda u, c: "0x" + u.sign_text(c["message"] + " ").hex()),
        401,
        True,
    ),
    "replayed challenge": (
        lambda s: _login_with(s, lambda u, c: s.client.sign_challenge(u, c), use_twice=True),
        401,
        True,
    ),
    "unknown audience": (
        lambda s: Call(
            "POST",
            "/auth/login",
            {"nonce": "ab" * 16, "signature": "0x" + "11" * 65, "audiences": ["evil"]},
        ),
        422,
        False,
    ),
    "patient verifies provider": (
        lambda s: _case_bad_token(s, s.client.login(_patient(s)).token()),
        403,
        False,
    ),
    "no token": (lambda s: Call("GET", "/me"), 401, False),
    "alg none token": (
        lambda s: _case_bad_token(
            s,
            _b64({"alg": "none", "typ": "JWT", "kid": s.runtime.keys.active_kid})
            + "."
            + _b64(_claims(s))
            + ".",
        ),
        401,
        False,
    ),
    "token by a wrong key": (lambda s: _case_bad_token(s, _wrong_key_token(s)), 401, False),
    "expired token": (lambda s: _case_bad_token(s, _expired_token(s)), 401, False),
    "wrong audience token": (
        lambda s: _case_bad_token(s, s.admin_session.token("consent")),
        401,
        False,
    ),
    "verify a patient": (
        lambda s: Call(
            "POST",
            f"/providers/{s.admin_session.account_id}/verify",
            {"licence_hash": "0x" + "11" * 32},
            s.admin_session.token(),
        ),
        409,
        False,
    ),
    "verify unknown account": (
        lambda s: Call(
            "POST",
            "/providers/00000000-0000-7000-8000-000000000000/verify",
            {"licence_hash": "0x" + "11" * 32},
            s.admin_session.token(),
        ),
        404,
        False,
    ),
    "verify a malformed account id": (
        lambda s: Call(
            "POST",
            "/providers/nobody/verify",
            {"licence_hash": "0x" + "11" * 32},
            s.admin_session.token(),
        ),
        422,
        False,
    ),
    "zero licence hash": (
        lambda s: Call(
            "POST",
            f"/providers/{_provider_id(s)}/verify",
            {"licence_hash": "0x" + "00" * 32},
            s.admin_session.token(),
        ),
        422,
        False,
    ),
    "suspend an unverified provider": (
        lambda s: Call(
            "POST",
            f"/providers/{_provider_id(s)}/suspend",
            {"reason_code": "x"},
            s.admin_session.token(),
        ),
        409,
        False,
    ),
}


def _patient(served: Served) -> UserKeys:
    keys = UserKeys.generate()
    served.client.register(keys, name="Pat", role="patient")
    return keys


@pytest.mark.parametrize("case", list(CASES))
def test_refused_with_4xx_json_and_nothing_written(served: Served, case: str) -> None:
    build, status, login_failed = CASES[case]
    call = build(served)
    before = served.counts()
    headers = {"Authorization": f"Bearer {call.token}"} if call.token else {}
    if call.raw is not None:
        headers["Content-Type"] = "application/json"
        response = served.client.http.request(
            call.method, call.path, content=call.raw, headers=headers
        )
    else:
        response = served.client.http.request(
            call.method, call.path, json=call.json, headers=headers
        )
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] and error["message"]
    after = served.counts()
    expected_outbox = before["bus_outbox"] + (1 if login_failed else 0)
    assert after == {**before, "bus_outbox": expected_outbox}
    if login_failed:
        nonce = call.json["nonce"]
        found = served.runtime.store.challenge(nonce)
        assert found is not None
        failed = served.bus_events(
            found[0].account_id, lambda seen: any(e.type.endswith("login_failed.v1") for e in seen)
        )
        reasons = [
            events.payload(e, identity_pb2.LoginFailed).reason
            for e in failed
            if e.type == "ehr.identity.login_failed.v1"
        ]
        assert reasons, "no login_failed event on the bus"
        if case == "replayed challenge":
            assert identity_pb2.LOGIN_FAILURE_REASON_REPLAYED_CHALLENGE in reasons


def test_expired_challenge_is_refused(served: Served) -> None:
    user = _patient(served)
    challenge = served.client.challenge(user.address)
    signature = served.client.sign_challenge(user, challenge)
    service = served.runtime.service
    original = service.clock
    service.clock = lambda: datetime.now(UTC) + timedelta(hours=1)
    try:
        before = served.counts()
        response = served.client.http.post(
            "/auth/login", json={"nonce": challenge["nonce"], "signature": signature}
        )
    finally:
        service.clock = original
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "expired_challenge"
    after = served.counts()
    assert after == {**before, "bus_outbox": before["bus_outbox"] + 1}
    found = served.runtime.store.challenge(challenge["nonce"])
    assert found is not None
    failed = served.bus_events(
        found[0].account_id,
        lambda seen: any(e.type == "ehr.identity.login_failed.v1" for e in seen),
    )
    reasons = [
        events.payload(e, identity_pb2.LoginFailed).reason
        for e in failed
        if e.type == "ehr.identity.login_failed.v1"
    ]
    assert reasons == [identity_pb2.LOGIN_FAILURE_REASON_EXPIRED_CHALLENGE]


def test_openapi_is_published(served: Served) -> None:
    document = served.client.http.get("/openapi.json").json()
    assert (
        "/auth/login" in document["paths"] and "/providers/{account_id}/verify" in document["paths"]
    )
