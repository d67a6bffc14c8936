"""The file recipes on a non-local fsspec filesystem, and their atomicity."""

from __future__ import annotations

import fsspec
import pytest

import ppml
from ppml.kms import KeyRing


@pytest.fixture
def memfs():  # type: ignore[no-untyped-def]
    fs = fsspec.filesystem("memory")
    fs.store.clear()
    fs.pseudo_dirs.clear()
    fs.pseudo_dirs.append("")
    yield fs
    fs.store.clear()


def test_round_trip_on_memory_filesystem(memfs, keyring: KeyRing) -> None:  # type: ignore[no-untyped-def]
    plaintext = bytes(range(256)) * 20_000
    memfs.pipe("/in/data.bin", plaintext)
    header = ppml.encrypt_file("memory://in/data.bin", "memory://out/data.bin.ppml", "local:test", keyring=keyring)
    assert header.metadata == {"name": "data.bin"}
    info = ppml.inspect_file("memory://out/data.bin.ppml")
    assert info.plaintext_size == len(plaintext) and info.key_uri == "local:test"
    ppml.decrypt_file("memory://out/data.bin.ppml", "memory://back/data.bin", keyring=keyring)
    assert memfs.cat("/back/data.bin") == plaintext
    with ppml.open_encrypted("memory://out/data.bin.ppml", keyring=keyring) as handle:
        handle.seek(2_000_000)
        assert handle.read(10) == plaintext[2_000_000:2_000_010]


def test_tree_on_memory_filesystem_is_all_or_nothing(memfs, keyring: KeyRing) -> None:  # type: ignore[no-untyped-def]
    for name in ("a", "b", "c"):
        memfs.pipe(f"/src/{name}.txt", name.encode() * 10_000)
    assert ppml.encrypt_tree("memory://src", "memory://enc", "local:test", keyring=keyring) == 3
    memfs.pipe("/enc/b.txt.ppml", memfs.cat("/enc/b.txt.ppml")[:-3])
    with pytest.raises(ppml.InvalidCiphertext, match="b.txt.ppml"):
        ppml.decrypt_tree("memory://enc", "memory://dec", keyring=keyring)
    assert not memfs.exists("/dec")
    assert not [path for path in memfs.find("/") if "partial" in path]


def test_failed_encrypt_leaves_no_output(keyring: KeyRing, tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "in.txt").write_text("x" * 1000)
    with pytest.raises(ppml.KeyNotFound):
        ppml.encrypt_file(str(tmp_path / "in.txt"), str(tmp_path / "out.ppml"), "local:absent", keyring=keyring)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt", "keystore.json", "keystore.json.lock"]
