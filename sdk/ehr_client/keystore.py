"""The local keystore: one JSON file per user, readable only by its owner (0600).

Layout (version 1)::

    {
      "version": 1,
      "address": "0x…",                    # public, for display and lookup
      "encryption_public_key": "…hex…",     # public
      "signing": { …eth-account keystore v3 JSON (scrypt, AES-128-CTR)… },
      "encryption": {                       # the X25519 private key
        "kdf": "scrypt", "n": …, "r": 8, "p": 1, "salt": "hex",
        "cipher": "aes-256-gcm", "nonce": "hex", "ciphertext": "hex"
      }
    }

Both private keys are encrypted with the passphrase; the AES-GCM associated data
binds the X25519 ciphertext to the address, so halves of two keystores cannot be
mixed. A wrong passphrase raises :class:`WrongPassphrase`.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from eth_account import Account

from ehr_client.keys import UserKeys

VERSION = 1
#: scrypt cost of a real keystore (about 0.3-1 s per unlock on a laptop).
DEFAULT_SCRYPT_N = 2**17
#: A cheap cost for tests and load generators that create many users.
FAST_SCRYPT_N = 2**10


class KeystoreError(Exception):
    """Root of keystore errors."""


class WrongPassphrase(KeystoreError):
    """The passphrase does not open this keystore."""


class KeystoreCorrupt(KeystoreError):
    """The file is not a keystore of a known version."""


class KeystoreExists(KeystoreError):
    """A keystore already exists at this path (it is never overwritten)."""


@dataclass(frozen=True)
class KeystoreInfo:
    """The public part of a keystore, readable without the passphrase."""

    path: Path
    address: str
    encryption_public_key: str


def _scrypt(passphrase: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase.encode())


def encrypt_keys(
    keys: UserKeys, passphrase: str, *, scrypt_n: int = DEFAULT_SCRYPT_N
) -> dict[str, Any]:
    """The keystore document of ``keys`` (nothing is written)."""
    if not passphrase:
        raise KeystoreError("a passphrase is required")
    signing = Account.encrypt(
        keys.signing_key_bytes(), passphrase, kdf="scrypt", iterations=scrypt_n
    )
    salt, nonce = secrets.token_bytes(16), secrets.token_bytes(12)
    r, p = 8, 1
    kek = _scrypt(passphrase, salt, scrypt_n, r, p)
    public = keys.public()
    ciphertext = AESGCM(kek).encrypt(nonce, keys.encryption_key_bytes(), public.address.encode())
    return {
        "version": VERSION,
        "address": public.address,
        "encryption_public_key": public.encryption_key,
        "signing": signing,
        "encryption": {
            "kdf": "scrypt",
            "n": scrypt_n,
            "r": r,
            "p": p,
            "salt": salt.hex(),
            "cipher": "aes-256-gcm",
            "nonce": nonce.hex(),
            "ciphertext": ciphertext.hex(),
        },
    }


def decrypt_keys(document: dict[str, Any], passphrase: str) -> UserKeys:
    """Open a keystore document with ``passphrase``."""
    try:
        if document["version"] != VERSION:
            raise KeystoreCorrupt(f"unknown keystore version {document['version']!r}")
        enc = document["encryption"]
        address = str(document["address"])
        salt, nonce = bytes.fromhex(enc["salt"]), bytes.fromhex(enc["nonce"])
        ciphertext = bytes.fromhex(enc["ciphertext"])
        n, r, p = int(enc["n"]), int(enc["r"]), int(enc["p"])
        signing_doc = document["signing"]
    except (KeyError, TypeError, ValueError) as exc:
        raise KeystoreCorrupt(f"not a keystore: {exc}") from exc
    try:
        signing_key = bytes(Account.decrypt(signing_doc, passphrase))
    except ValueError as exc:
        raise WrongPassphrase("wrong passphrase") from exc
    try:
        x25519 = AESGCM(_scrypt(passphrase, salt, n, r, p)).decrypt(
            nonce, ciphertext, address.encode()
        )
    except InvalidTag as exc:
        raise WrongPassphrase("wrong passphrase or tampered keystore") from exc
    keys = UserKeys.from_private_bytes(signing_key, x25519)
    if keys.address != address or keys.public().encryption_key != document.get(
        "encryption_public_key"
    ):
        raise KeystoreCorrupt("keystore public part does not match its keys")
    return keys


class Keystore:
    """A keystore file on disk."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def exists(self) -> bool:
        return self.path.is_file()

    def create(
        self, passphrase: str, *, keys: UserKeys | None = None, scrypt_n: int = DEFAULT_SCRYPT_N
    ) -> UserKeys:
        """Generate (or take) keys and write them encrypted, mode 0600; never overwrites."""
        keys = keys or UserKeys.generate()
        document = encrypt_keys(keys, passphrase, scrypt_n=scrypt_n)
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError as exc:
            raise KeystoreExists(f"a keystore already exists at {self.path}") from exc
        with os.fdopen(fd, "w") as handle:
            json.dump(document, handle, indent=2)
        os.chmod(self.path, 0o600)
        return keys

    def _document(self) -> dict[str, Any]:
        try:
            document = json.loads(self.path.read_text())
        except FileNotFoundError as exc:
            raise KeystoreError(f"no keystore at {self.path}") from exc
        except json.JSONDecodeError as exc:
            raise KeystoreCorrupt(f"{self.path} is not JSON") from exc
        if not isinstance(document, dict):
            raise KeystoreCorrupt(f"{self.path} is not a keystore")
        return document

    def info(self) -> KeystoreInfo:
        """The public part, without the passphrase."""
        document = self._document()
        try:
            return KeystoreInfo(
                self.path, str(document["address"]), str(document["encryption_public_key"])
            )
        except KeyError as exc:
            raise KeystoreCorrupt(f"{self.path} lacks {exc}") from exc

    def unlock(self, passphrase: str) -> UserKeys:
        """The private keys, decrypted in memory."""
        return decrypt_keys(self._document(), passphrase)
