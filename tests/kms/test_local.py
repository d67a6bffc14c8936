"""The local keystore backend: conformance, passphrase handling, corruption, and concurrent writers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ppml.errors import ConfigError, KeystoreError, WrongPassphrase
from ppml.kms import KeyRing
from ppml.kms.local import LocalKeystore
from ppml.kms.passphrase import PASSPHRASE_ENV, PASSPHRASE_FILE_ENV, from_environment_or_prompt
from tests.conftest import CHEAP_KDF, PASSPHRASE
from tests.kms.conformance import KeyManagementConformance


class TestLocalKeystore(KeyManagementConformance):
    @pytest.fixture
    def kms(self, tmp_path: Path) -> LocalKeystore:
        return LocalKeystore(tmp_path / "ks.json", passphrase=PASSPHRASE, kdf=CHEAP_KDF)


def test_wrong_passphrase(keystore: LocalKeystore) -> None:
    other = LocalKeystore(keystore.path, passphrase="not the passphrase")
    with pytest.raises(WrongPassphrase, match=str(keystore.path)):
        other.list_keys()


def test_missing_keystore(tmp_path: Path) -> None:
    store = LocalKeystore(tmp_path / "absent.json", passphrase=PASSPHRASE)
    with pytest.raises(KeystoreError, match="absent.json does not exist"):
        store.generate_data_key("test")


@pytest.mark.parametrize("mutation", ["not json", "flip ciphertext", "flip kdf", "drop field"])
def test_corrupt_keystore(keystore: LocalKeystore, mutation: str) -> None:
    document = json.loads(keystore.path.read_text())
    if mutation == "not json":
        keystore.path.write_text("{oops")
    else:
        if mutation == "flip ciphertext":
            raw = bytearray(__import__("base64").b64decode(document["ciphertext"]))
            raw[3] ^= 1
            document["ciphertext"] = __import__("base64").b64encode(bytes(raw)).decode()
        elif mutation == "flip kdf":
            document["kdf"]["iterations"] += 1
        else:
            del document["nonce"]
        keystore.path.write_text(json.dumps(document))
    fresh = LocalKeystore(keystore.path, passphrase=PASSPHRASE)
    with pytest.raises(KeystoreError, match="keystore.json"):
        fresh.generate_data_key("test")


def test_keystore_is_sealed_and_private(keystore: LocalKeystore) -> None:
    text = keystore.path.read_text()
    assert "material" not in text and '"test"' not in text  # key names and material are both sealed
    assert keystore.path.stat().st_mode & 0o777 == 0o600


def test_short_passphrase_refused_for_new_keystore(tmp_path: Path) -> None:
    store = LocalKeystore(tmp_path / "ks.json", passphrase="short", kdf=CHEAP_KDF)
    with pytest.raises(ConfigError, match="at least 8"):
        store.create_key("k")
    assert not (tmp_path / "ks.json").exists()


def test_passphrase_chain(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PASSPHRASE_ENV, raising=False)
    monkeypatch.delenv(PASSPHRASE_FILE_ENV, raising=False)
    monkeypatch.setattr(sys, "stdin", None)
    with pytest.raises(ConfigError, match=PASSPHRASE_ENV):
        from_environment_or_prompt()(False)
    secret_file = tmp_path / "pass.txt"
    secret_file.write_text("from a file\nsecond line ignored\n")
    monkeypatch.setenv(PASSPHRASE_FILE_ENV, str(secret_file))
    assert from_environment_or_prompt()(False) == "from a file"
    monkeypatch.setenv(PASSPHRASE_ENV, "from the environment")
    assert from_environment_or_prompt()(False) == "from the environment"
    assert from_environment_or_prompt(str(secret_file))(False) == "from a file"
    with pytest.raises(ConfigError, match="cannot read passphrase file"):
        from_environment_or_prompt(str(tmp_path / "missing"))(False)


def test_keyring_routes_by_scheme(keystore: LocalKeystore) -> None:
    ring = KeyRing(backends=(keystore,))
    backend, name = ring.resolve("local:test")
    assert backend is keystore and name == "test"
    with pytest.raises(ConfigError, match="unknown KMS scheme 'vault'"):
        ring.resolve("vault:x")
    with pytest.raises(ConfigError, match="invalid key URI"):
        ring.resolve("no-scheme")


_WRITER = """
import sys
from ppml.kms.local import KdfParams, LocalKeystore
store = LocalKeystore(sys.argv[1], passphrase="{passphrase}", kdf=KdfParams(1024, 1, 1))
for i in range(int(sys.argv[3])):
    store.create_key(f"{{sys.argv[2]}}-{{i}}")
"""


def test_concurrent_writers_lose_nothing(keystore: LocalKeystore) -> None:
    script = _WRITER.format(passphrase=PASSPHRASE)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    writers = [subprocess.Popen([sys.executable, "-c", script, str(keystore.path), tag, "15"], env=env)
               for tag in ("one", "two", "three")]
    assert [w.wait(timeout=120) for w in writers] == [0, 0, 0]
    names = {info.uri for info in keystore.list_keys()}
    expected = {f"local:{tag}-{i}" for tag in ("one", "two", "three") for i in range(15)} | {"local:test"}
    assert names == expected
