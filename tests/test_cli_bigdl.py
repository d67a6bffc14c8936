"""BigDL PPML files through the CLI: read with a verified HMAC, write only behind the insecure flag."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import Run

VECTORS = Path(__file__).parent / "vectors" / "bigdl"


@pytest.fixture
def primary_key(tmp_path: Path) -> Path:
    vector = json.loads((VECTORS / "vectors.json").read_text())["vectors"][0]
    path = tmp_path / "primary.key"
    path.write_text(vector["primary_key"] + "\n")
    return path


def _plaintext(name: str) -> bytes:
    vector = next(v for v in json.loads((VECTORS / "vectors.json").read_text())["vectors"] if v["file"] == name)
    return bytes.fromhex(vector["plaintext_hex"])


def test_decrypts_a_bigdl_file(ppml: Run, primary_key: Path, tmp_path: Path) -> None:
    result = ppml("decrypt", str(VECTORS / "common_plainkey_csv.cbc"), "out.csv", "--bigdl-key-file", str(primary_key))
    assert result.code == 0, result.err
    assert (tmp_path / "out.csv").read_bytes() == _plaintext("common_plainkey_csv.cbc")


def test_tampered_bigdl_file_is_refused(ppml: Run, primary_key: Path, tmp_path: Path) -> None:
    data = bytearray((VECTORS / "common_plainkey_csv.cbc").read_bytes())
    data[410] ^= 0x01  # a ciphertext bit BigDL's own reader would let through
    (tmp_path / "bad.cbc").write_bytes(bytes(data))
    result = ppml("decrypt", "bad.cbc", "out.csv", "--bigdl-key-file", str(primary_key))
    assert result.code == 4 and "bad.cbc" in result.err and "HMAC" in result.err
    assert not (tmp_path / "out.csv").exists()


def test_hint_when_a_bigdl_file_is_decrypted_as_ppml(ppml: Run) -> None:
    result = ppml("decrypt", str(VECTORS / "common_plainkey_csv.cbc"), "out.csv")
    assert result.code == 4 and "--bigdl-key-file" in result.err


def test_wrong_bigdl_primary_key(ppml: Run, tmp_path: Path) -> None:
    (tmp_path / "other.key").write_text("AAAAAAAAAAAAAAAAAAAAAA==\n")
    result = ppml("decrypt", str(VECTORS / "common_plainkey_csv.cbc"), "out.csv", "--bigdl-key-file", "other.key")
    assert result.code in (4, 5) and not (tmp_path / "out.csv").exists()


def test_writing_bigdl_needs_the_flag_and_round_trips(ppml: Run, primary_key: Path, tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "part-0.csv").write_text("name,age\nann,31\n")
    (tmp_path / "data" / "part-1.csv").write_text("name,age\nbob,42\n")
    with pytest.warns(UserWarning, match="BigDL"):
        result = ppml("encrypt", "data", "bigdl", "--insecure-bigdl-format", "common",
                      "--bigdl-key-file", str(primary_key))
    assert result.code == 0 and "not authenticated" in result.err
    assert {p.name for p in (tmp_path / "bigdl").iterdir()} == {"part-0.csv.cbc", "part-1.csv.cbc", ".meta"}
    assert ppml("decrypt", "bigdl", "plain", "--bigdl-key-file", str(primary_key)).code == 0
    assert (tmp_path / "plain" / "part-1.csv").read_text() == "name,age\nbob,42\n"


def test_native_variant(ppml: Run, primary_key: Path, tmp_path: Path) -> None:
    shutil.copy(VECTORS / "common_plainkey_csv.cbc", tmp_path / "x.cbc")
    (tmp_path / "in.csv").write_text("a,b\n1,2\n")
    with pytest.warns(UserWarning):
        assert ppml("encrypt", "in.csv", "n.cbc", "--insecure-bigdl-format", "native",
                    "--bigdl-key-file", str(primary_key)).code == 0
    with pytest.warns(UserWarning, match="unauthenticated|not authenticated|no MAC"):
        result = ppml("decrypt", "n.cbc", "n.csv", "--bigdl-variant", "native", "--bigdl-key-file", str(primary_key))
    assert result.code == 0 and (tmp_path / "n.csv").read_text() == "a,b\n1,2\n"
