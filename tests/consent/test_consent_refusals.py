"""Bad input gets a clear 4xx JSON error and changes nothing: no projection row, and the
patient's nonce on chain is unchanged. A signed message refused for a rule of the registry
(signature, nonce, deadline, expiry) is announced as one ``ehr.consent.rejected.v1``
event; any other refusal writes nothing at all. One table, both backends."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from consent.harness import Harness, Party, TokenKey
from ehr.consent.v1 import consent_pb2
from ehr.vocabulary.v1 import vocabulary_pb2
from eth_account import Account

from services.consent.adapters.eip712 import Eip712SignatureVerifier
from services.consent.domain.errors import RejectedByChain
from services.consent.domain.events import Actor as ConsentActor
from services.consent.domain.model import GrantMessage, Signed
from services.consent.domain.service import ConsentService
from services.platform.events.vocabulary import mask_of

Request = Callable[[Harness, Party, Party], Awaitable[httpx.Response]]


WRONG_SIGNER = "ConsentRegistry__WrongSigner"
MALFORMED = "ConsentRegistry__MalformedSignature"
INVALID_NONCE = "ConsentRegistry__InvalidNonce"
REJECTED = "ehr.consent.rejected.v1"


@dataclass(frozen=True)
class Case:
    name: str
    status: int
    code: str
    send: Request
    # The registry error names a ConsentRejected event may carry; () = no event.
    announced: tuple[str, ...] = ()
    kind: int = consent_pb2.CONSENT_MESSAGE_KIND_GRANT
    # The categories mask of the message as sent.
    categories: int = 1


async def _grant(h: Harness, body: Any, headers: dict[str, str]) -> httpx.Response:
    return await h.client.post("/consent/grants", json=body, headers=headers)


async def malformed_json(h: Harness, p: Party, g: Party) -> httpx.Response:
    return await h.client.post(
        "/consent/grants",
        content=b'{"message": {',
        headers={**h.headers(p), "Content-Type": "application/json"},
    )


async def missing_field(h: Harness, p: Party, g: Party) -> httpx.Response:
    body = h.grant_body(p, g.address)
    del body["message"]["deadline"]
    return await _grant(h, body, h.headers(p))


async def undefined_category(h: Harness, p: Party, g: Party) -> httpx.Response:
    body = h.grant_body(p, g.address)
    body["message"]["categories"] = 64
    return await _grant(h, body, h.headers(p))


async def short_signature(h: Harness, p: Party, g: Party) -> httpx.Response:
    body = h.grant_body(p, g.address)
    body["signature"] = body["signature"][:-2]
    return await _grant(h, body, h.headers(p))


async def tampered_message(h: Harness, p: Party, g: Party) -> httpx.Response:
    body = h.grant_body(p, g.address)
    body["message"]["categories"] = 31  # signed for LABS only
    return await _grant(h, body, h.headers(p))


async def garbage_signature(h: Harness, p: Party, g: Party) -> httpx.Response:
    body = h.grant_body(p, g.address)
    body["signature"] = "0x" + "11" * 64 + "1b"
    return await _grant(h, body, h.headers(p))


async def signed_by_another_key(h: Harness, p: Party, g: Party) -> httpx.Response:
    return await _grant(h, h.grant_body(p, g.address, signer=Account.create()), h.headers(p))


async def replayed_nonce(h: Harness, p: Party, g: Party) -> httpx.Response:
    return await _grant(h, h.grant_body(p, g.address, nonce=h.nonce(p) - 1), h.headers(p))


async def future_nonce(h: Harness, p: Party, g: Party) -> httpx.Response:
    return await _grant(h, h.grant_body(p, g.address, nonce=h.nonce(p) + 5), h.headers(p))


async def expired_deadline(h: Harness, p: Party, g: Party) -> httpx.Response:
    past = int(time.time()) - 60
    return await _grant(h, h.grant_body(p, g.address, deadline=past), h.headers(p))


async def expiry_in_the_past(h: Harness, p: Party, g: Party) -> httpx.Response:
    past = int(time.time()) - 60
    return await _grant(h, h.grant_body(p, g.address, expires_at=past), h.headers(p))


async def unknown_grantee(h: Harness, p: Party, g: Party) -> httpx.Response:
    return await _grant(h, h.grant_body(p, Account.create().address), h.headers(p))


async def zero_grantee(h: Harness, p: Party, g: Party) -> httpx.Response:
    body = h.grant_body(p, g.address)
    body["message"]["grantee"] = "0x" + "00" * 20
    return await _grant(h, body, h.headers(p))


async def unknown_patient_account(h: Harness, p: Party, g: Party) -> httpx.Response:
    return await _grant(h, h.grant_body(p, g.address), h.headers("nobody", "patient"))


async def provider_role(h: Harness, p: Party, g: Party) -> httpx.Response:
    return await _grant(h, h.grant_body(p, g.address), h.headers(p, "provider"))


async def another_patients_message(h: Harness, p: Party, g: Party) -> httpx.Response:
    other = await h.register("patient")
    return await _grant(h, h.grant_body(p, g.address), h.headers(other))


async def another_patients_grants(h: Harness, p: Party, g: Party) -> httpx.Response:
    other = await h.register("patient")
    return await h.client.get(f"/consent/patients/{p.account_id}/grants", headers=h.headers(other))


async def another_grantees_grants(h: Harness, p: Party, g: Party) -> httpx.Response:
    return await h.client.get(f"/consent/grantees/{g.account_id}/grants", headers=h.headers(p))


async def check_by_provider(h: Harness, p: Party, g: Party) -> httpx.Response:
    params = {"patient": p.account_id, "grantee": g.account_id, "category": 1, "purpose": 1}
    return await h.client.get("/consent/check", params=params, headers=h.headers(g))


async def check_of_another_patient(h: Harness, p: Party, g: Party) -> httpx.Response:
    other = await h.register("patient")
    params = {"patient": p.account_id, "grantee": g.account_id, "category": 1, "purpose": 1}
    return await h.client.get("/consent/check", params=params, headers=h.headers(other))


async def no_token(h: Harness, p: Party, g: Party) -> httpx.Response:
    return await h.client.post("/consent/grants", json=h.grant_body(p, g.address))


async def alg_none_token(h: Harness, p: Party, g: Party) -> httpx.Response:
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    now = int(time.time())
    claims = {
        "iss": "ehr-identity-test",
        "aud": "consent",
        "sub": p.account_id,
        "role": "patient",
        "iat": now,
        "exp": now + 600,
    }
    token = f"{part({'alg': 'none', 'typ': 'JWT', 'kid': h.keys.kid})}.{part(claims)}."
    headers = {"Authorization": f"Bearer {token}"}
    return await _grant(h, h.grant_body(p, g.address), headers)


async def wrong_key_token(h: Harness, p: Party, g: Party) -> httpx.Response:
    impostor = TokenKey(kid=h.keys.kid)
    headers = {"Authorization": f"Bearer {impostor.token(p.account_id, 'patient')}"}
    return await _grant(h, h.grant_body(p, g.address), headers)


async def expired_token(h: Harness, p: Party, g: Party) -> httpx.Response:
    old = int(time.time()) - 3600
    return await _grant(h, h.grant_body(p, g.address), h.headers(p, iat=old, exp=old + 60))


async def wrong_audience_token(h: Harness, p: Party, g: Party) -> httpx.Response:
    return await _grant(h, h.grant_body(p, g.address), h.headers(p, aud="record-store"))


async def revoke_signed_by_another_key(h: Harness, p: Party, g: Party) -> httpx.Response:
    body = h.revoke_body(p, g.address)
    forged = h.grant_body(p, g.address, signer=Account.create())["signature"]
    body["signature"] = forged
    return await h.client.post("/consent/revocations", json=body, headers=h.headers(p))


CASES = [
    Case("malformed json", 400, "malformed_json", malformed_json),
    Case("missing field", 422, "validation_failed", missing_field),
    Case("undefined category bit", 422, "validation_failed", undefined_category),
    Case("signature of 64 bytes", 422, "validation_failed", short_signature),
    Case(
        "message changed after signing",
        422,
        "bad_signature",
        tampered_message,
        (WRONG_SIGNER,),
        categories=31,
    ),
    Case(
        "signature that does not recover",
        422,
        "bad_signature",
        garbage_signature,
        (MALFORMED, WRONG_SIGNER),
    ),
    Case("signature by another key", 422, "bad_signature", signed_by_another_key, (WRONG_SIGNER,)),
    Case("replayed nonce", 409, "nonce_mismatch", replayed_nonce, (INVALID_NONCE,)),
    Case("nonce from the future", 409, "nonce_mismatch", future_nonce, (INVALID_NONCE,)),
    Case(
        "expired deadline",
        422,
        "message_expired",
        expired_deadline,
        ("ConsentRegistry__SignatureExpired",),
    ),
    Case(
        "expiry in the past",
        422,
        "message_expired",
        expiry_in_the_past,
        ("ConsentRegistry__InvalidExpiry",),
    ),
    Case("unknown grantee", 404, "unknown_account", unknown_grantee),
    Case("zero grantee", 422, "invalid_message", zero_grantee),
    Case("caller is no known account", 404, "unknown_account", unknown_patient_account),
    Case("wrong role", 403, "role_not_allowed", provider_role),
    Case("another patient's message", 403, "not_own_consent", another_patients_message),
    Case("another patient's grants", 403, "not_own_consent", another_patients_grants),
    Case("another grantee's grants", 403, "not_own_consent", another_grantees_grants),
    Case("check by a provider", 403, "role_not_allowed", check_by_provider),
    Case("check of another patient", 403, "not_own_consent", check_of_another_patient),
    Case("no token", 401, "missing_token", no_token),
    Case("alg=none token", 401, "invalid_token", alg_none_token),
    Case("token signed by another key", 401, "invalid_token", wrong_key_token),
    Case("expired token", 401, "token_expired", expired_token),
    Case("token for another audience", 401, "invalid_token", wrong_audience_token),
    Case(
        "revocation signed by another key",
        422,
        "bad_signature",
        revoke_signed_by_another_key,
        (WRONG_SIGNER,),
        consent_pb2.CONSENT_MESSAGE_KIND_REVOKE,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_refused_with_a_clear_error_and_nothing_written(consent: Harness, case: Case) -> None:
    h = consent
    patient, provider = await h.register("patient"), await h.register("provider")
    # A grant exists already, so the patient's nonce is past 0 (a replay is possible).
    first = await h.client.post(
        "/consent/grants", json=h.grant_body(patient, provider.address), headers=h.headers(patient)
    )
    assert first.status_code == 201, first.text
    nonce, written = h.nonce(patient), h.written()

    response = await case.send(h, patient, provider)

    assert response.status_code == case.status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == case.code
    assert error["message"] and error["request_id"]
    rows, outbox = h.written()
    announced = 1 if case.announced else 0
    assert (rows, outbox) == (written[0], written[1] + announced), "unexpected writes"
    assert h.nonce(patient) == nonce, "a refused request consumed the patient's nonce"
    if case.announced:
        rejected = await h.wait_matching(REJECTED, lambda r: r.patient_id == patient.account_id)
        assert isinstance(rejected, consent_pb2.ConsentRejected)
        assert rejected.error_name in case.announced
        assert rejected.refusal_code == case.code
        assert rejected.refused_by == consent_pb2.REFUSED_BY_SERVICE
        assert rejected.kind == case.kind
        assert rejected.patient_address == patient.address
        assert rejected.scope.grantee_address == provider.address
        assert rejected.scope.grantee_id == provider.account_id
        assert mask_of(rejected.scope.categories) == case.categories
        assert rejected.scope.purpose == vocabulary_pb2.PURPOSE_OF_USE_TREATMENT
        assert len(rejected.message_digest) == 32


async def test_refused_signatures_are_recorded_as_rejections(consent: Harness) -> None:
    h = consent
    patient, provider = await h.register("patient"), await h.register("provider")
    body = h.grant_body(patient, provider.address, signer=Account.create())
    response = await h.client.post("/consent/grants", json=body, headers=h.headers(patient))
    assert response.status_code == 422
    replay = h.grant_body(patient, provider.address, nonce=h.nonce(patient) + 1)
    response = await h.client.post("/consent/grants", json=replay, headers=h.headers(patient))
    assert response.status_code == 409
    assert h.runtime.repository.rejections(patient.address) == [
        ("grant", WRONG_SIGNER),
        ("grant", INVALID_NONCE),
    ]
    await h.wait_matching(
        REJECTED, lambda r: r.patient_id == patient.account_id and r.error_name == INVALID_NONCE
    )
    announced = h.payloads_seen(REJECTED, lambda r: r.patient_id == patient.account_id)
    assert [(r.error_name, r.nonce) for r in announced] == [
        (WRONG_SIGNER, replay["message"]["nonce"] - 1),
        (INVALID_NONCE, replay["message"]["nonce"]),
    ]


class _TrustingVerifier:
    """A verifier that takes every signature for the patient's, so that a forged
    signature passes the service's pre-check and reaches the registry itself."""

    def digest(self, signed: Signed, chain_id: int, contract: str) -> bytes:
        return Eip712SignatureVerifier().digest(signed, chain_id, contract)

    def signer(self, signed: Signed, chain_id: int, contract: str) -> str | None:
        return signed.message.patient


async def test_a_signature_the_registry_refused_is_announced(consent: Harness) -> None:
    h = consent
    patient, provider = await h.register("patient"), await h.register("provider")
    body = h.grant_body(patient, provider.address, signer=Account.create())
    service = ConsentService(
        h.runtime.repository, h.runtime.registry, _TrustingVerifier(), time.time
    )
    signed = Signed(GrantMessage(**body["message"]), bytes.fromhex(body["signature"][2:]))
    actor = ConsentActor(patient.account_id, "patient", "token-1")
    nonce = h.nonce(patient)
    with pytest.raises(RejectedByChain) as refused:
        await asyncio.to_thread(service.grant, signed, actor)
    assert refused.value.error_name == WRONG_SIGNER
    assert h.nonce(patient) == nonce

    rejected = await h.wait_matching(REJECTED, lambda r: r.patient_id == patient.account_id)
    assert rejected.refused_by == consent_pb2.REFUSED_BY_REGISTRY
    assert rejected.error_name == WRONG_SIGNER
    assert rejected.refusal_code == "rejected_by_chain"
    assert rejected.kind == consent_pb2.CONSENT_MESSAGE_KIND_GRANT
    assert rejected.nonce == nonce
    assert rejected.scope.HasField("expires_at")
    assert h.runtime.repository.rejections(patient.address) == [("grant", WRONG_SIGNER)]
