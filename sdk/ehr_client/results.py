"""The shapes the services answer with, as the SDK's clients return them.

They are ``TypedDict``s: at run time each is the decoded JSON ``dict`` itself (so
``account["account_id"]`` and ``json.dumps(account)`` keep working), and a type checker
knows every key and its type. Each mirrors the response model of the service route that
produces it; the services' OpenAPI documents are the reference.
"""

from __future__ import annotations

from typing import Any, Literal, TypedDict

# -- identity ------------------------------------------------------------------------


class Account(TypedDict):
    """An account (``POST /accounts``, ``GET /accounts/{id}``, ``GET /me``, provider
    verify/suspend/reinstate)."""

    account_id: str
    name: str
    role: str  # patient, provider, auditor, admin, service
    signing_address: str  # checksummed
    encryption_key: str  # X25519 public key, 64 hex
    provider_status: str | None  # null unless the role is provider
    created_at: str  # ISO 8601


class Challenge(TypedDict):
    """A login challenge: the EIP-4361 ``message`` to sign and its ``nonce``."""

    nonce: str
    message: str
    issued_at: str
    expires_at: str


class Jwk(TypedDict):
    kty: str
    crv: str
    x: str
    y: str
    kid: str
    alg: str
    use: str


class Jwks(TypedDict):
    """Identity's token-signing public keys (``/.well-known/jwks.json``)."""

    keys: list[Jwk]


class SigningKeys(TypedDict):
    """The token-signing keys after a rotation."""

    active_kid: str
    kids: list[str]


# -- consent -------------------------------------------------------------------------


class Receipt(TypedDict):
    """The chain transaction that carried a grant or revocation."""

    chain_id: int
    contract_address: str
    transaction_hash: str
    block_number: int
    gas_used: int


class Grant(TypedDict):
    """A grant as the registry holds it (after ``grant``, ``revoke`` or in a listing)."""

    grant_id: str
    patient_id: str
    patient: str  # signing address
    grantee_id: str
    grantee: str  # signing address
    purpose: int
    categories: int  # bitmask
    expires_at: int  # epoch seconds
    nonce: int
    active: bool
    receipt: Receipt


class ConsentCheck(TypedDict):
    """The full answer of a consent check."""

    patient: str
    grantee: str
    category: int
    purpose: int
    authorised: bool
    reason: str
    grant_id: str | None
    checked_at: float


# -- record store --------------------------------------------------------------------


class RecordInfo(TypedDict):
    """A record's metadata (never its content)."""

    record_id: str
    patient_id: str
    category: str
    resource_type: str
    created_by: str
    created_at: float  # epoch seconds
    latest_version: int
    shredded: bool
    shredded_at: float | None


class Provenance(TypedDict):
    author_id: str
    author_address: str
    signed_at: str
    signature: str


class VersionInfo(TypedDict):
    """One stored version's metadata (the answer of an upload or amendment)."""

    record_id: str
    version: int
    resource_type: str
    content_sha256: str
    ciphertext_sha256: str
    ciphertext_size: int
    plaintext_size: int
    provenance: Provenance
    created_at: float
    key_generation: int
    shredded: bool


class FetchedVersion(TypedDict):
    """A version as fetched for reading: still encrypted, with the reader's wrapped key."""

    record: RecordInfo
    version: VersionInfo
    ciphertext: str  # base64
    wrapped_key: str  # base64
    basis: Literal["owner", "consent", "break_glass"]


class History(TypedDict):
    record: RecordInfo
    versions: list[VersionInfo]


class BreakGlassAccess(TypedDict):
    """An emergency access: the keys released to the provider and until when."""

    break_glass_id: str
    patient_id: str
    categories: list[str]
    expires_at: float
    keys_released: int


# -- audit analytics and the ledger relay --------------------------------------------


class CheckpointRef(TypedDict):
    index: int
    tree_size: int
    root: str
    tx_hash: str
    block_number: int


class AnchorContract(TypedDict):
    chain_id: int
    address: str


class InclusionProof(TypedDict):
    """An event's RFC 9162 inclusion proof to an anchored checkpoint."""

    event_id: str
    event_hash: str
    leaf_index: int
    proof: list[str]
    checkpoint: CheckpointRef
    contract: AnchorContract


class Checkpoints(TypedDict):
    checkpoints: list[CheckpointRef]
    contract: AnchorContract


class AuditEvent(TypedDict):
    """One audit event (FHIR AuditEvent-like) with where it sits in the log."""

    id: str
    type: str
    subtype: str
    action: str
    recorded: str
    outcome: str
    reason: str
    purpose_of_use: str
    justification: str
    agents: list[dict[str, Any]]
    source: str
    patient_id: str
    entities: list[dict[str, Any]]
    correlation_id: str
    details: dict[str, Any]
    integrity: dict[str, Any]


class AuditEventDetail(AuditEvent):
    """One event with its exact bus bytes (``raw``, decoded here) and stored proof."""

    raw_base64: str
    raw: bytes
    proof: dict[str, Any] | None


class Verification(TypedDict):
    """An event's stored bytes checked against the root anchored on chain."""

    event_id: str
    verified: bool
    leaf_index: int | None
    checkpoint_index: int | None
    tree_size: int | None
    tx_hash: str
    block_number: int | None
    detail: str
    proof: dict[str, Any] | None


class Reconciliation(TypedDict):
    """The log, the bus and the chain compared: ``ok`` and what differs."""

    ok: bool
    events: int
    positions: int
    anchored: int
    pending: int
    not_logged: int
    bus_offsets_known: bool
    not_consumed: dict[str, int]
    positions_not_consumed: int
    leaves_not_consumed: int
    checkpoint: CheckpointRef | None
    counts: dict[str, int]
    discrepancies: list[dict[str, Any]]
    not_proven: dict[str, str]  # what reconciliation cannot prove, and why
    seconds: float


class Finding(TypedDict):
    """An anomaly finding and its review."""

    finding_id: str
    rule: str
    severity: Literal["low", "medium", "high"]
    patient_id: str
    account_id: str
    event_ids: list[str]
    score: float
    explanation: str
    detected_at: str
    disposition: str  # empty until reviewed
    reviewed_by: str
    reviewed_at: str | None


class BreakGlassReview(TypedDict):
    event_id: str
    disposition: str


class AccessReport(TypedDict):
    """A patient's own access report: who read what, when and why."""

    report_id: str
    kind: Literal["access_report"]
    patient_id: str
    period: dict[str, str]
    generated_at: str
    accesses: list[dict[str, Any]]
    accesses_per_day: dict[str, int]
    attestation: dict[str, Any]
