"""Request and response bodies of the record store API (bytes travel as base64, hashes
as hex)."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from services.platform.app.bounds import NonNegativeInt64, in_utc
from services.record_store.domain.errors import InvalidUpload
from services.record_store.domain.model import (
    Category,
    Provenance,
    RecordMeta,
    VersionMeta,
    WrappedKey,
)

ACCOUNT_ID_PATTERN = _ID = r"^[A-Za-z0-9:_\-.]{1,200}$"
RECORD_ID_PATTERN = _UUID = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
_HEX32 = r"^[0-9a-f]{64}$"
_BASE64 = r"^[A-Za-z0-9+/]*={0,2}$"
_ISO_INSTANT = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?"
    r"(Z|[+-][0-9]{2}:[0-9]{2})$"
)

MAX_VERSION = 1_000_000
MAX_BASE64_CHARS = 4 * ((2 * 1_048_576 + 2) // 3)
"""Base64 of the largest body the record store accepts (2 MiB): no ciphertext can be
longer; the configured ciphertext limit is checked on the bytes (413)."""

AccountId = Annotated[
    str, Field(pattern=_ID, description="an account id (or the escrow holder id)")
]
RecordId = Annotated[str, Field(pattern=_UUID, description="a record id: a lowercase UUID")]
Version = Annotated[int, Field(ge=1, le=MAX_VERSION, description="a version number")]
Sha256Hex = Annotated[str, Field(pattern=_HEX32, description="SHA-256, 64 lowercase hex")]
Base64Ciphertext = Annotated[str, Field(min_length=1, max_length=MAX_BASE64_CHARS, pattern=_BASE64)]
Base64WrappedKey = Annotated[str, Field(min_length=1, max_length=200, pattern=_BASE64)]
EpochSeconds = Annotated[float, Field(ge=0, description="seconds since the Unix epoch, UTC")]


def decode_b64(value: str, field: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidUpload(f"{field} is not base64", code="invalid_base64") from None


def _is_instant(value: str) -> str:
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError("not an ISO 8601 date-time") from None
    in_utc(moment)
    return value


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WrappedKeyIn(_Body):
    holder_id: AccountId
    wrapped_key: Base64WrappedKey

    def domain(self) -> WrappedKey:
        return WrappedKey(self.holder_id, decode_b64(self.wrapped_key, "wrapped_key"))


class ProvenanceIn(_Body):
    author_id: AccountId
    author_address: str = Field(pattern=r"^0x[0-9a-fA-F]{40}$")
    signed_at: Annotated[
        str,
        Field(
            pattern=_ISO_INSTANT,
            max_length=40,
            description="ISO 8601 date-time with offset, as signed (years 1..9999 in UTC)",
        ),
        AfterValidator(_is_instant),
    ]
    signature: str = Field(pattern=r"^0x[0-9a-fA-F]{130}$")


class VersionIn(_Body):
    record_id: RecordId
    version: Version
    patient_id: AccountId
    category: Category
    resource_type: str = Field(pattern=r"^[A-Z][A-Za-z]{1,59}$")
    content_sha256: Sha256Hex
    ciphertext: Base64Ciphertext
    ciphertext_sha256: Sha256Hex
    plaintext_size: NonNegativeInt64
    wrapped_keys: list[WrappedKeyIn] = Field(min_length=2, max_length=1000)
    provenance: ProvenanceIn


class KeyEntryIn(_Body):
    record_id: RecordId
    version: Version
    holder_id: AccountId
    wrapped_key: Base64WrappedKey


class KeysIn(_Body):
    keys: list[KeyEntryIn] = Field(min_length=1, max_length=1000)


class RotationIn(_Body):
    ciphertext: Base64Ciphertext
    ciphertext_sha256: Sha256Hex
    wrapped_keys: list[WrappedKeyIn] = Field(min_length=2, max_length=1000)


class BreakGlassIn(_Body):
    patient_id: AccountId
    justification: str = Field(min_length=1, max_length=1000)
    categories: list[Category] = Field(default_factory=list, max_length=5)
    encryption_key: str = Field(pattern=r"^[0-9a-f]{64}$")


# -- responses ------------------------------------------------------------------------


class _View(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProvenanceView(_View):
    author_id: str
    author_address: str = Field(description="checksummed address of the author's key")
    signed_at: str = Field(description="ISO 8601 date-time, part of the signed text")
    signature: str = Field(description="EIP-191 signature, 0x + 130 hex")


class RecordView(_View):
    record_id: str
    patient_id: str
    category: Category
    resource_type: str
    created_by: str
    created_at: EpochSeconds
    latest_version: int
    shredded: bool
    shredded_at: EpochSeconds | None = Field(description="null while not shredded")


class VersionView(_View):
    record_id: str
    version: int
    resource_type: str
    content_sha256: str
    ciphertext_sha256: str
    ciphertext_size: int
    plaintext_size: int
    provenance: ProvenanceView
    created_at: EpochSeconds
    key_generation: int
    shredded: bool


class ReadView(_View):
    """A version's ciphertext and the data key wrapped for the reader."""

    record: RecordView
    version: VersionView
    ciphertext: str = Field(description="base64")
    wrapped_key: str = Field(description="base64, the reader's own wrapped data key")
    basis: Literal["owner", "consent", "break_glass"]


class HistoryView(_View):
    record: RecordView
    versions: list[VersionView]


class KeyHolderView(_View):
    account_id: str
    encryption_key_sha256: str = Field(description="SHA-256 of the registered X25519 key")


class GranteeView(KeyHolderView):
    grant_ids: list[str]
    purposes: list[int]


class EscrowKeyView(_View):
    holder_id: str
    encryption_key: str = Field(description="X25519 public key, 64 hex")


class KeyHoldersView(_View):
    patient: KeyHolderView
    escrow: EscrowKeyView
    grantees: list[GranteeView]


class ServiceRegistrationView(_View):
    """The service account's signed registration for identity's ``POST /accounts``."""

    name: str
    role: Literal["service"]
    signing_address: str
    encryption_key: str
    signature: str


class KeysStoredView(_View):
    stored: int = Field(description="wrapped keys added or replaced")


class KeysDeletedView(_View):
    deleted: int = Field(description="wrapped keys removed")


class RotationView(_View):
    key_generation: int


class ShreddedView(_View):
    record_id: str
    shredded: bool


class BreakGlassView(_View):
    break_glass_id: str
    patient_id: str
    categories: list[Category]
    expires_at: EpochSeconds
    keys_released: int


def provenance_view(p: Provenance) -> ProvenanceView:
    return ProvenanceView(
        author_id=p.author_id,
        author_address=p.author_address,
        signed_at=p.signed_at,
        signature="0x" + p.signature.hex(),
    )


def record_view(r: RecordMeta) -> RecordView:
    return RecordView(
        record_id=r.record_id,
        patient_id=r.patient_id,
        category=r.category,
        resource_type=r.resource_type,
        created_by=r.created_by,
        created_at=r.created_at,
        latest_version=r.latest_version,
        shredded=r.shredded_at is not None,
        shredded_at=r.shredded_at,
    )


def version_view(v: VersionMeta) -> VersionView:
    return VersionView(
        record_id=v.record_id,
        version=v.version,
        resource_type=v.resource_type,
        content_sha256=v.content_sha256.hex(),
        ciphertext_sha256=v.ciphertext_sha256.hex(),
        ciphertext_size=v.ciphertext_size,
        plaintext_size=v.plaintext_size,
        provenance=provenance_view(v.provenance),
        created_at=v.created_at,
        key_generation=v.key_generation,
        shredded=v.shredded,
    )
