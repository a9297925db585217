"""Topics: every event type has exactly one topic, named <owner>.<aggregate>.v<major>."""

from __future__ import annotations

import re

import pytest
from ehr.consent.v1 import consent_pb2
from ehr.identity.v1 import identity_pb2
from ehr.ledger.v1 import ledger_pb2

from services.platform.events import topics
from services.platform.events.catalogue import EVENT_TYPE_PATTERN, EVENT_TYPES, payload_class
from services.platform.events.errors import MalformedEvent, UnknownEventType

TOPIC_NAME = re.compile(r"^[a-z]+\.[a-z]+\.v[1-9][0-9]*$")

# Which context owns (writes) the events of each payload package.
OWNER_OF_CONTEXT = {
    "identity": "identity",
    "consent": "consent",
    "records": "records",
    "access": "records",  # reads are enforced and recorded by the record store
    "ledger": "ledger",
    "audit": "audit",
}


def test_every_event_type_maps_to_exactly_one_topic() -> None:
    assert sorted(topics.ROUTES) == list(EVENT_TYPES)
    for event_type in EVENT_TYPES:
        topic = topics.topic_for(event_type)
        assert TOPIC_NAME.match(topic.name), topic.name
        carrying = [t for t in topics.TOPICS if event_type in topics.event_types_on(t)]
        assert carrying == [topic]


def test_topics_are_unique_used_and_owned_by_the_writing_context() -> None:
    names = [t.name for t in topics.TOPICS]
    assert len(set(names)) == len(names)
    used = {topics.topic_for(t) for t in EVENT_TYPES}
    assert used == set(topics.TOPICS)
    for event_type in EVENT_TYPES:
        match = EVENT_TYPE_PATTERN.match(event_type)
        assert match is not None
        topic = topics.topic_for(event_type)
        assert topic.owner == OWNER_OF_CONTEXT[match["context"]]
        assert topic.major == int(match["major"])


def test_consent_topic_is_the_documented_example() -> None:
    assert topics.topic_for("ehr.consent.granted.v1").name == "consent.grants.v1"
    assert str(topics.CONSENT_GRANTS) == "consent.grants.v1"


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_subject_fields_exist_and_are_strings(event_type: str) -> None:
    fields = payload_class(event_type).DESCRIPTOR.fields_by_name
    for name in topics.route_for(event_type).subject_fields:
        assert name in fields
        assert fields[name].type == fields[name].TYPE_STRING


def test_key_rule_patient_or_account_id() -> None:
    assert topics.subject_of(consent_pb2.ConsentGranted(patient_id="pat-1")) == "pat-1"
    assert topics.subject_of(identity_pb2.LoginFailed(account_id="acct-2")) == "acct-2"
    assert topics.subject_of(ledger_pb2.CheckpointAnchored(log_id="main")) == "main"
    with pytest.raises(MalformedEvent):
        topics.subject_of(consent_pb2.ConsentGranted(grant_id="g"))


def test_unknown_event_type_has_no_topic() -> None:
    with pytest.raises(UnknownEventType):
        topics.topic_for("ehr.consent.teleported.v1")


def test_malformed_topic_names_are_refused() -> None:
    with pytest.raises(ValueError):
        topics.Topic("Consent", "grants", 1)
    with pytest.raises(ValueError):
        topics.Topic("consent", "grants", 0)
