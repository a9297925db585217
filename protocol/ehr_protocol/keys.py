"""The wire format of an X25519 public (encryption) key: 32 bytes as 64 hex characters."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat


class KeyFormatError(ValueError):
    """A public or private key has the wrong length or encoding."""


def encode_public_key(key: X25519PublicKey) -> str:
    """An X25519 public key as 64 lowercase hex characters (the wire format)."""
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw).hex()


def decode_public_key(value: str | bytes) -> X25519PublicKey:
    """Parse an X25519 public key from 32 raw bytes or 64 hex characters."""
    try:
        raw = value if isinstance(value, bytes) else bytes.fromhex(value.removeprefix("0x"))
    except ValueError as exc:
        raise KeyFormatError("encryption key is not hex") from exc
    if len(raw) != 32:
        raise KeyFormatError(f"an X25519 public key has 32 bytes, got {len(raw)}")
    return X25519PublicKey.from_public_bytes(raw)
