"""Key material of the service: the break-glass escrow key and provenance signatures.

Both use the protocol's formats (``ehr_protocol.crypto``, ``ehr_protocol.records``), the
client's too, so the service checks exactly what the client made.
"""

from __future__ import annotations

import os
from pathlib import Path

import ehr_protocol.crypto as crypto
import ehr_protocol.records as sdk
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from ehr_protocol.keys import encode_public_key

from services.record_store.domain.model import VersionUpload


class X25519EscrowKey:
    """The ``EscrowKey`` port: an X25519 key held by the service, from the environment
    (hex) or generated at run time into the data dir (mode 0600); never in the repo."""

    def __init__(self, private: X25519PrivateKey) -> None:
        self._private = private

    @classmethod
    def from_hex(cls, value: str) -> X25519EscrowKey:
        return cls(X25519PrivateKey.from_private_bytes(bytes.fromhex(value)))

    @classmethod
    def load_or_create(cls, path: Path) -> X25519EscrowKey:
        if not path.is_file():
            key = X25519PrivateKey.generate()
            raw = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
            path.parent.mkdir(parents=True, exist_ok=True)
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w") as handle:
                handle.write(raw.hex())
        return cls.from_hex(path.read_text().strip())

    @property
    def public_key_hex(self) -> str:
        return encode_public_key(self._private.public_key())

    def opens(self, wrapped: bytes, record_id: str, version: int) -> bool:
        try:
            crypto.unwrap_key(wrapped, self._private, context=sdk.wrap_context(record_id, version))
        except crypto.CryptoError:
            return False
        return True

    def rewrap(self, wrapped: bytes, record_id: str, version: int, recipient_hex: str) -> bytes:
        context = sdk.wrap_context(record_id, version)
        data_key = crypto.unwrap_key(wrapped, self._private, context=context)
        return crypto.wrap_key(data_key, recipient_hex, context=context)


class Eip191ProvenanceVerifier:
    """The ``ProvenanceVerifier`` port over the protocol's provenance statement."""

    def signer(self, upload: VersionUpload) -> str | None:
        prov = upload.provenance
        text = sdk.provenance_text(
            upload.record_id,
            upload.version,
            upload.patient_id,
            upload.category.value,
            upload.resource_type,
            upload.content_sha256,
            prov.author_id,
            prov.signed_at,
        )
        return sdk.provenance_signer(text, prov.signature)
