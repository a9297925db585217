"""Record encryption and X25519 key wrapping of the SDK."""

from __future__ import annotations

import pytest
from ehr_client.crypto import (
    WRAPPED_KEY_BYTES,
    CryptoError,
    DecryptionFailed,
    decrypt_record,
    encrypt_record,
    new_data_key,
    unwrap_key,
    wrap_key,
)
from ehr_client.keys import UserKeys


def test_record_round_trip_and_tamper_detection() -> None:
    key = new_data_key()
    blob = encrypt_record(b"blood panel: normal", key, aad=b"record-1")
    assert b"blood panel" not in blob
    assert decrypt_record(blob, key, aad=b"record-1") == b"blood panel: normal"
    assert encrypt_record(b"x", key) != encrypt_record(b"x", key)  # fresh nonce
    with pytest.raises(DecryptionFailed):
        decrypt_record(blob, key, aad=b"record-2")
    with pytest.raises(DecryptionFailed):
        decrypt_record(blob, new_data_key(), aad=b"record-1")
    flipped = blob[:-1] + bytes([blob[-1] ^ 1])
    with pytest.raises(DecryptionFailed):
        decrypt_record(flipped, key, aad=b"record-1")
    with pytest.raises(CryptoError):
        encrypt_record(b"x", b"short")


def test_wrap_for_recipient_only() -> None:
    patient, provider = UserKeys.generate(), UserKeys.generate()
    key = new_data_key()
    for recipient in (
        patient.encryption_public_key,
        patient.public().encryption_key,
        bytes.fromhex(patient.public().encryption_key),
    ):
        wrapped = wrap_key(key, recipient, context=b"rec-9")
        assert len(wrapped) == WRAPPED_KEY_BYTES
        assert unwrap_key(wrapped, patient.encryption_private_key, context=b"rec-9") == key
    wrapped = wrap_key(key, patient.encryption_public_key, context=b"rec-9")
    with pytest.raises(DecryptionFailed):
        unwrap_key(wrapped, provider.encryption_private_key, context=b"rec-9")
    with pytest.raises(DecryptionFailed):
        unwrap_key(wrapped, patient.encryption_private_key, context=b"rec-10")
    with pytest.raises(DecryptionFailed):
        unwrap_key(wrapped[:-1], patient.encryption_private_key, context=b"rec-9")
    assert wrap_key(key, patient.encryption_public_key) != wrap_key(
        key, patient.encryption_public_key
    )
