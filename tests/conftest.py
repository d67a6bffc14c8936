"""Shared fixtures: a cheap-KDF local keystore and a key ring over it."""

from __future__ import annotations

from pathlib import Path

import pytest

from ppml.kms import KeyRing
from ppml.kms.local import KdfParams, LocalKeystore

PASSPHRASE = "correct horse battery staple"
# Tests trade Argon2id cost for speed; the parameters are stored in the keystore file, so every reader
# uses the same ones. Production keystores use the default (64 MiB, 3 passes).
CHEAP_KDF = KdfParams(memory_kib=1024, iterations=1, lanes=1)


@pytest.fixture
def keystore(tmp_path: Path) -> LocalKeystore:
    store = LocalKeystore(tmp_path / "keystore.json", passphrase=PASSPHRASE, kdf=CHEAP_KDF)
    store.create_key("test")
    return store


@pytest.fixture
def keyring(keystore: LocalKeystore) -> KeyRing:
    return KeyRing(backends=(keystore,))
