"""The record formats both sides agree on: the key-wrap context and ciphertext AAD of a
version, the canonical JSON of a resource, the provenance statement an author signs."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from eth_account import Account
from eth_account.messages import encode_defunct

ESCROW_HOLDER = "escrow:record-store"
"""The holder id of the data key copy wrapped for the record store's break-glass escrow key."""


def wrap_context(record_id: str, version: int) -> bytes:
    """The context a version's data key is wrapped under."""
    return f"ehr-record:{record_id}:v{version}".encode()


def record_aad(record_id: str, version: int, patient_id: str) -> bytes:
    """The additional authenticated data of a version's ciphertext."""
    return f"ehr-record:{record_id}:v{version}:patient:{patient_id}".encode()


def canonical_json(resource: Mapping[str, Any]) -> bytes:
    return json.dumps(resource, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def provenance_text(
    record_id: str,
    version: int,
    patient_id: str,
    category: str,
    resource_type: str,
    content_sha256: bytes,
    author_id: str,
    signed_at: str,
) -> str:
    """The statement an author signs for one version (EIP-191 ``personal_sign``)."""
    return (
        "EHR Ledger record provenance\n"
        f"Record: {record_id}\n"
        f"Version: {version}\n"
        f"Patient: {patient_id}\n"
        f"Category: {category}\n"
        f"Resource type: {resource_type}\n"
        f"Content SHA-256: {content_sha256.hex()}\n"
        f"Author: {author_id}\n"
        f"Signed at: {signed_at}"
    )


def provenance_signer(text: str, signature: bytes) -> str | None:
    """The address that signed ``text``, or None for a malformed signature."""
    try:
        return str(Account.recover_message(encode_defunct(text=text), signature=signature))
    except Exception:
        return None
