"""Every number and time at consent's edge has a domain that storage (64-bit integers),
the registry (uint64/uint256) and Python all hold, checked before anything is relayed or
stored: out of it is a 422 that leaves nothing behind (consent's tables, the patient's
nonce on chain, the bus). A grant's expiry lies after now and at most
``MAX_GRANT_HORIZON_SECONDS`` (ten years) after it; a refusal for that rule is recorded
like the registry's other rules. One table per class, both backends.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa
from consent.harness import HOUR, Harness, Party
from ehr_client import consent as sdk

from services.consent.adapters.eip712 import Eip712SignatureVerifier
from services.consent.adapters.sql import applied_logs, grants, quarantine, rejections
from services.consent.domain.errors import ExpiryTooFar, MessageExpired
from services.consent.domain.events import Actor
from services.consent.domain.model import (
    MAX_GRANT_HORIZON_SECONDS,
    NONCE_MAX,
    UNIX_TIME_MAX,
    GrantMessage,
    Signed,
)
from services.consent.domain.service import ConsentService
from services.platform.bus.outbox import outbox_table
from services.platform.events.topics import CONSENT_GRANTS

H = MAX_GRANT_HORIZON_SECONDS
HOSTILE_NUMBERS = [-1, 2**63, 2**64 - 1, 2**256]
TABLES = (grants, applied_logs, rejections, quarantine, outbox_table)


@dataclass(frozen=True)
class Written:
    """What a request could have left behind."""

    rows: dict[str, int]
    nonce: int
    offsets: dict[tuple[str, int], int]


async def written(h: Harness, patient: Party) -> Written:
    """Consent's row counts, the patient's nonce and the consent topic's end offsets,
    once the outbox is drained (so a count is not caught mid-publish)."""
    deadline = time.monotonic() + 30
    pending = outbox_table.c.published_at.is_(None)
    while True:
        with h.runtime.engine.connect() as connection:
            left = connection.execute(
                sa.select(sa.func.count()).select_from(outbox_table).where(pending)
            ).scalar_one()
        if left == 0:
            break
        assert time.monotonic() < deadline, "the outbox was not drained"
        await asyncio.sleep(0.05)
    with h.runtime.engine.connect() as connection:
        rows = {
            t.name: int(connection.execute(sa.select(sa.func.count()).select_from(t)).scalar_one())
            for t in TABLES
        }
    offsets = await h.runtime.bus.end_offsets([CONSENT_GRANTS.name])
    return Written(rows, h.nonce(patient), offsets)


async def parties(h: Harness) -> tuple[Party, Party]:
    return await h.register("patient"), await h.register("provider")


# -- numbers outside their domain: 422 from the schema, nothing written ---------------


@dataclass(frozen=True)
class NumberField:
    route: str
    name: str


FIELDS: list[NumberField] = [
    NumberField("/consent/grants", "expires_at"),
    NumberField("/consent/grants", "nonce"),
    NumberField("/consent/grants", "deadline"),
    NumberField("/consent/grants", "categories"),
    NumberField("/consent/grants", "purpose"),
    NumberField("/consent/revocations", "nonce"),
    NumberField("/consent/revocations", "deadline"),
    NumberField("/consent/revocations", "categories"),
    NumberField("/consent/revocations", "purpose"),
]


@pytest.mark.parametrize("value", HOSTILE_NUMBERS, ids=["negative", "2^63", "2^64-1", "2^256"])
@pytest.mark.parametrize("field", FIELDS, ids=lambda f: f"{f.route.rsplit('/', 1)[1]}.{f.name}")
async def test_a_number_outside_its_domain_is_refused_before_anything(
    consent: Harness, field: NumberField, value: int
) -> None:
    h = consent
    patient, provider = await parties(h)
    if field.route.endswith("grants"):
        body = h.grant_body(patient, provider.address)
    else:
        body = h.revoke_body(patient, provider.address)
    body["message"][field.name] = value
    before = await written(h, patient)

    response = await h.client.post(field.route, json=body, headers=h.headers(patient))

    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "validation_failed"
    assert [d["loc"] for d in error["details"]] == [["body", "message", field.name]]
    assert await written(h, patient) == before


async def test_a_bad_signature_on_an_expiry_no_layer_holds_is_a_422_not_a_500(
    consent: Harness,
) -> None:
    """The hostile tester's body: an expiry of 2**64 - 1 with a wrong signature."""
    h = consent
    patient, provider = await parties(h)
    body = h.grant_body(patient, provider.address, signer=patient.key)
    body["message"]["expires_at"] = 2**64 - 1  # the signature no longer matches either
    before = await written(h, patient)

    response = await h.client.post("/consent/grants", json=body, headers=h.headers(patient))

    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "validation_failed"
    assert await written(h, patient) == before


def test_the_schema_states_each_domain(consent: Harness) -> None:
    document = consent.runtime.app.openapi()
    schemas = document["components"]["schemas"]
    grant = schemas["GrantMessageBody"]["properties"]
    revoke = schemas["RevokeMessageBody"]["properties"]
    # Each bound is an integer a float holds exactly (the document's numbers are floats).
    for props in (grant, revoke):
        assert (props["nonce"]["minimum"], props["nonce"]["maximum"]) == (0, NONCE_MAX)
        assert (props["deadline"]["minimum"], props["deadline"]["maximum"]) == (0, UNIX_TIME_MAX)
        assert props["nonce"]["format"] == props["deadline"]["format"] == "int64"
    assert (grant["expires_at"]["minimum"], grant["expires_at"]["maximum"]) == (1, UNIX_TIME_MAX)
    assert str(H) in grant["expires_at"]["description"]


# -- the expiry's window: after now, at most the horizon after it ----------------------


@dataclass(frozen=True)
class Expiry:
    name: str
    at: Callable[[int], int]  # the expiry, given the current unix time
    status: int
    code: str | None  # None: accepted
    error_name: str | None = None


INVALID_EXPIRY = "ConsentRegistry__InvalidExpiry"
EXPIRIES = [
    Expiry("past", lambda now: now - HOUR, 422, "message_expired", INVALID_EXPIRY),
    Expiry("now", lambda now: now, 422, "message_expired", INVALID_EXPIRY),
    Expiry("within the horizon", lambda now: now + H - 60, 201, None),
    Expiry(
        "beyond the horizon",
        lambda now: now + H + 60,
        422,
        "expiry_too_far",
        "ConsentRegistry__ExpiryTooFar",
    ),
    Expiry(
        "year 9999",
        lambda now: UNIX_TIME_MAX,
        422,
        "expiry_too_far",
        "ConsentRegistry__ExpiryTooFar",
    ),
]


@pytest.mark.parametrize("case", EXPIRIES, ids=lambda c: c.name)
async def test_an_expiry_outside_the_window_is_refused_and_recorded(
    consent: Harness, case: Expiry
) -> None:
    h = consent
    patient, provider = await parties(h)
    now = int(time.time())
    body = h.grant_body(patient, provider.address, expires_at=case.at(now))
    before = await written(h, patient)

    response = await h.client.post("/consent/grants", json=body, headers=h.headers(patient))

    after = await written(h, patient)
    if case.code is None:
        assert response.status_code == 201, response.text
        assert response.json()["expires_at"] == case.at(now)
        assert after.nonce == before.nonce + 1
        assert after.rows["consent_grants"] == before.rows["consent_grants"] + 1
        return
    assert response.status_code == case.status, response.text
    assert response.json()["error"]["code"] == case.code
    # Refused for a rule of the registry: one rejection row and its event, nothing else.
    assert after.nonce == before.nonce
    assert after.rows == {
        **before.rows,
        "consent_rejections": before.rows["consent_rejections"] + 1,
        "bus_outbox": before.rows["bus_outbox"] + 1,
    }
    assert sum(after.offsets.values()) == sum(before.offsets.values()) + 1
    assert h.runtime.repository.rejections(patient.address) == [("grant", case.error_name)]


async def test_the_horizon_is_exact_to_the_second(consent: Harness) -> None:
    """With the service's clock held at ``t``: an expiry of ``t + H`` is relayed and
    recorded, ``t + H + 1`` is refused before the chain; ``t`` itself is refused."""
    h = consent
    patient, provider = await parties(h)
    t = int(time.time()) - 30  # the chain's clock is at least t (Geth's latest block too)
    service = ConsentService(
        h.runtime.repository, h.runtime.registry, Eip712SignatureVerifier(), lambda: float(t)
    )
    actor = Actor(patient.account_id, "patient", "token-1")

    def signed(expires_at: int) -> Signed:
        body = h.grant_body(patient, provider.address, expires_at=expires_at)
        message: dict[str, Any] = body["message"]
        return Signed(GrantMessage(**message), bytes.fromhex(body["signature"][2:]))

    nonce = h.nonce(patient)
    with pytest.raises(ExpiryTooFar):
        await asyncio.to_thread(service.grant, signed(t + H + 1), actor)
    with pytest.raises(MessageExpired):
        await asyncio.to_thread(service.grant, signed(t), actor)
    assert h.nonce(patient) == nonce

    stored = await asyncio.to_thread(service.grant, signed(t + H), actor)

    assert stored.expires_at == t + H
    assert h.nonce(patient) == nonce + 1


# -- why a check says no ----------------------------------------------------------------


async def _reason(h: Harness, patient: Party, grantee: Party, category: int) -> dict[str, Any]:
    response = await h.client.get(
        "/consent/check",
        params={
            "patient": patient.account_id,
            "grantee": grantee.account_id,
            "category": category,
            "purpose": sdk.TREATMENT,
        },
        headers=h.headers("record-store", "service"),
    )
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    assert answer["authorised"] == (answer["reason"] == "granted")
    return answer


async def _grant(h: Harness, patient: Party, grantee: Party, categories: int, **kw: Any) -> None:
    body = h.grant_body(patient, grantee.address, categories=categories, **kw)
    response = await h.client.post("/consent/grants", json=body, headers=h.headers(patient))
    assert response.status_code == 201, response.text


async def test_a_check_says_why(consent: Harness) -> None:
    h = consent
    patient, provider = await parties(h)
    stranger = await h.register("provider")
    labs, imaging, notes = sdk.LABS, sdk.IMAGING, sdk.NOTES

    assert (await _reason(h, patient, provider, labs))["reason"] == "no_grant"
    await _grant(h, patient, provider, labs | imaging)
    answer = await _reason(h, patient, provider, labs)
    assert (answer["reason"], answer["authorised"]) == ("granted", True)
    assert answer["grant_id"] is not None
    assert (await _reason(h, patient, provider, notes))["reason"] == "no_grant"
    assert (await _reason(h, patient, stranger, labs))["reason"] == "no_grant"

    body = h.revoke_body(patient, provider.address, categories=labs)
    response = await h.client.post("/consent/revocations", json=body, headers=h.headers(patient))
    assert response.status_code == 200, response.text
    answer = await _reason(h, patient, provider, labs)
    assert (answer["reason"], answer["authorised"], answer["grant_id"]) == ("revoked", False, None)
    assert (await _reason(h, patient, provider, imaging))["reason"] == "granted"

    # A later grant without a category takes it back too; a new one is not "revoked".
    await _grant(h, patient, provider, notes)
    assert (await _reason(h, patient, provider, imaging))["reason"] == "revoked"
    assert (await _reason(h, patient, provider, notes))["reason"] == "granted"
    assert (await _reason(h, patient, provider, sdk.MEDICATIONS))["reason"] == "no_grant"
    # Granted again, a revoked category is granted (and no longer "revoked").
    await _grant(h, patient, provider, labs | notes)
    assert (await _reason(h, patient, provider, labs))["reason"] == "granted"


async def test_a_check_says_expired_once_the_grant_ended(consent: Harness) -> None:
    h = consent
    patient, provider = await parties(h)
    ends = int(h.chain_time()) + 15
    await _grant(h, patient, provider, sdk.LABS, expires_at=ends)
    deadline = time.monotonic() + 60
    while (answer := await _reason(h, patient, provider, sdk.LABS))["reason"] == "granted":
        assert time.monotonic() < deadline, "the grant never expired"
        await asyncio.sleep(0.5)
    assert answer["reason"] == "expired"
    assert time.time() >= ends
    assert (await _reason(h, patient, provider, sdk.IMAGING))["reason"] == "no_grant"
