"""Every identity route checks the domain of each field: lengths, hex of exact length,
addresses in ASCII only (a Cyrillic letter or a full-width digit that looks like hex is
refused with 422, never normalised to the address it resembles), ids with their format,
names without control or format characters. Each refusal has its status and code, is
never a 500, and writes nothing (row counts of identity's tables)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa
from ehr_client.identity import registration_text
from ehr_client.keys import UserKeys
from identity.conftest import Served

CYRILLIC_A = "\u0430"  # looks like the Latin "a"
CYRILLIC_E = "\u0435"  # looks like the Latin "e"
FULLWIDTH_ONE = "\uff11"  # looks like "1"
SCHEMA = "validation_failed"
TABLES = ("identity_accounts", "identity_challenges", "identity_sessions", "bus_outbox")


def counts(served: Served) -> dict[str, int]:
    with served.engine.connect() as conn:
        return {
            table: int(conn.execute(sa.text(f"SELECT COUNT(*) FROM {table}")).scalar_one())
            for table in TABLES
        }


def lookalike(address: str, replacement: str) -> str:
    """``address`` with its first ``a`` (or first digit 1) swapped for a look-alike."""
    body = address[2:].lower()
    target = "a" if replacement == CYRILLIC_A else "1"
    if target not in body:
        body = target + body[1:]
    return "0x" + body.replace(target, replacement, 1)


def registration(keys: UserKeys, *, name: str = "Eve", role: str = "patient") -> dict[str, Any]:
    public = keys.public()
    text = registration_text(name, role, public.address, public.encryption_key)
    return {
        "name": name,
        "role": role,
        "signing_address": public.address,
        "encryption_key": public.encryption_key,
        "signature": "0x" + keys.sign_text(text).hex(),
    }


@dataclass
class Known:
    """An account of each kind the cases need."""

    patient: UserKeys
    provider_id: str
    admin_token: str


@pytest.fixture(scope="module")
def known(served: Served) -> Known:
    patient = UserKeys.generate()
    served.client.register(patient, name="Pat", role="patient")
    provider = UserKeys.generate()
    provider_id = str(served.client.register(provider, name="Dr P", role="provider")["account_id"])
    return Known(patient, provider_id, served.admin_session.token("identity"))


@dataclass(frozen=True)
class Case:
    name: str
    method: str
    path: Callable[[Known], str]
    body: Callable[[Known], Any] | None = None
    status: int = 422
    code: str = SCHEMA
    admin: bool = False


def _register(change: Callable[[dict[str, Any]], None]) -> Callable[[Known], Any]:
    def body(_: Known) -> Any:
        valid = registration(UserKeys.generate())
        change(valid)
        return valid

    return body


def _signed_name(name: str) -> Callable[[Known], Any]:
    """A registration whose name is signed as given (the signature is not the problem)."""
    return lambda _: registration(UserKeys.generate(), name=name)


def _challenge(address: Callable[[Known], Any]) -> Callable[[Known], Any]:
    return lambda k: {"signing_address": address(k)}


def _login(**over: Any) -> Callable[[Known], Any]:
    def body(_: Known) -> Any:
        valid: dict[str, Any] = {"nonce": "ab" * 16, "signature": "0x" + "11" * 65}
        valid.update(over)
        return valid

    return body


def _provider(action: str) -> Callable[[Known], str]:
    return lambda k: f"/providers/{k.provider_id}/{action}"


UNKNOWN_UUID = "0a000000-0000-7000-8000-00000000000f"

CASES: list[Case] = [
    # POST /accounts
    *(
        Case(f"register {name}", "POST", lambda k: "/accounts", _register(change))
        for name, change in (
            (
                "address Cyrillic a",
                lambda b: b.update(signing_address=lookalike(b["signing_address"], CYRILLIC_A)),
            ),
            (
                "address full-width 1",
                lambda b: b.update(signing_address=lookalike(b["signing_address"], FULLWIDTH_ONE)),
            ),
            ("address 41 hex", lambda b: b.update(signing_address=b["signing_address"][:-1])),
            ("address without 0x", lambda b: b.update(signing_address=b["signing_address"][2:])),
            ("address 0X", lambda b: b.update(signing_address="0X" + b["signing_address"][2:])),
            (
                "encryption key upper case",
                lambda b: b.update(encryption_key=b["encryption_key"].upper()),
            ),
            ("encryption key 63 hex", lambda b: b.update(encryption_key=b["encryption_key"][1:])),
            (
                "encryption key Cyrillic",
                lambda b: b.update(encryption_key=CYRILLIC_E + b["encryption_key"][1:]),
            ),
            ("signature 129 hex", lambda b: b.update(signature="0x" + "1" * 129)),
            ("signature full-width", lambda b: b.update(signature="0x" + FULLWIDTH_ONE * 130)),
            ("signature 10k chars", lambda b: b.update(signature="1" * 10_000)),
            ("name empty", lambda b: b.update(name="")),
            ("name 201 chars", lambda b: b.update(name="n" * 201)),
            ("name a number", lambda b: b.update(name=12)),
            ("role Admin", lambda b: b.update(role="Admin")),
            ("unknown field", lambda b: b.update(is_admin=True)),
        )
    ),
    *(
        Case(
            f"register name {label}",
            "POST",
            lambda k: "/accounts",
            _signed_name(name),
            code="invalid_name",
        )
        for label, name in (
            ("blank", "   "),
            ("with a newline forging a line", "Bob\nRole: admin"),
            ("with a carriage return", "Bob\rEve"),
            ("with a right-to-left override", "Eve\u202egnp.exe"),
            ("with a zero-width space", "E\u200bve"),
            ("with a line separator", "Eve\u2028Bob"),
            ("with a private-use character", "Eve\ue000"),
        )
    ),
    # POST /auth/challenge
    *(
        Case(f"challenge {name}", "POST", lambda k: "/auth/challenge", _challenge(address))
        for name, address in (
            ("address Cyrillic a", lambda k: lookalike(k.patient.address, CYRILLIC_A)),
            ("address full-width 1", lambda k: lookalike(k.patient.address, FULLWIDTH_ONE)),
            ("address 43 chars", lambda k: k.patient.address + "0"),
            ("address a number", lambda _: 123),
            ("address null", lambda _: None),
            ("address 10k chars", lambda _: "0x" + "a" * 10_000),
        )
    ),
    Case("challenge no field", "POST", lambda k: "/auth/challenge", lambda _: {}),
    Case(
        "challenge extra field",
        "POST",
        lambda k: "/auth/challenge",
        lambda k: {"signing_address": k.patient.address, "role": "admin"},
    ),
    Case(
        "challenge well-formed unknown address",
        "POST",
        lambda k: "/auth/challenge",
        _challenge(lambda _: UserKeys.generate().address),
        404,
        "account_not_found",
    ),
    # POST /auth/login
    *(
        Case(f"login {name}", "POST", lambda k: "/auth/login", body)
        for name, body in (
            ("nonce 31 hex", _login(nonce="a" * 31)),
            ("nonce upper case", _login(nonce="AB" * 16)),
            ("nonce full-width", _login(nonce=FULLWIDTH_ONE * 32)),
            ("nonce 10k chars", _login(nonce="a" * 10_000)),
            ("signature 131 hex", _login(signature="0x" + "1" * 131)),
            ("signature Cyrillic", _login(signature="0x" + CYRILLIC_A * 130)),
            ("no audiences", _login(audiences=[])),
            ("audience upper case", _login(audiences=["Consent"])),
            ("audience 33 chars", _login(audiences=["a" * 33])),
            ("17 audiences", _login(audiences=["consent"] * 17)),
        )
    ),
    Case(
        "login well-formed unknown nonce",
        "POST",
        lambda k: "/auth/login",
        _login(),
        401,
        "unknown_challenge",
    ),
    # GET /accounts/{account_id} and /accounts/by-address/{address}
    *(
        Case(f"account id {label}", "GET", lambda k, i=i: f"/accounts/{i}", admin=True)
        for label, i in (
            ("not a UUID", "nobody"),
            ("upper-case UUID", UNKNOWN_UUID.upper()),
            ("full-width digit", UNKNOWN_UUID.replace("0", FULLWIDTH_ONE, 1)),
            ("300 chars", "a" * 300),
        )
    ),
    Case(
        "account unknown",
        "GET",
        lambda k: f"/accounts/{UNKNOWN_UUID}",
        status=404,
        code="account_not_found",
        admin=True,
    ),
    *(
        Case(
            f"account by address {label}",
            "GET",
            lambda k, a=a: f"/accounts/by-address/{a(k)}",
            admin=True,
        )
        for label, a in (
            ("Cyrillic a", lambda k: lookalike(k.patient.address, CYRILLIC_A)),
            ("full-width 1", lambda k: lookalike(k.patient.address, FULLWIDTH_ONE)),
            ("41 hex", lambda k: k.patient.address[:-1]),
        )
    ),
    Case(
        "account by unknown address",
        "GET",
        lambda k: f"/accounts/by-address/{UserKeys.generate().address}",
        status=404,
        code="account_not_found",
        admin=True,
    ),
    # provider verification, suspension, reinstatement
    *(
        Case(f"verify {label}", "POST", _provider("verify"), lambda k, b=b: b, admin=True)
        for label, b in (
            ("licence hash full-width", {"licence_hash": "0x" + FULLWIDTH_ONE * 64}),
            ("licence hash Cyrillic", {"licence_hash": "0x" + CYRILLIC_A * 64}),
            ("licence hash 63 hex", {"licence_hash": "0x" + "1" * 63}),
            ("licence hash without 0x", {"licence_hash": "1" * 64}),
            ("metadata hash short", {"licence_hash": "0x" + "1" * 64, "metadata_hash": "0x1"}),
            ("no licence hash", {}),
        )
    ),
    Case(
        "verify a malformed account id",
        "POST",
        lambda k: "/providers/nobody/verify",
        lambda k: {"licence_hash": "0x" + "11" * 32},
        admin=True,
    ),
    *(
        Case(
            f"suspend reason {r!r}",
            "POST",
            _provider("suspend"),
            lambda k, r=r: {"reason_code": r},
            admin=True,
        )
        for r in ("", "Bad Reason", "r" * 65, "fr" + CYRILLIC_A + "ud", "1abc")
    ),
    Case(
        "reinstate a malformed account id",
        "POST",
        lambda k: f"/providers/{'a' * 300}/reinstate",
        admin=True,
    ),
    # signing keys
    *(
        Case(f"retire kid {label}", "DELETE", lambda k, i=i: f"/admin/signing-keys/{i}", admin=True)
        for label, i in (("not a UUID", "active"), ("dots", "..%2E..%2Eetc"), ("long", "k" * 300))
    ),
    Case(
        "retire unknown kid",
        "DELETE",
        lambda k: f"/admin/signing-keys/{UNKNOWN_UUID}",
        status=404,
        code="signing_key_not_found",
        admin=True,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_out_of_domain_is_refused_and_writes_nothing(
    served: Served, known: Known, case: Case
) -> None:
    body = case.body(known) if case.body is not None else None
    path = case.path(known)
    headers = {"Authorization": f"Bearer {known.admin_token}"} if case.admin else {}
    before = counts(served)
    response = served.client.http.request(case.method, path, json=body, headers=headers)
    assert response.status_code == case.status, response.text
    assert response.json()["error"]["code"] == case.code, response.text
    assert counts(served) == before


def test_a_lookalike_address_does_not_reach_the_account_it_resembles(
    served: Served, known: Known
) -> None:
    """The real account exists: its look-alike spellings are refused, not resolved to it."""
    ok = served.client.http.post("/auth/challenge", json={"signing_address": known.patient.address})
    assert ok.status_code == 201
    for replacement in (CYRILLIC_A, FULLWIDTH_ONE):
        spoofed = lookalike(known.patient.address, replacement)
        assert spoofed != known.patient.address and spoofed.isascii() is False
        refused = served.client.http.post("/auth/challenge", json={"signing_address": spoofed})
        assert (refused.status_code, refused.json()["error"]["code"]) == (422, SCHEMA)


def test_the_registered_name_is_the_signed_name(served: Served) -> None:
    """A name with surrounding spaces is stored trimmed; its signature covers the trimmed
    text, so the stored name is exactly what the key holder signed."""
    keys = UserKeys.generate()
    created = served.client.http.post("/accounts", json=registration(keys, name="Zoë Ω"))
    assert created.status_code == 201, created.text
    assert created.json()["name"] == "Zoë Ω"
    assert uuid.UUID(created.json()["account_id"])
