"""Client-side encryption of records and wrapping of their data keys.

The formats are ``ehr_protocol.crypto`` (the record store unwraps with the same code);
this module re-exports them under the SDK's name.

- A record is encrypted with a fresh 32-byte data key (AES-256-GCM, 12-byte
  random nonce). :func:`encrypt_record` returns ``nonce || ciphertext+tag``.
- A data key is wrapped for a recipient's X25519 public key with an ephemeral
  X25519 key: ``shared = X25519(eph, recipient)``,
  ``kek = HKDF-SHA256(shared, salt = eph_pub || recipient_pub, info = WRAP_INFO)``,
  ``wrapped = AES-256-GCM(kek, nonce, data_key, aad = context)``. The wrapped
  form is ``version(1) || eph_pub(32) || nonce(12) || ciphertext+tag(48)`` = 93
  bytes. ``context`` (e.g. a record id) must match on unwrap, so a wrapped key
  cannot be moved to another record.
"""

from __future__ import annotations

from ehr_protocol.crypto import (
    DATA_KEY_BYTES,
    NONCE_BYTES,
    WRAP_INFO,
    WRAP_VERSION,
    WRAPPED_KEY_BYTES,
    CryptoError,
    DecryptionFailed,
    decrypt_record,
    encrypt_record,
    new_data_key,
    unwrap_key,
    wrap_key,
)

__all__ = [
    "DATA_KEY_BYTES",
    "NONCE_BYTES",
    "WRAPPED_KEY_BYTES",
    "WRAP_INFO",
    "WRAP_VERSION",
    "CryptoError",
    "DecryptionFailed",
    "decrypt_record",
    "encrypt_record",
    "new_data_key",
    "unwrap_key",
    "wrap_key",
]
