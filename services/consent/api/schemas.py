"""Request and response bodies of the consent API."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from eth_utils.address import is_address, to_checksum_address
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from services.consent.domain.model import (
    ALL_CATEGORIES,
    MAX_GRANT_HORIZON_SECONDS,
    MAX_PURPOSE,
    NONCE_MAX,
    UNIX_TIME_MAX,
    CheckReason,
    Grant,
)
from services.consent.domain.ports import QuarantinedLog


def _address(value: str) -> str:
    if not is_address(value):
        raise ValueError("not a 0x-prefixed 20-byte address")
    return str(to_checksum_address(value))


def _signature(value: str) -> str:
    raw = value[2:] if value.startswith("0x") else value
    try:
        decoded = bytes.fromhex(raw)
    except ValueError:
        raise ValueError("signature is not hex") from None
    if len(decoded) != 65:
        raise ValueError("signature must be 65 bytes (r || s || v)")
    return "0x" + raw.lower()


Address = Annotated[str, Field(max_length=42), AfterValidator(_address)]
Signature = Annotated[str, Field(max_length=132), AfterValidator(_signature)]
Categories = Annotated[int, Field(ge=1, le=ALL_CATEGORIES, description="category bitmask")]
PurposeId = Annotated[int, Field(ge=1, le=MAX_PURPOSE, description="purpose-of-use id")]
# The numbers of a signed message: each within what the registry (uint64/uint256), the
# databases (BIGINT) and the events (protobuf Timestamp, up to year 9999) all hold.
ExpiresAt = Annotated[
    int,
    Field(
        ge=1,
        le=UNIX_TIME_MAX,
        json_schema_extra={"format": "int64"},
        description=(
            "unix seconds at which the grant stops authorising: after now and at most "
            f"MAX_GRANT_HORIZON_SECONDS ({MAX_GRANT_HORIZON_SECONDS} s, ten years) after "
            "now, else 422 message_expired / expiry_too_far"
        ),
    ),
]
Nonce = Annotated[
    int,
    Field(
        ge=0,
        le=NONCE_MAX,
        json_schema_extra={"format": "int64"},
        description="the patient's next nonce (GET /consent/patients/{id}/nonce), else 409",
    ),
]
Deadline = Annotated[
    int,
    Field(
        ge=0,
        le=UNIX_TIME_MAX,
        json_schema_extra={"format": "int64"},
        description="unix seconds after which the signed message is refused (422 when past)",
    ),
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class GrantMessageBody(_Strict):
    """The EIP-712 ``Grant`` message, exactly as the patient signed it."""

    patient: Address
    grantee: Address
    categories: Categories
    purpose: PurposeId
    expires_at: ExpiresAt
    nonce: Nonce
    deadline: Deadline


class RevokeMessageBody(_Strict):
    """The EIP-712 ``Revoke`` message, exactly as the patient signed it."""

    patient: Address
    grantee: Address
    categories: Categories
    purpose: PurposeId
    nonce: Nonce
    deadline: Deadline


class SignedGrantRequest(_Strict):
    message: GrantMessageBody
    signature: Signature


class SignedRevokeRequest(_Strict):
    message: RevokeMessageBody
    signature: Signature


class ReceiptView(BaseModel):
    chain_id: int
    contract_address: str
    transaction_hash: str
    block_number: int
    gas_used: int


class GrantView(BaseModel):
    """One (patient, grantee, purpose) grant as the projection holds it."""

    grant_id: str
    patient_id: str
    patient: str
    grantee_id: str
    grantee: str
    purpose: int
    categories: int
    expires_at: int
    nonce: int
    active: bool
    receipt: ReceiptView

    @classmethod
    def of(cls, grant: Grant, now: float) -> GrantView:
        p = grant.position
        return cls(
            grant_id=grant.grant_id,
            patient_id=grant.patient_id,
            patient=grant.patient,
            grantee_id=grant.grantee_id,
            grantee=grant.grantee,
            purpose=grant.purpose,
            categories=grant.categories,
            expires_at=grant.expires_at,
            nonce=grant.nonce,
            active=grant.active(now),
            receipt=ReceiptView(
                chain_id=p.chain_id,
                contract_address=p.contract_address,
                transaction_hash=p.tx_hash,
                block_number=p.block_number,
                gas_used=p.gas_used,
            ),
        )


class CheckView(BaseModel):
    """The answer to a consent check, with the reason the record store records."""

    patient: str
    grantee: str
    category: int
    purpose: int
    authorised: bool
    reason: CheckReason = Field(
        description=(
            "granted: authorised; no_grant: never granted for this category and purpose; "
            "revoked: granted, then taken back by the patient; expired: granted, and the "
            "grant's expiry has passed"
        )
    )
    # the grant that authorises, when authorised
    grant_id: str | None = None
    checked_at: float


class QuarantinedLogView(BaseModel):
    """A registry log the projection could not apply: it was set aside, the chain sync
    went on past it, and ``/consent/readyz`` reports the service degraded."""

    chain_id: int
    contract_address: str
    block_number: int
    transaction_hash: str
    log_index: int
    kind: str = Field(description="granted, revoked, or unreadable")
    reason: str
    quarantined_at: datetime

    @classmethod
    def of(cls, log: QuarantinedLog) -> QuarantinedLogView:
        return cls(
            chain_id=log.chain_id,
            contract_address=log.contract_address,
            block_number=log.block_number,
            transaction_hash=log.tx_hash,
            log_index=log.log_index,
            kind=log.kind,
            reason=log.reason,
            quarantined_at=datetime.fromtimestamp(log.quarantined_at, UTC),
        )


class RegistryView(BaseModel):
    """The EIP-712 domain a patient signs for, and the patient's next nonce when asked."""

    name: str = "EHR Ledger ConsentRegistry"
    version: str = "1"
    chain_id: int
    verifying_contract: str


class NonceView(BaseModel):
    patient: str
    nonce: int
