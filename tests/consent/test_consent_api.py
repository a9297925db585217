"""The consent API on the embedded default and on the real stack (same code, same tests).

The expiry test comes first on purpose: the in-process chain's block time runs one
second ahead per block, so its drift is smallest at the start of the module.
"""

from __future__ import annotations

import time

from consent.harness import Harness
from ehr.consent.v1 import consent_pb2
from ehr.vocabulary.v1 import vocabulary_pb2
from ehr_client import consent as sdk

GRANTED = "ehr.consent.granted.v1"
REVOKED = "ehr.consent.revoked.v1"
EXPIRED = "ehr.consent.expired.v1"


async def _check(h: Harness, patient: str, grantee: str, category: int, purpose: int) -> bool:
    response = await h.client.get(
        "/consent/check",
        params={"patient": patient, "grantee": grantee, "category": category, "purpose": purpose},
        headers=h.headers("record-store", "service"),
    )
    assert response.status_code == 200, response.text
    return bool(response.json()["authorised"])


async def test_a_grant_that_expires_stops_authorising_on_time(consent: Harness) -> None:
    h = consent
    patient, provider = await h.register("patient"), await h.register("provider")
    expires_at = int(h.chain_time()) + 4
    body = h.grant_body(patient, provider.address, expires_at=expires_at)
    response = await h.client.post("/consent/grants", json=body, headers=h.headers(patient))
    assert response.status_code == 201, response.text
    grant_id = response.json()["grant_id"]
    assert time.time() < expires_at
    assert await _check(h, patient.account_id, provider.account_id, sdk.LABS, sdk.TREATMENT)

    # Poll until the expiry instant; the first check at or after it must say no.
    while time.time() < expires_at:
        before = time.time()
        allowed = await _check(h, patient.account_id, provider.account_id, sdk.LABS, 1)
        if before >= expires_at - 0.05:
            break
        assert allowed, "the grant stopped authorising before its expiry"
    while time.time() < expires_at:
        await _check(h, patient.account_id, provider.account_id, sdk.LABS, 1)
    assert not await _check(h, patient.account_id, provider.account_id, sdk.LABS, 1)

    expired = await h.wait_event(EXPIRED, grant_id)
    assert isinstance(expired, consent_pb2.ConsentExpired)
    assert expired.patient_id == patient.account_id
    listed = await h.client.get(
        f"/consent/patients/{patient.account_id}/grants", headers=h.headers(patient)
    )
    assert listed.status_code == 200 and listed.json() == []


async def test_grant_then_revoke_on_chain_projection_and_bus(consent: Harness) -> None:
    h = consent
    patient, provider = await h.register("patient"), await h.register("provider")
    categories = sdk.LABS | sdk.IMAGING
    nonce = h.nonce(patient)
    body = h.grant_body(patient, provider.address, categories=categories)
    response = await h.client.post("/consent/grants", json=body, headers=h.headers(patient))
    assert response.status_code == 201, response.text
    view = response.json()
    grant_id = view["grant_id"]
    assert view["categories"] == categories and view["active"] is True
    assert h.nonce(patient) == nonce + 1

    registry = h.runtime.registry
    assert registry.is_authorised(patient.address, provider.address, sdk.IMAGING, 1)
    assert await _check(h, patient.account_id, provider.account_id, sdk.IMAGING, 1)
    assert await _check(h, patient.address, provider.address, sdk.LABS, 1)
    assert not await _check(h, patient.account_id, provider.account_id, sdk.NOTES, 1)
    assert not await _check(h, patient.account_id, provider.account_id, sdk.LABS, sdk.PAYMENT)

    granted = await h.wait_event(GRANTED, grant_id)
    assert isinstance(granted, consent_pb2.ConsentGranted)
    assert granted.patient_id == patient.account_id
    assert granted.scope.grantee_id == provider.account_id
    assert list(granted.scope.categories) == [
        vocabulary_pb2.RECORD_CATEGORY_LABORATORY,
        vocabulary_pb2.RECORD_CATEGORY_IMAGING,
    ]
    assert granted.scope.purpose == vocabulary_pb2.PURPOSE_OF_USE_TREATMENT
    assert granted.receipt.transaction_hash == view["receipt"]["transaction_hash"]
    assert granted.nonce == nonce and len(granted.message_digest) == 32

    own = await h.client.get(
        f"/consent/patients/{patient.account_id}/grants", headers=h.headers(patient)
    )
    assert [g["grant_id"] for g in own.json()] == [grant_id]
    named = await h.client.get(
        f"/consent/grantees/{provider.account_id}/grants", headers=h.headers(provider)
    )
    assert [g["grant_id"] for g in named.json()] == [grant_id]

    body = h.revoke_body(patient, provider.address, categories=categories)
    response = await h.client.post("/consent/revocations", json=body, headers=h.headers(patient))
    assert response.status_code == 200, response.text
    assert response.json()["categories"] == 0
    assert not registry.is_authorised(patient.address, provider.address, sdk.IMAGING, 1)
    assert not await _check(h, patient.account_id, provider.account_id, sdk.IMAGING, 1)
    assert not await _check(h, patient.account_id, provider.account_id, sdk.LABS, 1)
    revoked = await h.wait_event(REVOKED, grant_id)
    assert isinstance(revoked, consent_pb2.ConsentRevoked)
    assert revoked.HasField("effective_at")
    assert list(revoked.scope.categories) == list(granted.scope.categories)
    assert list(revoked.remaining_categories) == []
    # One event per change, whatever the number of categories (same partition: in order).
    about = lambda p: p.grant_id == grant_id  # noqa: E731
    assert len(h.payloads_seen(GRANTED, about)) == 1
    assert len(h.payloads_seen(REVOKED, about)) == 1


async def test_one_event_per_change_carries_every_category_and_the_contract_purpose(
    consent: Harness,
) -> None:
    h = consent
    patient, researcher = await h.register("patient"), await h.register("provider")
    categories = sdk.LABS | sdk.NOTES | sdk.MENTAL_HEALTH
    body = h.grant_body(patient, researcher.address, categories=categories, purpose=4)
    response = await h.client.post("/consent/grants", json=body, headers=h.headers(patient))
    assert response.status_code == 201, response.text
    grant_id = response.json()["grant_id"]
    # Purpose id 4 on chain is research, in the contract and in the event.
    assert h.runtime.registry.is_authorised(patient.address, researcher.address, sdk.NOTES, 4)
    granted = await h.wait_event(GRANTED, grant_id)
    assert granted.scope.purpose == vocabulary_pb2.PURPOSE_OF_USE_RESEARCH == 4
    assert list(granted.scope.categories) == [
        vocabulary_pb2.RECORD_CATEGORY_LABORATORY,
        vocabulary_pb2.RECORD_CATEGORY_NOTES,
        vocabulary_pb2.RECORD_CATEGORY_MENTAL_HEALTH,
    ]

    body = h.revoke_body(
        patient, researcher.address, categories=sdk.NOTES | sdk.MENTAL_HEALTH, purpose=4
    )
    response = await h.client.post("/consent/revocations", json=body, headers=h.headers(patient))
    assert response.status_code == 200, response.text
    assert response.json()["categories"] == sdk.LABS
    revoked = await h.wait_event(REVOKED, grant_id)
    assert list(revoked.scope.categories) == [
        vocabulary_pb2.RECORD_CATEGORY_NOTES,
        vocabulary_pb2.RECORD_CATEGORY_MENTAL_HEALTH,
    ]
    assert list(revoked.remaining_categories) == [vocabulary_pb2.RECORD_CATEGORY_LABORATORY]
    assert revoked.scope.purpose == vocabulary_pb2.PURPOSE_OF_USE_RESEARCH
    about = lambda p: p.grant_id == grant_id  # noqa: E731
    assert len(h.payloads_seen(GRANTED, about)) == 1
    assert len(h.payloads_seen(REVOKED, about)) == 1


async def test_revocation_is_effective_for_every_check_started_after_it_returned(
    consent: Harness,
) -> None:
    h = consent
    patient, provider = await h.register("patient"), await h.register("provider")
    rounds = 12 if h.name == "embedded" else 6
    for _ in range(rounds):
        body = h.grant_body(patient, provider.address)
        granted = await h.client.post("/consent/grants", json=body, headers=h.headers(patient))
        assert granted.status_code == 201, granted.text
        assert await _check(h, patient.account_id, provider.account_id, sdk.LABS, 1)
        body = h.revoke_body(patient, provider.address)
        revoked = await h.client.post("/consent/revocations", json=body, headers=h.headers(patient))
        assert revoked.status_code == 200, revoked.text
        # Started strictly after the revoke returned: must already be refused.
        assert not await _check(h, patient.account_id, provider.account_id, sdk.LABS, 1)


async def test_check_names_the_grant_and_services_list_the_authorised_grantees(
    consent: Harness,
) -> None:
    h = consent
    patient = await h.register("patient")
    labs_reader, notes_reader, researcher = (
        await h.register("provider"),
        await h.register("provider"),
        await h.register("provider"),
    )
    ids = {}
    for grantee, categories, purpose in (
        (labs_reader, sdk.LABS | sdk.IMAGING, sdk.TREATMENT),
        (notes_reader, sdk.NOTES, sdk.TREATMENT),
        (researcher, sdk.LABS, sdk.RESEARCH),
    ):
        body = h.grant_body(patient, grantee.address, categories=categories, purpose=purpose)
        response = await h.client.post("/consent/grants", json=body, headers=h.headers(patient))
        assert response.status_code == 201, response.text
        ids[grantee.account_id] = response.json()["grant_id"]

    params = {"patient": patient.account_id, "grantee": labs_reader.account_id, "purpose": 1}
    service = h.headers("record-store", "service")
    checked = await h.client.get(
        "/consent/check", params={**params, "category": sdk.IMAGING}, headers=service
    )
    assert checked.json()["authorised"] is True
    assert checked.json()["grant_id"] == ids[labs_reader.account_id]
    refused = await h.client.get(
        "/consent/check", params={**params, "category": sdk.NOTES}, headers=service
    )
    assert refused.json()["authorised"] is False and refused.json()["grant_id"] is None

    async def grantees(query: dict[str, int]) -> list[tuple[str, str]]:
        response = await h.client.get(
            f"/consent/patients/{patient.account_id}/grantees", params=query, headers=service
        )
        assert response.status_code == 200, response.text
        return sorted((g["grantee_id"], g["grant_id"]) for g in response.json())

    labs_any = sorted((p.account_id, ids[p.account_id]) for p in (labs_reader, researcher))
    assert await grantees({"category": sdk.LABS}) == labs_any
    assert await grantees({"category": sdk.LABS, "purpose": sdk.TREATMENT}) == [
        (labs_reader.account_id, ids[labs_reader.account_id])
    ]
    assert await grantees({"category": sdk.NOTES}) == [
        (notes_reader.account_id, ids[notes_reader.account_id])
    ]
    assert await grantees({"category": sdk.MEDICATIONS}) == []

    body = h.revoke_body(patient, researcher.address, categories=sdk.LABS, purpose=sdk.RESEARCH)
    response = await h.client.post("/consent/revocations", json=body, headers=h.headers(patient))
    assert response.status_code == 200, response.text
    assert await grantees({"category": sdk.LABS}) == [
        (labs_reader.account_id, ids[labs_reader.account_id])
    ]
    # only a service lists grantees: not the patient, not a provider
    for party in (patient, labs_reader):
        response = await h.client.get(
            f"/consent/patients/{patient.account_id}/grantees",
            params={"category": sdk.LABS},
            headers=h.headers(party),
        )
        assert response.status_code == 403, response.text
        assert response.json()["error"]["code"] == "role_not_allowed"


async def test_a_grant_relayed_by_someone_else_reaches_the_projection(consent: Harness) -> None:
    h = consent
    patient, provider = await h.register("patient"), await h.register("provider")
    body = h.grant_body(patient, provider.address, categories=sdk.NOTES)
    m = body["message"]
    other = h.runtime.chain.new_account(10**18)
    h.runtime.chain.transact(
        h.runtime.registry._ref,
        "grant",
        m["patient"],
        m["grantee"],
        m["categories"],
        m["purpose"],
        m["expires_at"],
        m["nonce"],
        m["deadline"],
        bytes.fromhex(body["signature"][2:]),
        sender=other,
    )
    deadline = time.monotonic() + 30
    while not await _check(h, patient.account_id, provider.account_id, sdk.NOTES, 1):
        assert time.monotonic() < deadline, "the reconciler did not apply the foreign grant"


async def test_the_openapi_document_describes_every_route(consent: Harness) -> None:
    response = await consent.client.get("/openapi.json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    for path in (
        "/consent/grants",
        "/consent/revocations",
        "/consent/check",
        "/consent/registry",
        "/consent/patients/{patient_id}/grants",
        "/consent/patients/{patient_id}/nonce",
        "/consent/grantees/{grantee_id}/grants",
    ):
        assert path in paths, path
