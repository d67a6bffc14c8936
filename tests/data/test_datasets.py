"""Encrypted datasets: every format and mode round-trips exactly; commits are atomic; tampering fails."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import pyarrow as pa
import pytest

from ppml.data import Mode, open_dataset, read_dataset, write_dataset
from ppml.data.dataset import DatasetWriter
from ppml.errors import (
    ConfigError,
    InputError,
    InvalidCiphertext,
    KeyProviderError,
    SegmentAuthenticationFailed,
)
from ppml.kms import KeyRing
from ppml.kms.local import LocalKeystore
from tests.conftest import CHEAP_KDF, PASSPHRASE
from tests.data.fidelity import CASES, fidelity_table


def _parts(url: Path) -> list[Path]:
    return sorted(p for p in url.iterdir() if p.name.startswith("part-"))


@pytest.mark.parametrize(("file_format", "mode"), CASES)
def test_round_trip_keeps_every_type(tmp_path: Path, keyring: KeyRing, file_format: str, mode: str) -> None:
    table = fidelity_table()
    write_dataset(table, str(tmp_path / "d"), keyring, file_format=file_format, mode=mode, key_uri="local:test",
                  rows_per_part=3)
    assert len(_parts(tmp_path / "d")) == 2
    assert read_dataset(str(tmp_path / "d"), keyring).equals(table)


@pytest.mark.parametrize(("file_format", "mode"), CASES)
def test_empty_dataset_keeps_its_schema(tmp_path: Path, keyring: KeyRing, file_format: str, mode: str) -> None:
    empty = fidelity_table().slice(0, 0)
    write_dataset(empty, str(tmp_path / "e"), keyring, file_format=file_format, mode=mode, key_uri="local:test")
    back = read_dataset(str(tmp_path / "e"), keyring)
    assert back.num_rows == 0 and back.schema.equals(empty.schema)


def test_bigdl_mode_round_trip(tmp_path: Path, keyring: KeyRing) -> None:
    (tmp_path / "primary.key").write_text("QURHSk1QU1ZZXF9iZWhrbg==\n")
    options = {"bigdl_key_file": str(tmp_path / "primary.key"), "insecure_bigdl_format": True}
    table = fidelity_table().select(["id", "name", "amount", "day"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        write_dataset(table, str(tmp_path / "b"), keyring, file_format="csv", mode="aes/cbc/pkcs5padding",
                      options=options, rows_per_part=2)
        assert read_dataset(str(tmp_path / "b"), keyring, options=options).equals(table)
    assert (tmp_path / "b" / ".meta").exists()


def test_bigdl_mode_writes_need_the_opt_in(tmp_path: Path, keyring: KeyRing) -> None:
    (tmp_path / "primary.key").write_text("QURHSk1QU1ZZXF9iZWhrbg==\n")
    with pytest.raises(ConfigError, match="insecure"):
        write_dataset(fidelity_table(), str(tmp_path / "b"), keyring, file_format="csv", mode="aes/cbc/pkcs5padding",
                      options={"bigdl_key_file": str(tmp_path / "primary.key")})


def test_no_plaintext_in_encrypted_parts(tmp_path: Path, keyring: KeyRing) -> None:
    table = pa.table({"secret": ["CANARY-7f3a9c"] * 1000})
    for file_format, mode in CASES:
        if mode == "plain_text" or (mode.startswith("aes_gcm") and file_format != "parquet"):
            continue
        target = tmp_path / f"{file_format}-{mode}"
        write_dataset(table, str(target), keyring, file_format=file_format, mode=mode, key_uri="local:test")
        for path in target.rglob("*"):
            assert not path.is_file() or b"CANARY-7f3a9c" not in path.read_bytes(), path


def test_append_keeps_older_parts_readable(tmp_path: Path, keyring: KeyRing, keystore: LocalKeystore) -> None:
    first, second = fidelity_table().slice(0, 2), fidelity_table().slice(2)
    url = str(tmp_path / "d")
    write_dataset(first, url, keyring, key_uri="local:test")
    keystore.rotate_key("test")  # later parts are wrapped by the new version; old ones still read
    write_dataset(second, url, keyring, key_uri="local:test", write_mode="append")
    assert read_dataset(url, keyring).equals(pa.concat_tables([first, second]))
    manifest = open_dataset(url, keyring).manifest
    assert manifest is not None and [c["mode"] for c in manifest.commits] == ["error", "append"]


def test_overwrite_replaces_and_cleans_up(tmp_path: Path, keyring: KeyRing) -> None:
    url = str(tmp_path / "d")
    write_dataset(fidelity_table(), url, keyring, key_uri="local:test", rows_per_part=1)
    old_parts = _parts(tmp_path / "d")
    write_dataset(fidelity_table().slice(0, 1), url, keyring, key_uri="local:test", write_mode="overwrite")
    assert read_dataset(url, keyring).num_rows == 1
    assert not set(old_parts) & set(_parts(tmp_path / "d"))


def test_error_mode_refuses_an_existing_dataset(tmp_path: Path, keyring: KeyRing) -> None:
    write_dataset(fidelity_table(), str(tmp_path / "d"), keyring, key_uri="local:test")
    with pytest.raises(InputError, match="dataset exists"):
        write_dataset(fidelity_table(), str(tmp_path / "d"), keyring, key_uri="local:test")


def test_append_refuses_another_schema(tmp_path: Path, keyring: KeyRing) -> None:
    write_dataset(fidelity_table(), str(tmp_path / "d"), keyring, key_uri="local:test")
    with pytest.raises(ConfigError, match="schema differs"):
        write_dataset(pa.table({"x": [1]}), str(tmp_path / "d"), keyring, key_uri="local:test", write_mode="append")


def test_failed_write_leaves_nothing_that_looks_like_a_result(tmp_path: Path, keyring: KeyRing) -> None:
    url = str(tmp_path / "d")
    writer = DatasetWriter.begin(url, fidelity_table().schema, keyring, key_uri="local:test")
    writer.write(fidelity_table())
    writer.abort()  # the job failed before its commit
    assert not (tmp_path / "d").exists() or not list((tmp_path / "d").iterdir())
    with pytest.raises(InputError):
        read_dataset(url, keyring)


def test_uncommitted_parts_are_invisible(tmp_path: Path, keyring: KeyRing) -> None:
    url = str(tmp_path / "d")
    write_dataset(fidelity_table(), url, keyring, key_uri="local:test")
    writer = DatasetWriter.begin(url, fidelity_table().schema, keyring, key_uri="local:test", write_mode="append")
    writer.write(fidelity_table())  # staged, never committed
    assert read_dataset(url, keyring).num_rows == fidelity_table().num_rows


def test_swapped_part_is_detected(tmp_path: Path, keyring: KeyRing) -> None:
    write_dataset(fidelity_table(), str(tmp_path / "a"), keyring, key_uri="local:test")
    write_dataset(fidelity_table().slice(0, 1), str(tmp_path / "b"), keyring, key_uri="local:test")
    target, intruder = _parts(tmp_path / "a")[0], _parts(tmp_path / "b")[0]
    shutil.copy(intruder, target)
    with pytest.raises(InvalidCiphertext, match=f"{target.name}.*not the one the dataset manifest committed"):
        read_dataset(str(tmp_path / "a"), keyring)


@pytest.mark.parametrize("mode", ["aes_gcm_v1", "aes_gcm_ctr_v1"])
def test_swapped_parquet_modular_encryption_part_is_detected(tmp_path: Path, keyring: KeyRing, mode: str) -> None:
    write_dataset(fidelity_table(), str(tmp_path / "a"), keyring, mode=mode, key_uri="local:test", rows_per_part=2)
    first, second = _parts(tmp_path / "a")
    shutil.copy(second, first)  # same dataset, same key: only the AAD prefix tells them apart
    with pytest.raises(InvalidCiphertext, match=first.name):
        read_dataset(str(tmp_path / "a"), keyring)


def test_missing_part(tmp_path: Path, keyring: KeyRing) -> None:
    write_dataset(fidelity_table(), str(tmp_path / "d"), keyring, key_uri="local:test", rows_per_part=2)
    victim = _parts(tmp_path / "d")[1]
    victim.unlink()
    with pytest.raises(InputError, match=f"{victim.name}: part file is missing"):
        read_dataset(str(tmp_path / "d"), keyring)


@pytest.mark.parametrize("mode", ["ppml", "aes_gcm_v1"])
def test_tampered_part_fails_naming_the_file(tmp_path: Path, keyring: KeyRing, mode: str) -> None:
    write_dataset(fidelity_table(), str(tmp_path / "d"), keyring, mode=mode, key_uri="local:test")
    part = _parts(tmp_path / "d")[0]
    data = bytearray(part.read_bytes())
    data[len(data) // 2] ^= 0x04
    part.write_bytes(bytes(data))
    with pytest.raises(InvalidCiphertext, match=part.name):
        read_dataset(str(tmp_path / "d"), keyring)


def test_tampered_manifest_fails(tmp_path: Path, keyring: KeyRing) -> None:
    write_dataset(fidelity_table(), str(tmp_path / "d"), keyring, key_uri="local:test")
    manifest = tmp_path / "d" / "_ppml_dataset.json.ppml"
    data = bytearray(manifest.read_bytes())
    data[-20] ^= 0x01
    manifest.write_bytes(bytes(data))
    with pytest.raises(SegmentAuthenticationFailed, match="dataset manifest"):
        read_dataset(str(tmp_path / "d"), keyring)


def test_wrong_key(tmp_path: Path, keyring: KeyRing) -> None:
    write_dataset(fidelity_table(), str(tmp_path / "d"), keyring, key_uri="local:test")
    other = LocalKeystore(tmp_path / "other.json", passphrase=PASSPHRASE, kdf=CHEAP_KDF)
    other.create_key("test")
    with pytest.raises(KeyProviderError, match="cannot unwrap"):
        read_dataset(str(tmp_path / "d"), KeyRing(backends=(other,)))


def test_per_column_keys(tmp_path: Path, keyring: KeyRing, keystore: LocalKeystore) -> None:
    keystore.create_key("pii")
    table = fidelity_table()
    write_dataset(table, str(tmp_path / "d"), keyring, mode="aes_gcm_v1", key_uri="local:test",
                  column_keys={"local:pii": ["name"], "local:test": ["amount"]})
    assert read_dataset(str(tmp_path / "d"), keyring).equals(table)
    keystore.disable_key("pii")  # the name column is protected by its own key
    with pytest.raises(KeyProviderError, match="local:pii"):
        read_dataset(str(tmp_path / "d"), keyring)


def test_bad_mode_and_format(tmp_path: Path, keyring: KeyRing) -> None:
    with pytest.raises(ConfigError, match="unknown encryption mode"):
        write_dataset(fidelity_table(), str(tmp_path / "d"), keyring, mode="rot13", key_uri="local:test")
    with pytest.raises(ConfigError, match="Parquet files only"):
        write_dataset(fidelity_table(), str(tmp_path / "d"), keyring, file_format="csv", mode="aes_gcm_v1",
                      key_uri="local:test")
    with pytest.raises(ConfigError, match="needs a key URI"):
        write_dataset(fidelity_table(), str(tmp_path / "d"), keyring)
    assert Mode.parse("AES_CBC_PKCS5PADDING") is Mode.BIGDL_CBC


@pytest.mark.parametrize("split", [1, 7, 100, 4096, 1 << 20])
def test_line_splits_cover_every_row_once(tmp_path: Path, keyring: KeyRing, split: int) -> None:
    from dataclasses import replace

    from ppml.data.parts import read_part

    rows = pa.table({"k": pa.array(range(3000), pa.int64()), "v": [f"value {i}" for i in range(3000)]})
    write_dataset(rows, str(tmp_path / "d"), keyring, file_format="csv", key_uri="local:test")
    source = open_dataset(str(tmp_path / "d"), keyring).sources[0]
    assert source.part is not None
    pieces = [read_part(replace(source, byte_range=(start, start + split)), keyring)
              for start in range(0, source.part.size, split)]
    assert pa.concat_tables(pieces).equals(rows)
