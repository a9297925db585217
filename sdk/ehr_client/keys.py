"""A user's key pair set: a secp256k1 signing key (an Ethereum account) and an
X25519 encryption key. Private halves stay in this process; only
:class:`PublicKeys` is ever sent anywhere."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding
from ehr_protocol.keys import KeyFormatError, encode_public_key
from ehr_protocol.keys import decode_public_key as decode_public_key
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount


@dataclass(frozen=True)
class PublicKeys:
    """What others may know about a user: signing address and encryption key."""

    address: str
    encryption_key: str  # hex, 32 bytes


class UserKeys:
    """A user's private keys, held in memory only."""

    def __init__(self, signing: LocalAccount, encryption: X25519PrivateKey) -> None:
        self._signing = signing
        self._encryption = encryption

    @classmethod
    def generate(cls) -> UserKeys:
        """Fresh keys from the operating system's random source."""
        account: LocalAccount = Account.create()
        return cls(account, X25519PrivateKey.generate())

    @classmethod
    def from_private_bytes(cls, signing_key: bytes, encryption_key: bytes) -> UserKeys:
        if len(signing_key) != 32 or len(encryption_key) != 32:
            raise KeyFormatError("private keys have 32 bytes")
        account: LocalAccount = Account.from_key(signing_key)
        return cls(account, X25519PrivateKey.from_private_bytes(encryption_key))

    @property
    def account(self) -> LocalAccount:
        """The signing account (secp256k1); use it to sign, never to export."""
        return self._signing

    @property
    def address(self) -> str:
        return str(self._signing.address)

    @property
    def encryption_private_key(self) -> X25519PrivateKey:
        return self._encryption

    @property
    def encryption_public_key(self) -> X25519PublicKey:
        return self._encryption.public_key()

    def public(self) -> PublicKeys:
        return PublicKeys(self.address, encode_public_key(self.encryption_public_key))

    def sign_text(self, text: str) -> bytes:
        """An EIP-191 ``personal_sign`` signature (65 bytes) of ``text``."""
        signed = Account.sign_message(encode_defunct(text=text), private_key=self._signing.key)
        return bytes(signed.signature)

    def signing_key_bytes(self) -> bytes:
        """Raw signing key, for the keystore only."""
        return bytes(self._signing.key)

    def encryption_key_bytes(self) -> bytes:
        """Raw X25519 private key, for the keystore only."""
        from cryptography.hazmat.primitives.serialization import NoEncryption, PrivateFormat

        return self._encryption.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())

    def __repr__(self) -> str:
        return f"UserKeys(address={self.address})"


def write_key_file(path: Path, keys: UserKeys) -> Path:
    """Writes ``keys`` unencrypted as JSON (``signing_key``, ``encryption_key``, hex) to a
    new file readable by its owner only. For operators' local accounts (the local stack's
    administrator); people keep their keys in a passphrase-protected keystore."""
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "address": keys.address,
        "signing_key": "0x" + keys.signing_key_bytes().hex(),
        "encryption_key": "0x" + keys.encryption_key_bytes().hex(),
    }
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        json.dump(document, handle)
    os.chmod(path, 0o600)
    return path


def read_key_file(path: Path) -> UserKeys:
    """The keys of a file written by ``write_key_file``."""
    try:
        document = json.loads(path.read_text())
        return UserKeys.from_private_bytes(
            bytes.fromhex(str(document["signing_key"]).removeprefix("0x")),
            bytes.fromhex(str(document["encryption_key"]).removeprefix("0x")),
        )
    except (ValueError, KeyError, TypeError) as error:
        raise KeyFormatError(f"{path} is not a key file: {error}") from error
