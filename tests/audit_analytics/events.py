"""Builders of real envelopes (exact bytes) for the audit-analytics tests."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from ehr.access.v1 import access_pb2
from ehr.consent.v1 import consent_pb2
from ehr.identity.v1 import identity_pb2
from ehr.records.v1 import records_pb2
from ehr.vocabulary.v1 import vocabulary_pb2 as v
from google.protobuf.message import Message

from services.platform.events.envelope import Actor, encode, new_envelope, partition_key, topic_of

LAB = v.RECORD_CATEGORY_LABORATORY
TREATMENT = v.PURPOSE_OF_USE_TREATMENT


def _raw(
    payload: Message, source: str, actor: str, role: v.Role.ValueType, at: datetime | None
) -> bytes:
    envelope = new_envelope(
        payload,
        source=source,
        actor=Actor(id=actor, role=role, network_address="10.0.0.7", token_id="jti-1"),
        time=at or datetime.now(UTC),
    )
    return encode(envelope)


def route(raw: bytes) -> tuple[str, str]:
    from services.platform.events.envelope import decode

    envelope = decode(raw)
    return topic_of(envelope).name, partition_key(envelope)


def created(patient: str, provider: str, record: str, at: datetime | None = None) -> bytes:
    payload = records_pb2.RecordCreated(
        record_id=record,
        version=1,
        patient_id=patient,
        provider_id=provider,
        provider_address="0x" + "11" * 20,
        category=LAB,
        ciphertext_sha256=b"\x01" * 32,
        ciphertext_size=100,
        key_holder_ids=[patient, provider],
    )
    return _raw(payload, "record-store", provider, v.ROLE_PROVIDER, at)


def granted(
    patient: str,
    grantee: str,
    grant: str,
    at: datetime | None = None,
    category: v.RecordCategory.ValueType = LAB,
) -> bytes:
    payload = consent_pb2.ConsentGranted(
        grant_id=grant,
        patient_id=patient,
        patient_address="0x" + "22" * 20,
        scope=consent_pb2.GrantScope(
            grantee_id=grantee,
            grantee_address="0x" + "33" * 20,
            categories=[category],
            purpose=TREATMENT,
        ),
        nonce=1,
        message_digest=b"\x02" * 32,
    )
    return _raw(payload, "consent", patient, v.ROLE_PATIENT, at)


def revoked(patient: str, grantee: str, grant: str, at: datetime | None = None) -> bytes:
    payload = consent_pb2.ConsentRevoked(
        grant_id=grant,
        patient_id=patient,
        patient_address="0x" + "22" * 20,
        scope=consent_pb2.GrantScope(
            grantee_id=grantee,
            grantee_address="0x" + "33" * 20,
            categories=[LAB],
            purpose=TREATMENT,
        ),
        nonce=2,
        message_digest=b"\x03" * 32,
    )
    return _raw(payload, "consent", patient, v.ROLE_PATIENT, at)


def read(
    patient: str,
    reader: str,
    record: str,
    at: datetime | None = None,
    *,
    grant: str = "g-1",
    basis: access_pb2.AccessBasis.ValueType = access_pb2.ACCESS_BASIS_CONSENT,
    purpose: v.PurposeOfUse.ValueType = TREATMENT,
    role: v.Role.ValueType = v.ROLE_PROVIDER,
) -> bytes:
    payload = access_pb2.RecordRead(
        record_id=record,
        version=1,
        patient_id=patient,
        reader_id=reader,
        reader_role=role,
        category=LAB,
        purpose=purpose,
        basis=basis,
        grant_id=grant if basis == access_pb2.ACCESS_BASIS_CONSENT else "",
        break_glass_id="bg-x" if basis == access_pb2.ACCESS_BASIS_BREAK_GLASS else "",
    )
    return _raw(payload, "record-store", reader, role, at)


def denied(patient: str, reader: str, record: str, at: datetime | None = None) -> bytes:
    payload = access_pb2.ReadDenied(
        record_id=record,
        patient_id=patient,
        reader_id=reader,
        reader_role=v.ROLE_PROVIDER,
        category=LAB,
        purpose=TREATMENT,
        reason=access_pb2.DENIAL_REASON_NO_GRANT,
        outcome=v.OUTCOME_MINOR_FAILURE,
    )
    return _raw(payload, "record-store", reader, v.ROLE_PROVIDER, at)


def break_glass(
    patient: str, reader: str, justification: str, at: datetime | None = None, bg: str = ""
) -> bytes:
    payload = access_pb2.BreakGlassUsed(
        break_glass_id=bg or f"bg-{uuid.uuid4().hex[:8]}",
        patient_id=patient,
        reader_id=reader,
        reader_role=v.ROLE_PROVIDER,
        categories=[LAB],
        justification=justification,
    )
    return _raw(payload, "record-store", reader, v.ROLE_PROVIDER, at)


def login_failed(account: str, at: datetime | None = None) -> bytes:
    payload = identity_pb2.LoginFailed(
        account_id=account,
        reason=identity_pb2.LOGIN_FAILURE_REASON_BAD_SIGNATURE,
        outcome=v.OUTCOME_MINOR_FAILURE,
        consecutive_failures=1,
    )
    return _raw(payload, "identity", account, v.ROLE_PROVIDER, at)


def login_ok(account: str, at: datetime | None = None) -> bytes:
    payload = identity_pb2.LoginSucceeded(
        account_id=account, role=v.ROLE_PROVIDER, session_id="s-1", token_id="jti-1"
    )
    return _raw(payload, "identity", account, v.ROLE_PROVIDER, at)


def workflow(n_patients: int = 3, at: datetime | None = None) -> list[bytes]:
    """A small realistic mix of every context's events."""
    out: list[bytes] = []
    for i in range(n_patients):
        patient, provider = f"pat-{i}", f"prov-{i % 2}"
        out += [
            login_ok(provider, at),
            created(patient, provider, f"rec-{i}", at),
            granted(patient, provider, f"g-{i}", at),
            read(patient, provider, f"rec-{i}", at, grant=f"g-{i}"),
            denied(patient, "prov-9", f"rec-{i}", at),
        ]
    out += [break_glass("pat-0", "prov-1", "", at), login_failed("prov-9", at)]
    return out
