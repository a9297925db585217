"""Request and response bodies of the record store API (bytes travel as base64, hashes
as hex)."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from services.record_store.domain.errors import InvalidUpload
from services.record_store.domain.model import (
    Category,
    Provenance,
    RecordMeta,
    VersionMeta,
    WrappedKey,
)

_ID = r"^[A-Za-z0-9:_\-.]{1,200}$"
_HEX32 = r"^[0-9a-f]{64}$"


def decode_b64(value: str, field: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidUpload(f"{field} is not base64", code="invalid_base64") from None


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WrappedKeyIn(_Body):
    holder_id: str = Field(pattern=_ID)
    wrapped_key: str = Field(min_length=1, max_length=200)

    def domain(self) -> WrappedKey:
        return WrappedKey(self.holder_id, decode_b64(self.wrapped_key, "wrapped_key"))


class ProvenanceIn(_Body):
    author_id: str = Field(pattern=_ID)
    author_address: str = Field(pattern=r"^0x[0-9a-fA-F]{40}$")
    signed_at: str = Field(min_length=10, max_length=40)
    signature: str = Field(pattern=r"^0x[0-9a-fA-F]{130}$")


class VersionIn(_Body):
    record_id: str = Field(
        pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
    )
    version: int = Field(ge=1, le=1_000_000)
    patient_id: str = Field(pattern=_ID)
    category: Category
    resource_type: str = Field(pattern=r"^[A-Z][A-Za-z]{1,59}$")
    content_sha256: str = Field(pattern=_HEX32)
    ciphertext: str = Field(min_length=1)
    ciphertext_sha256: str = Field(pattern=_HEX32)
    plaintext_size: int = Field(ge=0)
    wrapped_keys: list[WrappedKeyIn] = Field(min_length=2, max_length=1000)
    provenance: ProvenanceIn


class KeyEntryIn(_Body):
    record_id: str = Field(pattern=_ID)
    version: int = Field(ge=1)
    holder_id: str = Field(pattern=_ID)
    wrapped_key: str = Field(min_length=1, max_length=200)


class KeysIn(_Body):
    keys: list[KeyEntryIn] = Field(min_length=1, max_length=1000)


class RotationIn(_Body):
    ciphertext: str = Field(min_length=1)
    ciphertext_sha256: str = Field(pattern=_HEX32)
    wrapped_keys: list[WrappedKeyIn] = Field(min_length=2, max_length=1000)


class BreakGlassIn(_Body):
    patient_id: str = Field(pattern=_ID)
    justification: str = Field(min_length=1, max_length=1000)
    categories: list[Category] = Field(default_factory=list, max_length=5)
    encryption_key: str = Field(pattern=r"^[0-9a-f]{64}$")


def provenance_view(p: Provenance) -> dict[str, Any]:
    return {
        "author_id": p.author_id,
        "author_address": p.author_address,
        "signed_at": p.signed_at,
        "signature": "0x" + p.signature.hex(),
    }


def record_view(r: RecordMeta) -> dict[str, Any]:
    return {
        "record_id": r.record_id,
        "patient_id": r.patient_id,
        "category": r.category.value,
        "resource_type": r.resource_type,
        "created_by": r.created_by,
        "created_at": r.created_at,
        "latest_version": r.latest_version,
        "shredded": r.shredded_at is not None,
        "shredded_at": r.shredded_at,
    }


def version_view(v: VersionMeta) -> dict[str, Any]:
    return {
        "record_id": v.record_id,
        "version": v.version,
        "resource_type": v.resource_type,
        "content_sha256": v.content_sha256.hex(),
        "ciphertext_sha256": v.ciphertext_sha256.hex(),
        "ciphertext_size": v.ciphertext_size,
        "plaintext_size": v.plaintext_size,
        "provenance": provenance_view(v.provenance),
        "created_at": v.created_at,
        "key_generation": v.key_generation,
        "shredded": v.shredded,
    }
