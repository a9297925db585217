"""Every record action and every read, allowed or denied, is an event: read off the bus
(embedded log or Kafka) with a fresh consumer and decoded with the envelope codec."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import pytest
from ehr.access.v1 import access_pb2
from ehr.envelope.v1 import envelope_pb2
from ehr.records.v1 import records_pb2
from ehr.vocabulary.v1 import vocabulary_pb2
from ehr_client.records import ESCROW_HOLDER, LABS_BIT, RecordsClientError
from google.protobuf.message import Message
from record_store.conftest import Deployment
from record_store.test_records_flow import observation

from services.platform.events import envelope as codec
from services.platform.events.topics import RECORDS_ACCESS, RECORDS_RECORDS

TREATMENT, OWN = 1, 6
M = TypeVar("M", bound=Message)


def _types(seen: list[envelope_pb2.Envelope]) -> list[str]:
    return [e.type for e in seen]


def _count_at_least(n: int) -> Callable[[list[envelope_pb2.Envelope]], bool]:
    return lambda seen: len(seen) >= n


def _payloads(seen: list[envelope_pb2.Envelope], kind: type[M]) -> list[M]:
    name = kind.DESCRIPTOR.full_name
    return [codec.payload(e, kind) for e in seen if e.payload.type_url.endswith(f"/{name}")]


def _refused(call: Callable[[], object], status: int, code: str) -> None:
    with pytest.raises(RecordsClientError) as caught:
        call()
    assert (caught.value.status, caught.value.code) == (status, code), caught.value


def test_record_and_access_events_on_the_bus(deployment: Deployment) -> None:
    author = deployment.user("provider", verified=True)
    other = deployment.user("provider", verified=True)
    patient = deployment.user("patient")

    stored = author.records.upload(
        observation(patient.account_id), patient=patient.recipient, category="labs"
    )
    record_id = stored.record_id
    author.records.amend(
        record_id, observation(patient.account_id, 6.0), patient=patient.recipient, category="labs"
    )
    patient.records.read(record_id, purpose=OWN)  # read, basis owner
    _refused(lambda: other.records.read(record_id, purpose=TREATMENT), 403, "no_grant")
    grant_id = deployment.grant(patient, other, LABS_BIT)["grant_id"]
    # authorised, but the patient's client has not wrapped the keys for the grantee yet
    _refused(lambda: other.records.read(record_id, purpose=TREATMENT), 409, "key_not_available")
    assert patient.records.share(other.recipient, categories=LABS_BIT) == 2
    other.records.read(record_id, purpose=TREATMENT)  # read, basis consent
    assert patient.records.unshare(other.account_id, categories=LABS_BIT) == 2
    assert patient.records.rotate(record_id, 2) == 2
    patient.records.shred(record_id)
    _refused(lambda: patient.records.read(record_id, purpose=OWN), 410, "record_shredded")

    # records.records.v1: one partition per patient, so in this order
    records_events = deployment.events(
        [RECORDS_RECORDS.name], patient.account_id, _count_at_least(6)
    )
    assert _types(records_events) == [
        "ehr.records.record_created.v1",
        "ehr.records.record_amended.v1",
        "ehr.records.keys_shared.v1",
        "ehr.records.keys_removed.v1",
        "ehr.records.record_rotated.v1",
        "ehr.records.record_shredded.v1",
    ]
    assert all(e.source == "record-store" for e in records_events)
    (created,) = _payloads(records_events, records_pb2.RecordCreated)
    assert (created.record_id, created.version, created.provider_id) == (
        record_id,
        1,
        author.account_id,
    )
    assert set(created.key_holder_ids) == {patient.account_id, ESCROW_HOLDER}
    assert created.category == vocabulary_pb2.RECORD_CATEGORY_LABORATORY
    assert len(created.ciphertext_sha256) == 32 and created.ciphertext_size > 0
    (amended,) = _payloads(records_events, records_pb2.RecordAmended)
    assert (amended.version, amended.previous_version) == (2, 1)
    (shared,) = _payloads(records_events, records_pb2.RecordKeysShared)
    assert (shared.holder_id, list(shared.record_ids), shared.key_count) == (
        other.account_id,
        [record_id],
        2,
    )
    assert records_events[2].actor.id == patient.account_id
    (removed,) = _payloads(records_events, records_pb2.RecordKeysRemoved)
    assert (removed.holder_id, removed.key_count) == (other.account_id, 2)
    assert list(removed.categories) == [vocabulary_pb2.RECORD_CATEGORY_LABORATORY]
    (rotated,) = _payloads(records_events, records_pb2.RecordRotated)
    assert (rotated.record_id, rotated.version, rotated.key_generation) == (record_id, 2, 2)
    assert set(rotated.key_holder_ids) == {patient.account_id, ESCROW_HOLDER}
    (shredded,) = _payloads(records_events, records_pb2.RecordShredded)
    assert (shredded.record_id, shredded.versions) == (record_id, 2)
    assert shredded.key_count == 4  # patient and escrow copies of both versions

    access_events = deployment.events([RECORDS_ACCESS.name], patient.account_id, _count_at_least(8))
    read, denied = "ehr.access.record_read.v1", "ehr.access.read_denied.v1"
    # the patient's client reads its own keys to share (v1, v2) and to rotate (v2)
    assert _types(access_events) == [read, denied, denied, read, read, read, read, denied]
    reads = _payloads(access_events, access_pb2.RecordRead)
    assert [(r.reader_id, r.basis, r.version) for r in reads] == [
        (patient.account_id, access_pb2.ACCESS_BASIS_OWNER, 2),
        (patient.account_id, access_pb2.ACCESS_BASIS_OWNER, 1),
        (patient.account_id, access_pb2.ACCESS_BASIS_OWNER, 2),
        (other.account_id, access_pb2.ACCESS_BASIS_CONSENT, 2),
        (patient.account_id, access_pb2.ACCESS_BASIS_OWNER, 2),
    ]
    own, by_consent = reads[0], reads[3]
    assert own.purpose == vocabulary_pb2.PURPOSE_OF_USE_PATIENT_REQUEST
    assert by_consent.reader_role == vocabulary_pb2.ROLE_PROVIDER
    assert by_consent.purpose == vocabulary_pb2.PURPOSE_OF_USE_TREATMENT
    assert by_consent.grant_id == grant_id and own.grant_id == ""
    no_grant, no_key, gone = _payloads(access_events, access_pb2.ReadDenied)
    assert (no_grant.reader_id, no_grant.reason) == (
        other.account_id,
        access_pb2.DENIAL_REASON_NO_GRANT,
    )
    assert no_key.reason == access_pb2.DENIAL_REASON_KEY_NOT_WRAPPED
    assert (gone.reader_id, gone.reason) == (
        patient.account_id,
        access_pb2.DENIAL_REASON_RECORD_SHREDDED,
    )
    assert all(d.record_id == record_id for d in (no_grant, no_key, gone))
    assert [e.actor.id for e in access_events[1:3]] == [no_grant.reader_id, no_key.reader_id]
