"""Every parameter and body field of the record store has a domain: a value outside it
(out of 64-bit range, a time Python cannot hold, an id without its format, a look-alike
character from another script, an unbounded string) is refused with a 4xx and its code,
never a 500, and nothing is written (row counts of every table of the record store)."""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import sqlalchemy as sa
from record_store.conftest import Deployment, User
from record_store.test_records_flow import observation

from services.platform.bus.outbox import outbox_table
from services.record_store.adapters.sql import accounts, break_glass, keys, records, versions

INT64_OVERFLOW = 2**63
UINT64_OVERFLOW = 2**64
CYRILLIC_A = "\u0430"  # looks like the Latin "a"
FULLWIDTH_ONE = "\uff11"  # looks like "1"
SCHEMA = "validation_failed"


def counts(deployment: Deployment) -> dict[str, int]:
    with deployment.records_runtime.engine.connect() as connection:
        return {
            table.name: int(
                connection.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
            )
            for table in (accounts, records, versions, keys, break_glass, outbox_table)
        }


@dataclass
class World:
    """A verified provider, a patient with one record, and a valid upload body."""

    provider: User
    patient: User
    record_id: str
    upload: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)


@pytest.fixture(scope="module")
def world(deployment: Deployment) -> World:
    provider = deployment.user("provider", verified=True)
    patient = deployment.user("patient")
    stored = provider.records.upload(
        observation(patient.account_id), patient=patient.recipient, category="labs"
    )
    body = provider.records.build_version(
        observation(patient.account_id),
        record_id=str(uuid.uuid4()),
        version=1,
        patient=patient.recipient,
        category="labs",
    )
    return World(provider, patient, stored.record_id, body)


@dataclass(frozen=True)
class Case:
    """One out-of-domain request: who sends it and the exact answer it must get."""

    name: str
    role: str  # "provider" or "patient"
    method: str
    path: Callable[[World], str]
    status: int = 422
    code: str = SCHEMA
    params: dict[str, Any] | None = None
    body: Callable[[World], Any] | None = None


def _upload(change: Callable[[dict[str, Any]], None]) -> Callable[[World], Any]:
    def body(w: World) -> Any:
        changed = copy.deepcopy(w.upload)
        change(changed)
        return changed

    return body


def _set(*path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(body: dict[str, Any]) -> None:
        target = body
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return change


def _record(w: World) -> str:
    return f"/records/{w.record_id}"


def _keys_body(**over: Any) -> Callable[[World], Any]:
    def body(w: World) -> Any:
        entry = {
            "record_id": w.record_id,
            "version": 1,
            "holder_id": w.provider.account_id,
            "wrapped_key": "AQ" * 62,
        }
        entry.update(over)
        return {"keys": [entry]}

    return body


def _rotation_body(**over: Any) -> Callable[[World], Any]:
    def body(w: World) -> Any:
        valid = {
            "ciphertext": w.upload["ciphertext"],
            "ciphertext_sha256": w.upload["ciphertext_sha256"],
            "wrapped_keys": w.upload["wrapped_keys"],
        }
        valid.update(over)
        return valid

    return body


def _break_glass(**over: Any) -> Callable[[World], Any]:
    def body(w: World) -> Any:
        valid = {
            "patient_id": w.patient.account_id,
            "justification": "Patient unconscious in the emergency department",
            "categories": ["labs"],
            "encryption_key": w.provider.keys.public().encryption_key,
        }
        valid.update(over)
        return valid

    return body


UUID_LOOKALIKE = "0000000" + FULLWIDTH_ONE + "-0000-4000-8000-000000000000"

CASES: list[Case] = [
    # GET /records/{record_id}
    *(
        Case(f"read purpose {p!r}", "patient", "GET", _record, params={"purpose": p})
        for p in (0, 7, -1, INT64_OVERFLOW, "1.5", "one")
    ),
    *(
        Case(f"read version {v!r}", "patient", "GET", _record, params={"purpose": 6, "version": v})
        for v in (0, -1, INT64_OVERFLOW, 10**30, 1_000_001)
    ),
    Case("read without purpose", "patient", "GET", _record),
    *(
        Case(
            f"read record id {r!r}",
            "patient",
            "GET",
            lambda w, r=r: f"/records/{r}",
            params={"purpose": 6},
        )
        for r in ("nope", "A" * 300, UUID_LOOKALIKE, str(uuid.uuid4()).upper())
    ),
    Case(
        "read unknown record",
        "patient",
        "GET",
        lambda w: f"/records/{uuid.uuid4()}",
        404,
        "record_not_found",
        params={"purpose": 6},
    ),
    # GET /records and /records/key-holders
    *(
        Case(
            f"list patient_id {p!r}",
            "patient",
            "GET",
            lambda w: "/records",
            params={"patient_id": p},
        )
        for p in ("", "x" * 201, "a b", "p" + CYRILLIC_A + "tient", "../etc")
    ),
    *(
        Case(f"key holders {q}", "provider", "GET", lambda w: "/records/key-holders", params=q)
        for q in (
            {"patient_id": "x" * 201, "category": "labs"},
            {"patient_id": "p" + CYRILLIC_A, "category": "labs"},
            {"patient_id": "p", "category": "gossip"},
            {"patient_id": "p"},
        )
    ),
    # DELETE /records/keys/{holder_id}
    *(
        Case(
            f"drop keys categories {c!r}",
            "patient",
            "DELETE",
            lambda w: f"/records/keys/{w.provider.account_id}",
            params={"categories": c},
        )
        for c in (0, 32, -1, INT64_OVERFLOW, UINT64_OVERFLOW)
    ),
    *(
        Case(f"drop keys holder {h!r}", "patient", "DELETE", lambda w, h=h: f"/records/keys/{h}")
        for h in ("x" * 201, "holder" + CYRILLIC_A, "a b")
    ),
    # POST /records: numbers, sizes, times, ids, addresses
    *(
        Case(f"upload {name}", "provider", "POST", lambda w: "/records", body=_upload(change))
        for name, change in (
            ("version 0", _set("version", value=0)),
            ("version 2**63", _set("version", value=INT64_OVERFLOW)),
            ("plaintext_size -1", _set("plaintext_size", value=-1)),
            ("plaintext_size 2**63", _set("plaintext_size", value=INT64_OVERFLOW)),
            ("plaintext_size 2**64", _set("plaintext_size", value=UINT64_OVERFLOW)),
            ("plaintext_size 1e308", _set("plaintext_size", value=1e308)),
            ("record_id not a UUID", _set("record_id", value="record-1")),
            ("record_id look-alike digit", _set("record_id", value=UUID_LOOKALIKE)),
            ("patient_id 201 chars", _set("patient_id", value="p" * 201)),
            ("patient_id Cyrillic", _set("patient_id", value="p" + CYRILLIC_A)),
            ("resource_type 61 chars", _set("resource_type", value="O" + "b" * 60)),
            ("content_sha256 upper case", _set("content_sha256", value="AB" * 32)),
            ("content_sha256 full-width", _set("content_sha256", value=FULLWIDTH_ONE * 64)),
            ("ciphertext not base64", _set("ciphertext", value="%%%%")),
            ("ciphertext not a string", _set("ciphertext", value=12)),
            ("one wrapped key", lambda b: b.update(wrapped_keys=b["wrapped_keys"][:1])),
            ("holder id 201 chars", lambda b: b["wrapped_keys"][0].update(holder_id="h" * 201)),
            ("wrapped key 201 chars", lambda b: b["wrapped_keys"][0].update(wrapped_key="A" * 201)),
            ("signed_at month 13", _set("provenance", "signed_at", value="2026-13-01T00:00:00Z")),
            ("signed_at no offset", _set("provenance", "signed_at", value="2026-12-01T00:00:00")),
            (
                "signed_at past 9999 in UTC",
                _set("provenance", "signed_at", value="9999-12-31T23:59:59-01:00"),
            ),
            ("signed_at year 0", _set("provenance", "signed_at", value="0000-01-01T00:00:00Z")),
            (
                "signed_at full-width digits",
                _set("provenance", "signed_at", value="\uff12\uff10\uff12\uff16-01-01T00:00:00Z"),
            ),
            ("signed_at prose", _set("provenance", "signed_at", value="yesterday at noon")),
            (
                "author address Cyrillic",
                _set("provenance", "author_address", value="0x" + CYRILLIC_A * 40),
            ),
            (
                "author address full-width",
                _set("provenance", "author_address", value="0x" + FULLWIDTH_ONE * 40),
            ),
            ("signature 129 hex", _set("provenance", "signature", value="0x" + "1" * 129)),
            ("unknown field", lambda b: b.update(comment="hi")),
        )
    ),
    Case(
        "upload plaintext_size at the 64-bit limit",
        "provider",
        "POST",
        lambda w: "/records",
        422,
        "invalid_size",
        body=_upload(_set("plaintext_size", value=INT64_OVERFLOW - 1)),
    ),
    # POST /records/{record_id}/versions
    Case(
        "amend a malformed record id",
        "provider",
        "POST",
        lambda w: "/records/nope/versions",
        body=lambda w: w.upload,
    ),
    # POST /records/keys
    *(
        Case(f"share keys {name}", "patient", "POST", lambda w: "/records/keys", body=body)
        for name, body in (
            ("version 0", _keys_body(version=0)),
            ("version 2**63", _keys_body(version=INT64_OVERFLOW)),
            ("record id not a UUID", _keys_body(record_id="nope")),
            ("holder Cyrillic", _keys_body(holder_id="h" + CYRILLIC_A)),
            ("wrapped key not base64", _keys_body(wrapped_key="!" * 124)),
            ("no keys", lambda w: {"keys": []}),
        )
    ),
    # POST /records/{record_id}/versions/{version}/rotation
    *(
        Case(
            f"rotate version {v!r}",
            "patient",
            "POST",
            lambda w, v=v: f"/records/{w.record_id}/versions/{v}/rotation",
            body=_rotation_body(),
        )
        for v in (0, -1, INT64_OVERFLOW, UINT64_OVERFLOW, "x")
    ),
    *(
        Case(
            f"rotate {name}",
            "patient",
            "POST",
            lambda w: f"/records/{w.record_id}/versions/1/rotation",
            body=body,
        )
        for name, body in (
            ("ciphertext not base64", _rotation_body(ciphertext="%%%%")),
            ("hash full-width", _rotation_body(ciphertext_sha256=FULLWIDTH_ONE * 64)),
            ("no wrapped keys", _rotation_body(wrapped_keys=[])),
        )
    ),
    # POST /records/break-glass
    *(
        Case(f"break-glass {name}", "provider", "POST", lambda w: "/records/break-glass", body=body)
        for name, body in (
            ("justification 1001 chars", _break_glass(justification="j" * 1001)),
            ("six categories", _break_glass(categories=["labs"] * 6)),
            ("unknown category", _break_glass(categories=["gossip"])),
            ("encryption key upper case", _break_glass(encryption_key="AB" * 32)),
            ("encryption key Cyrillic", _break_glass(encryption_key=CYRILLIC_A * 64)),
            ("patient id 201 chars", _break_glass(patient_id="p" * 201)),
        )
    ),
    Case(
        "break-glass justification too short",
        "provider",
        "POST",
        lambda w: "/records/break-glass",
        422,
        "invalid_justification",
        body=_break_glass(justification="help"),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_out_of_domain_is_refused_and_writes_nothing(
    deployment: Deployment, world: World, case: Case
) -> None:
    user = world.provider if case.role == "provider" else world.patient
    before = counts(deployment)
    response = user.records.http.request(
        case.method,
        case.path(world),
        params=case.params,
        json=case.body(world) if case.body is not None else None,
        headers={"Authorization": f"Bearer {user.records.token}"},
    )
    assert response.status_code == case.status, response.text
    error = response.json()["error"]
    assert error["code"] == case.code, error
    assert counts(deployment) == before
