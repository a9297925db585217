"""Client-side encryption of records and wrapping of their data keys.

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

import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ehr_protocol.keys import decode_public_key

DATA_KEY_BYTES = 32
NONCE_BYTES = 12
WRAP_VERSION = 1
WRAP_INFO = b"ehr-ledger/key-wrap/v1"
WRAPPED_KEY_BYTES = 1 + 32 + NONCE_BYTES + DATA_KEY_BYTES + 16


class CryptoError(Exception):
    """Root of client crypto errors."""


class DecryptionFailed(CryptoError):
    """Wrong key, wrong context, or tampered bytes."""


def new_data_key() -> bytes:
    """A fresh AES-256 data key."""
    return secrets.token_bytes(DATA_KEY_BYTES)


def _check_key(data_key: bytes) -> None:
    if len(data_key) != DATA_KEY_BYTES:
        raise CryptoError(f"a data key has {DATA_KEY_BYTES} bytes, got {len(data_key)}")


def encrypt_record(plaintext: bytes, data_key: bytes, *, aad: bytes = b"") -> bytes:
    """``nonce || AES-256-GCM(data_key, plaintext, aad)``."""
    _check_key(data_key)
    nonce = secrets.token_bytes(NONCE_BYTES)
    return nonce + AESGCM(data_key).encrypt(nonce, plaintext, aad)


def decrypt_record(blob: bytes, data_key: bytes, *, aad: bytes = b"") -> bytes:
    """Inverse of :func:`encrypt_record`; raises :class:`DecryptionFailed`."""
    _check_key(data_key)
    if len(blob) < NONCE_BYTES + 16:
        raise DecryptionFailed("ciphertext too short")
    try:
        return AESGCM(data_key).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad)
    except InvalidTag as exc:
        raise DecryptionFailed("record does not decrypt with this key") from exc


def _raw(key: X25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def _kek(shared: bytes, ephemeral: bytes, recipient: bytes) -> bytes:
    return HKDF(algorithm=SHA256(), length=32, salt=ephemeral + recipient, info=WRAP_INFO).derive(
        shared
    )


def wrap_key(
    data_key: bytes, recipient: X25519PublicKey | str | bytes, *, context: bytes = b""
) -> bytes:
    """Wrap ``data_key`` for ``recipient`` (a key object, 32 raw bytes or hex)."""
    _check_key(data_key)
    public = recipient if isinstance(recipient, X25519PublicKey) else decode_public_key(recipient)
    ephemeral = X25519PrivateKey.generate()
    eph_raw, rec_raw = _raw(ephemeral.public_key()), _raw(public)
    shared = ephemeral.exchange(public)
    if shared == bytes(32):
        raise CryptoError("recipient key is a low-order point")
    nonce = secrets.token_bytes(NONCE_BYTES)
    sealed = AESGCM(_kek(shared, eph_raw, rec_raw)).encrypt(nonce, data_key, context)
    return bytes([WRAP_VERSION]) + eph_raw + nonce + sealed


def unwrap_key(wrapped: bytes, recipient: X25519PrivateKey, *, context: bytes = b"") -> bytes:
    """The data key inside ``wrapped``; raises :class:`DecryptionFailed`."""
    if len(wrapped) != WRAPPED_KEY_BYTES or wrapped[0] != WRAP_VERSION:
        raise DecryptionFailed("not a wrapped key of a known version")
    eph_raw, nonce, sealed = wrapped[1:33], wrapped[33:45], wrapped[45:]
    try:
        shared = recipient.exchange(X25519PublicKey.from_public_bytes(eph_raw))
    except ValueError as exc:
        raise DecryptionFailed("invalid ephemeral key") from exc
    kek = _kek(shared, eph_raw, _raw(recipient.public_key()))
    try:
        return AESGCM(kek).decrypt(nonce, sealed, context)
    except InvalidTag as exc:
        raise DecryptionFailed("wrapped key is not for this recipient or context") from exc
