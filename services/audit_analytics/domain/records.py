"""From an event's exact bytes to an AuditEvent-shaped record (events carry no health data)."""

from __future__ import annotations

from typing import Any

from ehr.access.v1 import access_pb2
from ehr.audit.v1 import audit_pb2
from ehr.consent.v1 import consent_pb2
from ehr.identity.v1 import identity_pb2
from ehr.ledger.v1 import ledger_pb2
from ehr.records.v1 import records_pb2
from ehr.vocabulary.v1 import vocabulary_pb2
from google.protobuf.message import Message

from services.platform.events.envelope import decode, event_hash, event_time, unpack_payload
from services.platform.events.errors import EventError, MalformedEvent

from .model import Agent, AuditRecord, BusPosition, Entity

ACTIONS = {
    "account_registered": "C",
    "provider_verified": "U",
    "provider_suspended": "U",
    "provider_reinstated": "U",
    "account_locked": "U",
    "login_succeeded": "E",
    "login_failed": "E",
    "granted": "C",
    "revoked": "D",
    "expired": "D",
    "rejected": "E",
    "record_created": "C",
    "record_amended": "U",
    "keys_shared": "U",
    "keys_removed": "U",
    "record_rotated": "U",
    "record_shredded": "D",
    "record_read": "R",
    "read_denied": "R",
    "break_glass_used": "E",
    "checkpoint_anchored": "C",
    "anomaly_detected": "C",
    "anomaly_reviewed": "U",
    "break_glass_reviewed": "U",
    "report_generated": "C",
}


def role_name(code: int) -> str:
    return (
        vocabulary_pb2.Role.Name(vocabulary_pb2.Role.ValueType(code)).removeprefix("ROLE_").lower()
    )


def purpose_name(code: int) -> str:
    if code == 0:
        return ""
    return (
        vocabulary_pb2.PurposeOfUse.Name(vocabulary_pb2.PurposeOfUse.ValueType(code))
        .removeprefix("PURPOSE_OF_USE_")
        .lower()
    )


def category_name(code: int) -> str:
    if code == 0:
        return ""
    return (
        vocabulary_pb2.RecordCategory.Name(vocabulary_pb2.RecordCategory.ValueType(code))
        .removeprefix("RECORD_CATEGORY_")
        .lower()
    )


def disposition_name(code: int) -> str:
    if code == 0:
        return ""
    return (
        audit_pb2.Disposition.Name(audit_pb2.Disposition.ValueType(code))
        .removeprefix("DISPOSITION_")
        .lower()
    )


def outcome_name(code: int) -> str:
    if code in (0, vocabulary_pb2.OUTCOME_SUCCESS):
        return "success"
    return (
        vocabulary_pb2.Outcome.Name(vocabulary_pb2.Outcome.ValueType(code))
        .removeprefix("OUTCOME_")
        .lower()
    )


STORED_LENGTHS = {"event_id": 64, "type": 120, "outcome": 40, "patient_id": 200, "actor_id": 200}
"""The longest value the audit store keeps in each bounded column (its SQL schema)."""


def audit_record_of(raw: bytes, position: BusPosition) -> AuditRecord:
    """Decodes ``raw`` into a record the store can hold; ``MalformedEvent`` (or
    ``UnknownEventType``) otherwise, so the consumer keeps its position as undecodable
    instead of failing on it: a payload field out of range (a timestamp beyond year 9999,
    an unknown enum value), a NUL character or a value longer than its column."""
    try:
        record = _decoded(raw, position)
    except EventError:
        raise
    except (ValueError, OverflowError, TypeError, KeyError, IndexError) as error:
        raise MalformedEvent(f"event fields cannot be read: {error}") from error
    for name, limit in STORED_LENGTHS.items():
        if len(str(getattr(record, name))) > limit:
            raise MalformedEvent(f"{name} longer than {limit} characters")
    if any("\x00" in value for value in _texts(record)):
        raise MalformedEvent("NUL character in an event field")
    return record


def _texts(record: AuditRecord) -> list[str]:
    texts = [
        record.event_id,
        record.type,
        record.outcome,
        record.source,
        record.patient_id,
        record.purpose_of_use,
        record.justification,
        record.reason,
        record.correlation_id,
        *(agent.who for agent in record.agents),
        *(str(value) for value in record.extra.values()),
    ]
    texts.extend(str(entity) for entity in record.entities)
    return texts


def _decoded(raw: bytes, position: BusPosition) -> AuditRecord:
    envelope = decode(raw)
    body = unpack_payload(envelope)
    subtype = envelope.type.split(".")[2]
    actor = Agent(
        envelope.actor.id,
        role_name(envelope.actor.role),
        True,
        envelope.actor.network_address,
        envelope.actor.token_id,
    )
    fields: dict[str, Any] = {
        "agents": (actor,),
        "outcome": "success",
    }
    fields.update(_payload_fields(body, actor))
    return AuditRecord(
        event_id=envelope.id,
        type=envelope.type,
        subtype=subtype,
        action=ACTIONS.get(subtype, "E"),
        recorded_at=event_time(envelope),
        source=envelope.source,
        correlation_id=envelope.correlation_id,
        event_hash=event_hash(raw),
        position=position,
        **fields,
    )


def _payload_fields(body: Message, actor: Agent) -> dict[str, Any]:
    if isinstance(body, access_pb2.RecordRead):
        reader = Agent(
            body.reader_id,
            role_name(body.reader_role),
            True,
            actor.network_address,
            body.grant_id or body.break_glass_id or actor.authorisation,
        )
        return {
            "agents": (reader,),
            "patient_id": body.patient_id,
            "entities": (
                Entity("record", body.record_id, body.version, category_name(body.category)),
            ),
            "purpose_of_use": purpose_name(body.purpose),
            "extra": {
                "basis": access_pb2.AccessBasis.Name(body.basis)
                .removeprefix("ACCESS_BASIS_")
                .lower(),
                "grant_id": body.grant_id,
                "break_glass_id": body.break_glass_id,
            },
        }
    if isinstance(body, access_pb2.ReadDenied):
        reader = Agent(body.reader_id, role_name(body.reader_role), True, actor.network_address)
        return {
            "agents": (reader,),
            "patient_id": body.patient_id,
            "entities": (Entity("record", body.record_id, 0, category_name(body.category)),),
            "purpose_of_use": purpose_name(body.purpose),
            "outcome": outcome_name(body.outcome or vocabulary_pb2.OUTCOME_MINOR_FAILURE),
            "reason": access_pb2.DenialReason.Name(body.reason)
            .removeprefix("DENIAL_REASON_")
            .lower(),
        }
    if isinstance(body, access_pb2.BreakGlassUsed):
        reader = Agent(
            body.reader_id,
            role_name(body.reader_role),
            True,
            actor.network_address,
            body.break_glass_id,
        )
        return {
            "agents": (reader,),
            "patient_id": body.patient_id,
            "entities": tuple(
                Entity("break_glass", body.break_glass_id, 0, category_name(c))
                for c in body.categories
            )
            or (Entity("break_glass", body.break_glass_id),),
            "purpose_of_use": "emergency",
            "justification": body.justification,
            "extra": {"break_glass_id": body.break_glass_id},
        }
    if isinstance(
        body, consent_pb2.ConsentGranted | consent_pb2.ConsentRevoked | consent_pb2.ConsentExpired
    ):
        scope = body.scope
        grantee = Agent(scope.grantee_id, "grantee", False)
        extra: dict[str, Any] = {
            "grant_id": body.grant_id,
            "grantee_id": scope.grantee_id,
            "categories": [category_name(c) for c in scope.categories],
            "expires_at": scope.expires_at.seconds if scope.HasField("expires_at") else 0,
        }
        if isinstance(body, consent_pb2.ConsentRevoked):
            extra["remaining_categories"] = [category_name(c) for c in body.remaining_categories]
        return {
            "agents": (actor, grantee),
            "patient_id": body.patient_id,
            "entities": (Entity("consent", body.grant_id),),
            "purpose_of_use": purpose_name(scope.purpose),
            "extra": extra,
        }
    if isinstance(body, consent_pb2.ConsentRejected):
        return {
            "patient_id": body.patient_id,
            "entities": (Entity("consent", ""),),
            "purpose_of_use": purpose_name(body.scope.purpose),
            "outcome": outcome_name(body.outcome or vocabulary_pb2.OUTCOME_MINOR_FAILURE),
            "reason": body.refusal_code or body.error_name,
            "extra": {"grantee_id": body.scope.grantee_id},
        }
    if isinstance(
        body,
        records_pb2.RecordCreated | records_pb2.RecordAmended | records_pb2.RecordRotated,
    ):
        category = category_name(getattr(body, "category", 0))
        return {
            "patient_id": body.patient_id,
            "entities": (Entity("record", body.record_id, body.version, category),),
        }
    if isinstance(body, records_pb2.RecordShredded):
        return {
            "patient_id": body.patient_id,
            "entities": (Entity("record", body.record_id, 0, category_name(body.category)),),
        }
    if isinstance(body, records_pb2.RecordKeysShared | records_pb2.RecordKeysRemoved):
        return {
            "patient_id": body.patient_id,
            "agents": (actor, Agent(body.holder_id, "key_holder", False)),
            "entities": (Entity("keys", body.holder_id),),
        }
    if isinstance(body, identity_pb2.LoginFailed):
        return {
            "outcome": outcome_name(body.outcome or vocabulary_pb2.OUTCOME_MINOR_FAILURE),
            "reason": identity_pb2.LoginFailureReason.Name(body.reason)
            .removeprefix("LOGIN_FAILURE_REASON_")
            .lower(),
            "entities": (Entity("account", body.account_id),),
            "extra": {"account_id": body.account_id},
        }
    if isinstance(body, ledger_pb2.CheckpointAnchored):
        return {"entities": (Entity("checkpoint", body.log_id, int(body.tree_size)),)}
    if isinstance(body, audit_pb2.AnomalyDetected):
        return {
            "patient_id": body.patient_id,
            "entities": (Entity("anomaly", body.anomaly_id),),
            "extra": {"rule": body.rule, "account_id": body.account_id},
        }
    if isinstance(body, audit_pb2.AnomalyReviewed):
        return {
            "agents": (Agent(body.reviewer_id, actor.role, True, actor.network_address),),
            "patient_id": body.patient_id,
            "entities": (Entity("anomaly", body.anomaly_id),),
            "extra": {
                "rule": body.rule,
                "account_id": body.account_id,
                "disposition": disposition_name(body.disposition),
            },
        }
    if isinstance(body, audit_pb2.BreakGlassReviewed):
        return {
            "agents": (Agent(body.reviewer_id, actor.role, True, actor.network_address),),
            "patient_id": body.patient_id,
            "entities": (
                Entity("break_glass", body.break_glass_id),
                Entity("event", body.event_id),
            ),
            "extra": {
                "break_glass_id": body.break_glass_id,
                "reviewed_event_id": body.event_id,
                "reader_id": body.reader_id,
                "disposition": disposition_name(body.disposition),
            },
        }
    if isinstance(body, audit_pb2.ReportGenerated):
        return {
            "patient_id": body.patient_id,
            "entities": (Entity("report", body.report_id),),
        }
    account = getattr(body, "account_id", "")
    return {"entities": (Entity("account", account),) if account else ()}
