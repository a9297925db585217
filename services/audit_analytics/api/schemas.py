"""Response bodies of the audit-analytics API: what each route answers, field by field.

The routes build plain data (the reports are hashed as JSON and rendered as CSV and
HTML from it); these models state its shape in the OpenAPI document, and FastAPI checks
every JSON answer against them. ``extra="forbid"``: a field the routes add without
declaring it here fails the tests instead of vanishing from the answer.
Times are RFC 3339 strings in UTC; hashes are lower-case hex without ``0x``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Time = Annotated[str, Field(json_schema_extra={"format": "date-time"})]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- events --------------------------------------------------------------------------


class CheckpointRef(Body):
    """An anchored checkpoint as the ledger relay describes it."""

    index: int
    tree_size: int
    root: str
    tx_hash: str
    block_number: int


class AnchorContract(Body):
    chain_id: int
    address: str


class StoredProof(Body):
    """An inclusion proof as the ledger relay gives it (what ``verify_event`` takes);
    ``contract`` is there when the proof came over the relay's HTTP API."""

    event_id: str
    event_hash: str
    leaf_index: int
    proof: list[str]
    checkpoint: CheckpointRef
    contract: AnchorContract | None = None


class Agent(Body):
    who: str
    role: str
    requestor: bool
    network_address: str
    authorisation: str


class Entity(Body):
    kind: str
    id: str
    version: int
    category: str


class Integrity(Body):
    """Where the event is on the bus and in the ledger (null until anchored)."""

    sequence: int = Field(description="the store's own row number; the search cursor")
    topic: str
    partition: int
    offset: int
    event_hash: str
    leaf_index: int | None
    checkpoint: CheckpointRef | None


class AuditEvent(Body):
    """One event as a FHIR R4 AuditEvent (no health data: events carry none)."""

    resourceType: Literal["AuditEvent"]  # the FHIR field name
    id: str
    type: str
    subtype: str
    action: str
    recorded: Time
    outcome: str
    reason: str
    purpose_of_use: str
    justification: str
    agents: list[Agent]
    source: str
    patient_id: str
    entities: list[Entity]
    correlation_id: str
    details: dict[str, Any] = Field(description="non-clinical details of the payload")
    integrity: Integrity


class AuditEventDetail(AuditEvent):
    raw_base64: str = Field(description="the event's exact bus bytes")
    proof: StoredProof | None


class EventPage(Body):
    items: list[AuditEvent]
    next_cursor: int | None = Field(description="the cursor of the next page; null at the end")


class Verification(Body):
    event_id: str
    verified: bool
    leaf_index: int | None
    checkpoint_index: int | None
    tree_size: int | None
    tx_hash: str
    block_number: int | None
    detail: str
    proof: StoredProof | None


# -- reconciliation ------------------------------------------------------------------


class Discrepancy(Body):
    kind: Literal[
        "missing", "altered", "reordered", "inserted", "duplicated", "proof_invalid", "fork"
    ]
    detail: str
    event_id: str
    position: str
    leaf_index: int | None


class Reconciliation(Body):
    ok: bool
    events: int
    positions: int
    anchored: int
    pending: int
    not_logged: int
    bus_offsets_known: bool
    not_consumed: dict[str, int] = Field(description="per topic/partition")
    positions_not_consumed: int
    leaves_not_consumed: int
    checkpoint: CheckpointRef | None
    counts: dict[str, int] = Field(description="discrepancies per kind")
    discrepancies: list[Discrepancy]
    not_proven: dict[str, str] = Field(
        description="stored fields reconciliation cannot prove, each with the reason"
    )
    seconds: float


# -- anomalies -----------------------------------------------------------------------


class Finding(Body):
    finding_id: str
    rule: str
    severity: Literal["low", "medium", "high"]
    patient_id: str
    account_id: str
    event_ids: list[str]
    score: float
    explanation: str
    detected_at: Time
    disposition: str = Field(description="empty until reviewed")
    reviewed_by: str
    reviewed_at: Time | None


class NewFindings(Body):
    new_findings: list[Finding]


class FindingList(Body):
    items: list[Finding]


class Evidence(Body):
    event: AuditEvent
    proof: StoredProof | None


class FindingDetail(Finding):
    evidence: list[Evidence]


class BreakGlassReview(Body):
    event_id: str
    disposition: str


# -- reports -------------------------------------------------------------------------


class Period(Body):
    start: Time
    end: Time


class Attestation(Body):
    """The checkpoint the report relies on, its anchor, and what verified against it."""

    previous_report_tree_size: int | None
    consistent_with_previous_report: bool | None
    checkpoint_index: int | None
    checkpoint_tree_size: int
    checkpoint_root: str
    anchor_transaction: str
    anchor_block: int | None
    checkpoint_matches_chain: bool
    events_verified: int
    events_failed: int
    events_pending: int
    verification_result: Literal["verified", "failed", "partial"]


class Disclosure(Body):
    first_date: Time
    last_date: Time
    count: int
    recipient: str
    recipient_role: str
    description: str
    purpose: str
    event_ids: list[str]


class ProviderAccess(Body):
    actor_id: str
    reads: int
    denied: int
    break_glass: int
    distinct_patients: int


class ConsentChange(Body):
    date: Time
    change: str
    patient_id: str
    grantee_id: str
    categories: list[str]
    purpose: str
    outcome: str
    event_id: str


class BreakGlassEpisode(Body):
    date: Time
    break_glass_id: str
    actor_id: str
    patient_id: str
    justification_given: bool
    review_status: Literal["reviewed", "pending"]
    disposition: str
    reviewed_by: str
    review_event_id: str
    event_id: str


class AnomalyRow(Body):
    finding_id: str
    rule: str
    severity: str
    account_id: str
    patient_id: str
    detected_at: Time
    disposition: str
    reviewed_by: str
    review_event_id: str
    evidence: list[str]


class ReviewRow(Body):
    date: Time
    kind: Literal["anomaly", "break_glass"]
    subject: str
    patient_id: str
    disposition: str
    reviewed_by: str
    event_id: str


class ComplianceReport(Body):
    report_id: str
    kind: Literal["compliance"]
    period: Period
    generated_at: Time
    generated_by: str
    events_covered: int
    disclosures: dict[str, list[Disclosure]] = Field(description="per patient")
    access_by_provider: list[ProviderAccess]
    consent_changes: list[ConsentChange]
    break_glass: list[BreakGlassEpisode]
    anomalies: list[AnomalyRow]
    reviews: list[ReviewRow]
    accesses_per_day: dict[str, int] = Field(description="per day (YYYY-MM-DD)")
    attestation: Attestation


class Access(Body):
    date: Time
    who: str
    role: str
    action: Literal["read", "denied", "break_glass"]
    record: str
    purpose: str
    reason: str
    event_id: str


class AccessReport(Body):
    report_id: str
    kind: Literal["access_report"]
    patient_id: str
    period: Period
    generated_at: Time
    accesses: list[Access]
    accesses_per_day: dict[str, int] = Field(description="per day (YYYY-MM-DD)")
    attestation: Attestation


REPORT_MEDIA_TYPES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The report: JSON (``format=json``), CSV or an HTML page",
        "content": {
            "text/csv": {"schema": {"type": "string"}},
            "text/html": {"schema": {"type": "string"}},
        },
    }
}
"""The report routes' other renderings, beside the JSON model."""
