"""Topics: which topic each event type is published to, and the partition key rule.

Topic names are `<owner>.<aggregate>.v<major>`; the owner is the context that
writes the topic. The key of every message is the envelope's subject: the
patient id for patient-centred events, the account id for account events (the
log id for ledger checkpoints), so one subject's events stay in order. Which
payload field holds the subject is declared here, once per event type.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from google.protobuf.message import Message

from services.platform.events.catalogue import EVENT_TYPES, event_type_of
from services.platform.events.errors import MalformedEvent, UnknownEventType

TOPIC_NAME_PATTERN = re.compile(
    r"^(?P<owner>[a-z]+)\.(?P<aggregate>[a-z]+)\.v(?P<major>[1-9][0-9]*)$"
)


@dataclass(frozen=True)
class Topic:
    """A bus topic, `<owner>.<aggregate>.v<major>`."""

    owner: str
    aggregate: str
    major: int

    @property
    def name(self) -> str:
        return f"{self.owner}.{self.aggregate}.v{self.major}"

    def __post_init__(self) -> None:
        if not TOPIC_NAME_PATTERN.match(self.name):
            raise ValueError(f"topic name {self.name!r} is not <owner>.<aggregate>.v<major>")

    def __str__(self) -> str:
        return self.name


IDENTITY_ACCOUNTS = Topic("identity", "accounts", 1)
IDENTITY_SESSIONS = Topic("identity", "sessions", 1)
CONSENT_GRANTS = Topic("consent", "grants", 1)
RECORDS_RECORDS = Topic("records", "records", 1)
RECORDS_ACCESS = Topic("records", "access", 1)
LEDGER_CHECKPOINTS = Topic("ledger", "checkpoints", 1)
AUDIT_ANOMALIES = Topic("audit", "anomalies", 1)
AUDIT_REPORTS = Topic("audit", "reports", 1)

TOPICS: tuple[Topic, ...] = (
    IDENTITY_ACCOUNTS,
    IDENTITY_SESSIONS,
    CONSENT_GRANTS,
    RECORDS_RECORDS,
    RECORDS_ACCESS,
    LEDGER_CHECKPOINTS,
    AUDIT_ANOMALIES,
    AUDIT_REPORTS,
)

DOMAIN_TOPICS: tuple[str, ...] = tuple(t.name for t in TOPICS if t != LEDGER_CHECKPOINTS)
"""The topics the ledger relay anchors: every domain event, not its own checkpoints."""

LEDGER_RELAY_CONSUMER_GROUP = "ledger-relay"
"""The ledger relay's consumer group of ``DOMAIN_TOPICS``: audit analytics reads its
committed offsets to tell what the relay has logged from what it has not."""


@dataclass(frozen=True)
class Route:
    """Where an event type goes and which payload fields give its subject (first non-empty)."""

    topic: Topic
    subject_fields: tuple[str, ...]


_ACCOUNT = ("account_id",)
_PATIENT = ("patient_id",)

ROUTES: Mapping[str, Route] = MappingProxyType(
    {
        "ehr.identity.account_registered.v1": Route(IDENTITY_ACCOUNTS, _ACCOUNT),
        "ehr.identity.provider_verified.v1": Route(IDENTITY_ACCOUNTS, _ACCOUNT),
        "ehr.identity.provider_suspended.v1": Route(IDENTITY_ACCOUNTS, _ACCOUNT),
        "ehr.identity.provider_reinstated.v1": Route(IDENTITY_ACCOUNTS, _ACCOUNT),
        "ehr.identity.account_locked.v1": Route(IDENTITY_ACCOUNTS, _ACCOUNT),
        "ehr.identity.login_succeeded.v1": Route(IDENTITY_SESSIONS, _ACCOUNT),
        "ehr.identity.login_failed.v1": Route(IDENTITY_SESSIONS, _ACCOUNT),
        "ehr.consent.granted.v1": Route(CONSENT_GRANTS, _PATIENT),
        "ehr.consent.revoked.v1": Route(CONSENT_GRANTS, _PATIENT),
        "ehr.consent.expired.v1": Route(CONSENT_GRANTS, _PATIENT),
        "ehr.consent.rejected.v1": Route(CONSENT_GRANTS, _PATIENT),
        "ehr.records.record_created.v1": Route(RECORDS_RECORDS, _PATIENT),
        "ehr.records.record_amended.v1": Route(RECORDS_RECORDS, _PATIENT),
        "ehr.records.keys_shared.v1": Route(RECORDS_RECORDS, _PATIENT),
        "ehr.records.keys_removed.v1": Route(RECORDS_RECORDS, _PATIENT),
        "ehr.records.record_rotated.v1": Route(RECORDS_RECORDS, _PATIENT),
        "ehr.records.record_shredded.v1": Route(RECORDS_RECORDS, _PATIENT),
        "ehr.access.record_read.v1": Route(RECORDS_ACCESS, _PATIENT),
        "ehr.access.read_denied.v1": Route(RECORDS_ACCESS, _PATIENT),
        "ehr.access.break_glass_used.v1": Route(RECORDS_ACCESS, _PATIENT),
        "ehr.ledger.checkpoint_anchored.v1": Route(LEDGER_CHECKPOINTS, ("log_id",)),
        "ehr.audit.anomaly_detected.v1": Route(AUDIT_ANOMALIES, ("patient_id", "account_id")),
        "ehr.audit.anomaly_reviewed.v1": Route(AUDIT_ANOMALIES, ("patient_id", "account_id")),
        "ehr.audit.break_glass_reviewed.v1": Route(AUDIT_ANOMALIES, _PATIENT),
        "ehr.audit.report_generated.v1": Route(AUDIT_REPORTS, ("patient_id", "auditor_id")),
    }
)
"""Event type -> route. The one place that says which topic carries which event."""

if set(ROUTES) != set(EVENT_TYPES):  # pragma: no cover - caught at import by every test
    raise RuntimeError(
        "topics.ROUTES and the event types declared in proto/ehr differ: "
        f"{sorted(set(ROUTES) ^ set(EVENT_TYPES))}"
    )


def route_for(event_type: str) -> Route:
    try:
        return ROUTES[event_type]
    except KeyError:
        raise UnknownEventType(event_type) from None


def topic_for(event_type: str) -> Topic:
    """The topic an event type is published to."""
    return route_for(event_type).topic


def event_types_on(topic: Topic) -> tuple[str, ...]:
    """The event types published to a topic."""
    return tuple(sorted(t for t, route in ROUTES.items() if route.topic == topic))


def subject_of(payload: Message) -> str:
    """The subject (and partition key) of an event with this payload."""
    route = route_for(event_type_of(payload))
    for field in route.subject_fields:
        value = getattr(payload, field)
        if isinstance(value, str) and value:
            return value
    fields = ", ".join(route.subject_fields)
    raise MalformedEvent(f"{payload.DESCRIPTOR.full_name} has no subject: set one of {fields}")
