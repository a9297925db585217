"""Refused uploads and reads: each gets a clear 4xx JSON error and writes nothing (a
refused read writes exactly its denied-read event)."""

from __future__ import annotations

import base64
import hashlib
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from ehr_client import crypto
from ehr_client.keys import UserKeys
from ehr_client.records import ESCROW_HOLDER, RecordsClient, RecordsClientError
from record_store.conftest import Deployment, User
from record_store.test_records_flow import observation

from services.platform.bus.outbox import outbox_table
from services.record_store.adapters.sql import keys, records, versions


def counts(deployment: Deployment) -> tuple[int, ...]:
    with deployment.records_runtime.engine.connect() as connection:
        return tuple(
            int(connection.execute(sa.select(sa.func.count()).select_from(t)).scalar_one())
            for t in (records, versions, keys, outbox_table)
        )


def _tamper(body: dict[str, Any]) -> None:
    raw = bytearray(base64.b64decode(body["ciphertext"]))
    raw[-1] ^= 1
    body["ciphertext"] = base64.b64encode(bytes(raw)).decode()


def _wrong_key(body: dict[str, Any]) -> None:
    other = crypto.wrap_key(
        crypto.new_data_key(), UserKeys.generate().public().encryption_key, context=b"elsewhere"
    )
    for entry in body["wrapped_keys"]:
        if entry["holder_id"] == ESCROW_HOLDER:
            entry["wrapped_key"] = base64.b64encode(other).decode()


def _oversized(body: dict[str, Any]) -> None:
    big = b"\0" * (1_048_576 + 4096)
    body["ciphertext"] = base64.b64encode(big).decode()
    body["ciphertext_sha256"] = hashlib.sha256(big).hexdigest()


def _short_key(body: dict[str, Any]) -> None:
    body["wrapped_keys"][0]["wrapped_key"] = base64.b64encode(b"\1" * 10).decode()


CASES: list[tuple[str, Callable[[dict[str, Any]], object], int, str | None]] = [
    ("tampered ciphertext", _tamper, 422, "ciphertext_hash_mismatch"),
    ("wrong wrapped key", _wrong_key, 422, "wrong_wrapped_key"),
    ("malformed wrapped key", _short_key, 422, "malformed_wrapped_key"),
    ("oversized payload", _oversized, 413, "payload_too_large"),
    ("bad provenance", lambda b: b["provenance"].update(signature="0x" + "11" * 65), 422, None),
    ("unknown patient", lambda b: b.update(patient_id="nobody"), 422, None),
    ("not JSON-valid field", lambda b: b.update(category="gossip"), 422, None),
]


@pytest.mark.parametrize(("case", "change", "status", "code"), CASES, ids=[c[0] for c in CASES])
def test_refused_upload_writes_nothing(
    deployment: Deployment,
    case: str,
    change: Callable[[dict[str, Any]], None],
    status: int,
    code: str | None,
) -> None:
    author = deployment.user("provider", verified=True)
    patient = deployment.user("patient")
    body = author.records.build_version(
        observation(patient.account_id),
        record_id=str(uuid.uuid4()),
        version=1,
        patient=patient.recipient,
        category="labs",
    )
    change(body)
    before = counts(deployment)
    with pytest.raises(RecordsClientError) as caught:
        author.records.send_version(body)
    assert caught.value.status == status, caught.value
    if code is not None:
        assert caught.value.code == code
    assert counts(deployment) == before


def _upload_as(uploader: User, patient: User) -> Any:
    return uploader.records.upload(
        observation(patient.account_id), patient=patient.recipient, category="labs"
    )


def test_unverified_uploader_wrong_role_and_replay(deployment: Deployment) -> None:
    patient = deployment.user("patient")
    unverified = deployment.user("provider")
    before = counts(deployment)
    for uploader, status, code in (
        (unverified, 403, "provider_not_verified"),
        (patient, 403, None),
    ):
        with pytest.raises(RecordsClientError) as caught:
            _upload_as(uploader, patient)
        assert caught.value.status == status and (code is None or caught.value.code == code)
    assert counts(deployment) == before

    author = deployment.user("provider", verified=True)
    body = author.records.build_version(
        observation(patient.account_id),
        record_id=str(uuid.uuid4()),
        version=1,
        patient=patient.recipient,
        category="labs",
    )
    author.records.send_version(body)
    after_first = counts(deployment)
    with pytest.raises(RecordsClientError) as caught:
        author.records.send_version(body)
    assert (caught.value.status, caught.value.code) == (409, "record_exists")
    assert counts(deployment) == after_first


def test_auditor_never_receives_ciphertext(deployment: Deployment) -> None:
    patient = deployment.user("patient")
    author = deployment.user("provider", verified=True)
    stored = _upload_as(author, patient)
    auditor_keys = UserKeys.generate()
    account = deployment.identity.register(
        auditor_keys,
        name="Auditor",
        role="auditor",
        admin_token=deployment.admin_session.token("identity"),
    )
    session = deployment.identity.login(auditor_keys)
    with RecordsClient(
        deployment.records_url,
        token=session.token("records"),
        keys=auditor_keys,
        account_id=str(account["account_id"]),
    ) as auditor:
        deployment.wait_known(str(account["account_id"]))
        before = counts(deployment)
        with pytest.raises(RecordsClientError) as caught:
            auditor.fetch(stored.record_id, purpose=3)
        assert caught.value.status == 403
        # exactly the denied-read event was written
        assert counts(deployment)[:3] == before[:3]
        assert counts(deployment)[3] == before[3] + 1
        history = auditor.history(stored.record_id)
        # metadata and hashes only: neither ciphertext nor any wrapped key
        for version in history["versions"]:
            assert not {"ciphertext", "wrapped_key", "wrapped_keys"} & set(version)
