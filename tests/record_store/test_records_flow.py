"""The issue's done-when flow through the SDK on both backends: upload as a verified
provider, read as the patient, refused to an unauthorised provider, allowed after a
grant (keys wrapped by the patient's client), refused again right after revocation;
then amendment with provenance, rotation, break-glass and crypto-shredding."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from ehr_client import crypto
from ehr_client.records import (
    LABS_BIT,
    NOTES_BIT,
    KeyHolderMismatch,
    RecordsClient,
    RecordsClientError,
    wrap_context,
)
from record_store.conftest import Deployment

TREATMENT, EMERGENCY, OWN = 1, 5, 6


def observation(patient_id: str, value: float = 5.4) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": "glucose-1",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]},
        "subject": {"reference": f"Patient/{patient_id}"},
        "effectiveDateTime": "2026-11-20T08:30:00Z",
        "valueQuantity": {"value": value, "unit": "mmol/L"},
    }


def refused(call: Any, status: int, code: str | None = None) -> RecordsClientError:
    with pytest.raises(RecordsClientError) as caught:
        call()
    assert caught.value.status == status, caught.value
    if code is not None:
        assert caught.value.code == code, caught.value
    return caught.value


def test_upload_read_grant_revoke(deployment: Deployment) -> None:
    author = deployment.user("provider", verified=True)
    other = deployment.user("provider", verified=True)
    patient = deployment.user("patient")

    stored = author.records.upload(
        observation(patient.account_id), patient=patient.recipient, category="labs"
    )
    record_id = stored.record_id
    mine = patient.records.read(record_id, purpose=OWN)
    assert mine.resource == observation(patient.account_id)
    assert mine.author_id == author.account_id and mine.basis == "owner"

    refused(lambda: other.records.read(record_id, purpose=TREATMENT), 403, "no_grant")

    deployment.grant(patient, other, LABS_BIT)
    assert patient.records.share(other.recipient, categories=LABS_BIT) == 1
    opened = other.records.read(record_id, purpose=TREATMENT)
    assert opened.resource["valueQuantity"]["value"] == 5.4 and opened.basis == "consent"
    # a grant for labs does not open another purpose
    refused(lambda: other.records.read(record_id, purpose=2), 403, "no_grant")

    # a record uploaded while the grant is active is wrapped for the grantee at upload
    later = author.records.upload(
        observation(patient.account_id, 7.2), patient=patient.recipient, category="labs"
    )
    assert (
        other.records.read(later.record_id, purpose=TREATMENT).resource["valueQuantity"]["value"]
        == 7.2
    )
    # ... but not for another category
    note = author.records.upload(
        observation(patient.account_id), patient=patient.recipient, category="notes"
    )
    refused(lambda: other.records.read(note.record_id, purpose=TREATMENT), 403, "no_grant")

    deployment.revoke(patient, other, LABS_BIT)
    refused(lambda: other.records.read(record_id, purpose=TREATMENT), 403, "grant_revoked")
    refused(lambda: other.records.read(later.record_id, purpose=TREATMENT), 403, "grant_revoked")
    assert patient.records.unshare(other.account_id, categories=LABS_BIT) == 2
    # after the revocation, new uploads are no longer wrapped for the former grantee
    after = author.records.upload(
        observation(patient.account_id), patient=patient.recipient, category="labs"
    )
    holders = author.records.authorised_holders(patient.recipient, "labs")
    assert holders == [] and deployment.records_runtime.repository.key_count(after.record_id) == 2


def test_key_holders_list_every_authorised_grantee(deployment: Deployment) -> None:
    author = deployment.user("provider", verified=True)
    treating, researcher, unrelated = (
        deployment.user("provider", verified=True),
        deployment.user("provider", verified=True),
        deployment.user("provider", verified=True),
    )
    patient = deployment.user("patient")
    first = deployment.grant(patient, treating, LABS_BIT | NOTES_BIT)["grant_id"]
    second = deployment.grant(patient, researcher, LABS_BIT, purpose=4)["grant_id"]
    listed = author.records.call(
        "GET", "/records/key-holders", params={"patient_id": patient.account_id, "category": "labs"}
    )
    assert sorted((g["account_id"], tuple(g["grant_ids"])) for g in listed["grantees"]) == sorted(
        [(treating.account_id, (first,)), (researcher.account_id, (second,))]
    )
    holders = author.records.authorised_holders(patient.recipient, "labs")
    assert {h.account_id for h in holders} == {treating.account_id, researcher.account_id}
    assert unrelated.account_id not in {h.account_id for h in holders}
    stored = author.records.upload(
        observation(patient.account_id), patient=patient.recipient, category="labs"
    )
    opened = researcher.records.read(stored.record_id, purpose=4)
    assert opened.basis == "consent"
    # a wrong key from the directory is refused before anything is sent
    liar = RecordsClient(
        deployment.records_url,
        token=author.session.token("records"),
        keys=author.keys,
        account_id=author.account_id,
        directory=_FixedDirectory(unrelated.keys.public().encryption_key),
    )
    with liar, pytest.raises(KeyHolderMismatch):
        liar.upload(observation(patient.account_id), patient=patient.recipient, category="labs")
    # only providers ask
    refused(
        lambda: patient.records.call(
            "GET",
            "/records/key-holders",
            params={"patient_id": patient.account_id, "category": "labs"},
        ),
        403,
    )


class _FixedDirectory:
    def __init__(self, key: str) -> None:
        self.key = key

    def encryption_key(self, account_id: str) -> str:
        return self.key


def test_versions_provenance_rotation_break_glass_shred(deployment: Deployment) -> None:
    author = deployment.user("provider", verified=True)
    medic = deployment.user("provider", verified=True)
    patient = deployment.user("patient")
    first = author.records.upload(
        observation(patient.account_id), patient=patient.recipient, category="notes"
    )
    second = author.records.amend(
        first.record_id,
        observation(patient.account_id, 6.1),
        patient=patient.recipient,
        category="notes",
    )
    assert second.version == 2
    history = patient.records.history(first.record_id)
    assert [v["version"] for v in history["versions"]] == [1, 2]
    assert {v["provenance"]["author_id"] for v in history["versions"]} == {author.account_id}
    assert (
        patient.records.read(first.record_id, purpose=OWN, version=1).resource["valueQuantity"][
            "value"
        ]
        == 5.4
    )
    assert (
        patient.records.read(first.record_id, purpose=OWN).resource["valueQuantity"]["value"] == 6.1
    )

    # a key released before a rotation no longer opens the record
    old = patient.records.fetch(first.record_id, purpose=OWN, version=2)
    assert patient.records.rotate(first.record_id, 2) == 2
    new = patient.records.fetch(first.record_id, purpose=OWN, version=2)
    old_key = crypto.unwrap_key(
        base64.b64decode(old["wrapped_key"]),
        patient.keys.encryption_private_key,
        context=wrap_context(first.record_id, 2),
    )
    with pytest.raises(crypto.DecryptionFailed):
        crypto.decrypt_record(base64.b64decode(new["ciphertext"]), old_key)
    assert (
        patient.records.read(first.record_id, purpose=OWN).resource["valueQuantity"]["value"] == 6.1
    )

    # break-glass: no consent, an emergency with a justification, time-limited keys
    refused(lambda: medic.records.read(first.record_id, purpose=EMERGENCY), 403)
    refused(lambda: medic.records.break_glass(patient.account_id, "short"), 422)
    declared = medic.records.break_glass(
        patient.account_id, "Unconscious patient in the emergency department", ["notes"]
    )
    assert declared["keys_released"] == 2
    emergency = medic.records.read(first.record_id, purpose=EMERGENCY)
    assert emergency.basis == "break_glass" and emergency.version == 2

    # crypto-shredding: ciphertext and every key gone, hashes and provenance stay
    patient.records.shred(first.record_id)
    assert deployment.records_runtime.repository.key_count(first.record_id) == 0
    refused(lambda: patient.records.read(first.record_id, purpose=OWN), 410, "record_shredded")
    kept = patient.records.history(first.record_id)
    assert kept["record"]["shredded"] and all(v["shredded"] for v in kept["versions"])
    assert kept["versions"][0]["content_sha256"] == history["versions"][0]["content_sha256"]
    assert NOTES_BIT == 8
