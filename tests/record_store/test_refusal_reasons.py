"""A refused request says why, in the answer and in the recorded event.

- A read refused by consent names consent's reason: never granted (``no_grant``),
  revoked (``grant_revoked``), expired (``grant_expired``); the ``ReadDenied`` event on
  the bus carries the matching ``DenialReason``.
- A provider verified before the record store has read the account from identity's
  events is told to retry (503 ``provider_verification_pending`` with ``Retry-After``),
  not that it is "not verified"; an unverified one in the same position is told the
  truth (403 ``provider_not_verified``).
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import sqlalchemy as sa
from ehr.access.v1 import access_pb2
from ehr_client import consent as consent_sdk
from ehr_client.records import LABS_BIT
from record_store.conftest import Deployment, User
from record_store.test_record_events import _payloads, _refused
from record_store.test_records_flow import observation

from services.platform.events.topics import RECORDS_ACCESS
from services.record_store.adapters.sql import accounts

TREATMENT, PAYMENT = 1, 2


def _grant_expiring(deployment: Deployment, patient: User, grantee: User, seconds: int) -> int:
    """A grant of labs for payment that expires ``seconds`` from the chain's now."""
    now = deployment._chain_time()
    message = consent_sdk.GrantMessage(
        patient=patient.keys.address,
        grantee=grantee.keys.address,
        categories=LABS_BIT,
        purpose=PAYMENT,
        expires_at=now + seconds,
        nonce=deployment.consent_runtime.registry.next_nonce(patient.keys.address),
        deadline=now + 3600,
    )
    deployment._consent(patient, "grants", message)
    return now + seconds


def _consent_says(deployment: Deployment, patient: User, reader: User, purpose: int) -> str:
    service = deployment.consent_runtime.service
    reason, _ = service.check_reason(patient.keys.address, reader.keys.address, LABS_BIT, purpose)
    return str(reason)


def test_each_refused_read_names_consents_reason(deployment: Deployment) -> None:
    author = deployment.user("provider", verified=True)
    reader = deployment.user("provider", verified=True)
    patient = deployment.user("patient")
    record_id = author.records.upload(
        observation(patient.account_id), patient=patient.recipient, category="labs"
    ).record_id

    # never granted
    _refused(lambda: reader.records.read(record_id, purpose=TREATMENT), 403, "no_grant")
    # granted, read, then revoked (the keys stay wrapped: consent alone refuses)
    deployment.grant(patient, reader, LABS_BIT, TREATMENT)
    assert patient.records.share(reader.recipient, categories=LABS_BIT) == 1
    assert reader.records.read(record_id, purpose=TREATMENT).basis == "consent"
    deployment.revoke(patient, reader, LABS_BIT, TREATMENT)
    _refused(lambda: reader.records.read(record_id, purpose=TREATMENT), 403, "grant_revoked")
    # granted for a few seconds, then expired
    expires_at = _grant_expiring(deployment, patient, reader, 3)
    deadline = time.monotonic() + 60
    while _consent_says(deployment, patient, reader, PAYMENT) != "expired":
        assert time.monotonic() < deadline, "the grant did not expire"
        time.sleep(0.2)
    assert time.time() >= expires_at - 1
    _refused(lambda: reader.records.read(record_id, purpose=PAYMENT), 403, "grant_expired")

    def three_denials(seen: list[Any]) -> bool:
        return len(_payloads(seen, access_pb2.ReadDenied)) >= 3

    events = deployment.events([RECORDS_ACCESS.name], patient.account_id, three_denials)
    denied = [
        d for d in _payloads(events, access_pb2.ReadDenied) if d.reader_id == reader.account_id
    ]
    assert [(d.reason, d.purpose) for d in denied] == [
        (access_pb2.DENIAL_REASON_NO_GRANT, TREATMENT),
        (access_pb2.DENIAL_REASON_GRANT_REVOKED, TREATMENT),
        (access_pb2.DENIAL_REASON_GRANT_EXPIRED, PAYMENT),
    ]
    assert all(d.record_id == record_id for d in denied)


def _forget(deployment: Deployment, account_id: str) -> Any:
    """Takes the account out of the record store's projection of identity's events, as
    it is between identity's commit and the record store's consumer reading the event;
    returns it for :func:`_remember`."""
    repository = deployment.records_runtime.repository
    account = repository.account(account_id)
    assert account is not None
    with deployment.records_runtime.engine.begin() as connection:
        connection.execute(sa.delete(accounts).where(accounts.c.account_id == account_id))
    assert repository.account(account_id) is None
    return account


def _remember(deployment: Deployment, account: Any) -> None:
    deployment.records_runtime.repository.save_account(account)


def _key_holders(deployment: Deployment, user: User, patient: User) -> httpx.Response:
    return httpx.get(
        f"{deployment.records_url}/records/key-holders",
        params={"patient_id": patient.account_id, "category": "labs"},
        headers={"Authorization": f"Bearer {user.records.token}"},
        timeout=30,
    )


def test_a_provider_verified_before_the_projection_caught_up_is_told_to_retry(
    deployment: Deployment,
) -> None:
    patient = deployment.user("patient")
    verified = deployment.user("provider", verified=True)
    unverified = deployment.user("provider")

    account = _forget(deployment, verified.account_id)
    try:
        pending = _key_holders(deployment, verified, patient)
        assert pending.status_code == 503, pending.text
        assert pending.json()["error"]["code"] == "provider_verification_pending"
        assert int(pending.headers["Retry-After"]) >= 1
        _refused(
            lambda: verified.records.upload(
                observation(patient.account_id), patient=patient.recipient, category="labs"
            ),
            503,
            "provider_verification_pending",
        )
    finally:
        _remember(deployment, account)
    stored = verified.records.upload(
        observation(patient.account_id), patient=patient.recipient, category="labs"
    )
    assert stored.version == 1

    account = _forget(deployment, unverified.account_id)
    try:
        refused = _key_holders(deployment, unverified, patient)
        assert refused.status_code == 403, refused.text
        assert refused.json()["error"]["code"] == "provider_not_verified"
        assert "Retry-After" not in refused.headers
    finally:
        _remember(deployment, account)
