"""The client's FHIR validation (``FhirResourcesValidator``, FHIR R4B models of
``fhir.resources``): one valid and several invalid resources of every accepted type, and
that an invalid resource never leaves the client."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from ehr_client.keys import UserKeys
from ehr_client.records import (
    ACCEPTED_RESOURCE_TYPES,
    FhirResourcesValidator,
    InvalidFhirResource,
    Recipient,
    RecordsClient,
)

SUBJECT = {"reference": "Patient/7f9c2b1e-0d1a-4c55-9d0e-2b8f4f6a1c3d"}
CODE = {"coding": [{"system": "http://loinc.org", "code": "2345-7", "display": "Glucose"}]}

VALID: dict[str, dict[str, Any]] = {
    "Observation": {
        "resourceType": "Observation",
        "id": "glucose-1",
        "status": "final",
        "code": CODE,
        "subject": SUBJECT,
        "effectiveDateTime": "2026-11-20T08:30:00Z",
        "valueQuantity": {"value": 5.4, "unit": "mmol/L"},
    },
    "DiagnosticReport": {
        "resourceType": "DiagnosticReport",
        "id": "cbc-2026",
        "status": "final",
        "code": {"text": "Complete blood count"},
        "subject": SUBJECT,
        "issued": "2026-11-20T09:00:00+01:00",
        "conclusion": "Within normal limits",
    },
    "MedicationStatement": {
        "resourceType": "MedicationStatement",
        "status": "active",
        "medicationCodeableConcept": {"text": "Metformin 500 mg"},
        "subject": SUBJECT,
        "effectivePeriod": {"start": "2026-01-01"},
    },
    "DocumentReference": {
        "resourceType": "DocumentReference",
        "status": "current",
        "subject": SUBJECT,
        "date": "2026-11-20T10:00:00Z",
        "content": [{"attachment": {"contentType": "text/plain", "data": "bm90ZQ=="}}],
    },
    "Condition": {
        "resourceType": "Condition",
        "clinicalStatus": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                    "code": "active",
                }
            ]
        },
        "code": {"text": "Type 2 diabetes mellitus"},
        "subject": SUBJECT,
        "onsetDateTime": "2019-05",
    },
}


def _without(kind: str, name: str) -> dict[str, Any]:
    resource = copy.deepcopy(VALID[kind])
    resource.pop(name)
    return resource


def _with(kind: str, **fields: Any) -> dict[str, Any]:
    resource = copy.deepcopy(VALID[kind])
    resource.update(fields)
    return resource


INVALID: list[tuple[str, dict[str, Any], str]] = [
    ("Observation", _without("Observation", "code"), "at code"),
    ("Observation", _with("Observation", status="done"), "at status"),
    ("Observation", _with("Observation", effectiveDateTime="yesterday"), "effectiveDateTime"),
    ("Observation", _with("Observation", valueQuantity={"value": "high"}), "valueQuantity"),
    ("DiagnosticReport", _without("DiagnosticReport", "code"), "at code"),
    ("DiagnosticReport", _with("DiagnosticReport", issued="20/11/2026"), "issued"),
    ("MedicationStatement", _without("MedicationStatement", "subject"), "subject"),
    ("MedicationStatement", _with("MedicationStatement", status="taking"), "at status"),
    ("DocumentReference", _without("DocumentReference", "content"), "content"),
    ("DocumentReference", _with("DocumentReference", content=[]), "content"),
    ("Condition", _without("Condition", "subject"), "subject"),
    ("Condition", _with("Condition", id="not a valid id!"), "at id"),
    ("Condition", _with("Condition", favouriteColour="blue"), "favouriteColour"),
]


@pytest.mark.parametrize("kind", ACCEPTED_RESOURCE_TYPES)
def test_valid_resource_of_each_accepted_type(kind: str) -> None:
    assert FhirResourcesValidator().validate(VALID[kind]) == kind


@pytest.mark.parametrize(
    ("kind", "resource", "where"),
    INVALID,
    ids=[f"{kind}-{where.replace(' ', '-')}" for kind, _, where in INVALID],
)
def test_invalid_resource_names_the_element(
    kind: str, resource: dict[str, Any], where: str
) -> None:
    with pytest.raises(InvalidFhirResource) as caught:
        FhirResourcesValidator().validate(resource)
    assert str(caught.value).startswith(f"invalid {kind}")
    assert where in str(caught.value)


@pytest.mark.parametrize(
    "resource",
    [
        {"resourceType": "Patient", "id": "p1"},
        {"resourceType": "observation", "status": "final"},
        {"status": "final", "code": CODE, "subject": SUBJECT},
    ],
)
def test_type_not_accepted(resource: dict[str, Any]) -> None:
    with pytest.raises(InvalidFhirResource, match="is not accepted"):
        FhirResourcesValidator().validate(resource)


def test_invalid_resource_never_leaves_the_client() -> None:
    """Validation happens before any request: the client has no server to talk to."""
    keys = UserKeys.generate()
    client = RecordsClient("http://127.0.0.1:9", token="unused", keys=keys, account_id="a")
    client._escrow = keys.public().encryption_key
    patient = Recipient("p", keys.public().encryption_key)
    with client, pytest.raises(InvalidFhirResource):
        client.build_version(
            _without("Observation", "status"),
            record_id="r",
            version=1,
            patient=patient,
            category="labs",
        )
    body = client.build_version(
        VALID["Observation"], record_id="r", version=1, patient=patient, category="labs"
    )
    assert body["resource_type"] == "Observation"
