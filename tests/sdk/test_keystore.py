"""The local keystore: round trip, file mode, wrong passphrase, no overwrite, no
plaintext key on disk."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from ehr_client.keys import KeyFormatError, UserKeys, decode_public_key
from ehr_client.keystore import (
    FAST_SCRYPT_N,
    Keystore,
    KeystoreCorrupt,
    KeystoreExists,
    WrongPassphrase,
)
from eth_account import Account
from eth_account.messages import encode_defunct


def test_create_unlock_round_trip(tmp_path: Path) -> None:
    store = Keystore(tmp_path / "alice" / "keystore.json")
    keys = store.create("correct horse", scrypt_n=FAST_SCRYPT_N)
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    info = store.info()
    assert info.address == keys.address
    assert info.encryption_public_key == keys.public().encryption_key
    opened = store.unlock("correct horse")
    assert opened.signing_key_bytes() == keys.signing_key_bytes()
    assert opened.encryption_key_bytes() == keys.encryption_key_bytes()
    raw = store.path.read_text()
    assert keys.signing_key_bytes().hex() not in raw
    assert keys.encryption_key_bytes().hex() not in raw


def test_wrong_passphrase_and_no_overwrite(tmp_path: Path) -> None:
    store = Keystore(tmp_path / "k.json")
    store.create("right", scrypt_n=FAST_SCRYPT_N)
    before = store.path.read_bytes()
    with pytest.raises(WrongPassphrase):
        store.unlock("wrong")
    with pytest.raises(KeystoreExists):
        store.create("other", scrypt_n=FAST_SCRYPT_N)
    assert store.path.read_bytes() == before


def test_tampered_or_mixed_keystore_is_refused(tmp_path: Path) -> None:
    a, b = Keystore(tmp_path / "a.json"), Keystore(tmp_path / "b.json")
    a.create("pw", scrypt_n=FAST_SCRYPT_N)
    b.create("pw", scrypt_n=FAST_SCRYPT_N)
    doc_a, doc_b = json.loads(a.path.read_text()), json.loads(b.path.read_text())
    doc_a["encryption"] = doc_b["encryption"]  # the X25519 half of another user
    a.path.write_text(json.dumps(doc_a))
    with pytest.raises(WrongPassphrase):
        a.unlock("pw")
    b.path.write_text("[]")
    with pytest.raises(KeystoreCorrupt):
        b.unlock("pw")


def test_text_signature_recovers_to_address() -> None:
    keys = UserKeys.generate()
    signature = keys.sign_text("hello")
    assert (
        Account.recover_message(encode_defunct(text="hello"), signature=signature) == keys.address
    )
    assert decode_public_key(keys.public().encryption_key) is not None
    with pytest.raises(KeyFormatError):
        decode_public_key("abcd")
    with pytest.raises(KeyFormatError):
        decode_public_key("zz" * 32)
