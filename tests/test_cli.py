"""The ``ppml`` command end to end: exit codes, messages naming files, atomic outputs, key rotation."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from ppml.cli import cli
from tests.conftest import PASSPHRASE, Run


@pytest.fixture
def csv_file(tmp_path: Path) -> Path:
    path = tmp_path / "people.csv"
    path.write_bytes(b"name,age,job\n" + b"".join(b"p%d,%d,Developer\n" % (i, 20 + i % 30) for i in range(50_000)))
    return path


def _listing(directory: Path) -> set[str]:
    return {p.name for p in directory.rglob("*")}


def test_round_trip_file(ppml: Run, csv_file: Path, tmp_path: Path) -> None:
    assert ppml("encrypt", "people.csv", "people.csv.ppml", "--key", "local:sales").code == 0
    assert b"Developer" not in (tmp_path / "people.csv.ppml").read_bytes()
    result = ppml("decrypt", "people.csv.ppml", "back.csv")
    assert result.code == 0, result.err
    assert (tmp_path / "back.csv").read_bytes() == csv_file.read_bytes()


def test_round_trip_directory(ppml: Run, tmp_path: Path) -> None:
    (tmp_path / "data" / "sub").mkdir(parents=True)
    (tmp_path / "data" / "a.csv").write_text("x\n1\n")
    (tmp_path / "data" / "sub" / "b.json").write_text('{"k": 2}\n')
    assert ppml("encrypt", "data", "enc", "--key", "local:sales").code == 0
    assert _listing(tmp_path / "enc") == {"a.csv.ppml", "sub", "b.json.ppml"}
    assert ppml("decrypt", "enc", "plain").code == 0
    assert (tmp_path / "plain" / "sub" / "b.json").read_text() == '{"k": 2}\n'


def test_inspect_shows_header_but_no_secret(ppml: Run, csv_file: Path, tmp_path: Path) -> None:
    ppml("encrypt", "people.csv", "p.ppml", "--key", "local:sales")
    result = ppml("inspect", "p.ppml", "--json")
    assert result.code == 0
    assert '"key_uri": "local:sales"' in result.out and f'"plaintext_size": {csv_file.stat().st_size}' in result.out
    from ppml.fileformat import read_header

    with open(tmp_path / "p.ppml", "rb") as handle:
        header = read_header(handle, "p.ppml")
    assert header.wrapped_key.hex() not in result.out and header.key_check.hex() not in result.out


def test_refuses_to_overwrite_without_force(ppml: Run, csv_file: Path, tmp_path: Path) -> None:
    (tmp_path / "out.ppml").write_bytes(b"precious")
    result = ppml("encrypt", "people.csv", "out.ppml", "--key", "local:sales")
    assert result.code == 3 and "out.ppml: output exists" in result.err
    assert (tmp_path / "out.ppml").read_bytes() == b"precious"
    assert ppml("encrypt", "people.csv", "out.ppml", "--key", "local:sales", "--force").code == 0
    assert (tmp_path / "out.ppml").read_bytes()[:4] == b"PPML"


def test_missing_input(ppml: Run, tmp_path: Path) -> None:
    result = ppml("decrypt", "nothing.ppml", "out.csv")
    assert result.code == 3 and "nothing.ppml: no such file" in result.err
    assert not (tmp_path / "out.csv").exists()


@pytest.mark.parametrize("offset", [3, 200, -5, -40_000])
def test_tampered_file_fails_and_leaves_nothing(ppml: Run, csv_file: Path, tmp_path: Path, offset: int) -> None:
    ppml("encrypt", "people.csv", "p.ppml", "--key", "local:sales", "--segment-size", "65536")
    data = bytearray((tmp_path / "p.ppml").read_bytes())
    data[offset] ^= 0x10
    (tmp_path / "p.ppml").write_bytes(bytes(data))
    before = _listing(tmp_path)
    result = ppml("decrypt", "p.ppml", "out.csv")
    assert result.code == 4, result.err
    assert "p.ppml" in result.err and "error:" in result.err
    assert _listing(tmp_path) == before  # no output, no partial file


def test_truncated_file(ppml: Run, csv_file: Path, tmp_path: Path) -> None:
    ppml("encrypt", "people.csv", "p.ppml", "--key", "local:sales", "--segment-size", "65536")
    data = (tmp_path / "p.ppml").read_bytes()
    (tmp_path / "p.ppml").write_bytes(data[: len(data) // 2])
    result = ppml("decrypt", "p.ppml", "out.csv")
    assert result.code == 4 and "p.ppml" in result.err
    assert not (tmp_path / "out.csv").exists()


def test_failed_directory_decrypt_leaves_no_directory(ppml: Run, tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    for name in "abc":
        (tmp_path / "data" / f"{name}.txt").write_text(name * 1000)
    ppml("encrypt", "data", "enc", "--key", "local:sales")
    damaged = tmp_path / "enc" / "c.txt.ppml"
    damaged.write_bytes(damaged.read_bytes()[:-1])
    result = ppml("decrypt", "enc", "plain")
    assert result.code == 4 and "c.txt.ppml" in result.err
    assert not (tmp_path / "plain").exists()
    assert not [p for p in tmp_path.iterdir() if "partial" in p.name]


def test_wrong_passphrase(ppml: Run, csv_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ppml("encrypt", "people.csv", "p.ppml", "--key", "local:sales")
    monkeypatch.setenv("PPML_KEYSTORE_PASSPHRASE", "wrong passphrase!")
    result = ppml("decrypt", "p.ppml", "out.csv")
    assert result.code == 5 and "wrong passphrase for keystore" in result.err


def test_key_from_another_keystore(ppml: Run, csv_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ppml("encrypt", "people.csv", "p.ppml", "--key", "local:sales")
    monkeypatch.setenv("PPML_KEYSTORE", str(tmp_path / "other.json"))
    ppml("keys", "create", "local:sales")
    result = ppml("decrypt", "p.ppml", "out.csv")
    assert result.code == 5 and "p.ppml" in result.err and "cannot unwrap" in result.err
    assert not (tmp_path / "out.csv").exists()


def test_missing_and_corrupt_keystore(ppml: Run, csv_file: Path, tmp_path: Path) -> None:
    ppml("encrypt", "people.csv", "p.ppml", "--key", "local:sales")
    result = ppml("decrypt", "p.ppml", "out.csv", "--keystore", str(tmp_path / "gone.json"))
    assert result.code == 5 and "gone.json does not exist" in result.err
    (tmp_path / "keystore.json").write_text("garbage")
    result = ppml("decrypt", "p.ppml", "out.csv")
    assert result.code == 5 and "keystore.json is corrupt" in result.err


def test_bad_key_uri_and_unknown_key(ppml: Run, csv_file: Path) -> None:
    result = ppml("encrypt", "people.csv", "p.ppml", "--key", "sales")
    assert result.code == 2 and "invalid key URI 'sales'" in result.err
    result = ppml("encrypt", "people.csv", "p.ppml", "--key", "local:nokey")
    assert result.code == 5 and "no key named 'nokey'" in result.err


def test_not_an_encrypted_file(ppml: Run, csv_file: Path) -> None:
    result = ppml("decrypt", "people.csv", "out.csv")
    assert result.code == 4 and "people.csv: not a ppml encrypted file" in result.err


def test_passphrase_is_never_an_argument(ppml: Run) -> None:
    result = ppml("keys", "list", "--passphrase", "secret")
    assert result.code == 2 and "No such option" in result.err


def test_no_passphrase_source(ppml: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PPML_KEYSTORE_PASSPHRASE")
    result = ppml("keys", "list")
    assert result.code == 2 and "no keystore passphrase" in result.err


def test_rotate_rewrap_disable(ppml: Run, csv_file: Path, tmp_path: Path) -> None:
    ppml("encrypt", "people.csv", "old.ppml", "--key", "local:sales")
    ppml("encrypt", "people.csv", "kept.ppml", "--key", "local:sales")
    body_before = (tmp_path / "old.ppml").read_bytes()[-100_000:]
    assert ppml("keys", "rotate", "local:sales").code == 0
    result = ppml("keys", "rewrap", "old.ppml")
    assert result.code == 0 and "local:sales -> local:sales" in result.err
    assert (tmp_path / "old.ppml").read_bytes()[-100_000:] == body_before  # body not re-encrypted
    assert ppml("keys", "disable", "local:sales", "--version", "1").code == 0
    assert ppml("decrypt", "old.ppml", "old.csv").code == 0
    assert (tmp_path / "old.csv").read_bytes() == csv_file.read_bytes()
    result = ppml("decrypt", "kept.ppml", "kept.csv")
    assert result.code == 5 and "version 1 is disabled" in result.err
    listing = ppml("keys", "list").out
    assert "local:sales" in listing and "v1(disabled)" in listing and "v2" in listing


def test_rewrap_to_another_key(ppml: Run, csv_file: Path) -> None:
    ppml("keys", "create", "local:archive")
    ppml("encrypt", "people.csv", "p.ppml", "--key", "local:sales")
    assert ppml("keys", "rewrap", "p.ppml", "--to-key", "local:archive").code == 0
    assert ppml("keys", "disable", "local:sales").code == 0
    assert ppml("decrypt", "p.ppml", "out.csv").code == 0


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    for name, command in group.commands.items():
        yield (*prefix, name), command
        if hasattr(command, "commands"):
            yield from _commands(command, (*prefix, name))


@pytest.mark.parametrize("path", [p for p, _ in _commands(cli)], ids=" ".join)
def test_every_command_has_help_and_docs(ppml: Run, path: tuple[str, ...]) -> None:
    result = ppml(*path, "--help")
    assert result.code == 0 and "Usage:" in result.out
    docs = (Path(__file__).resolve().parents[1] / "docs" / "cli.md").read_text()
    assert f"ppml {' '.join(path)}" in docs


def test_exit_code_from_a_real_process(tmp_path: Path) -> None:
    env = {**os.environ, "PPML_KEYSTORE": str(tmp_path / "ks.json"), "PPML_KEYSTORE_PASSPHRASE": PASSPHRASE}
    result = subprocess.run([sys.executable, "-m", "ppml", "decrypt", str(tmp_path / "missing.ppml"), "x"],
                            capture_output=True, text=True, env=env)
    assert result.returncode == 3 and "missing.ppml: no such file" in result.stderr


def test_missing_input_is_reported_before_the_keystore(ppml: Run, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PPML_KEYSTORE", str(tmp_path / "absent.json"))
    result = ppml("encrypt", "nosuch.csv", "out.ppml", "--key", "local:sales")
    assert result.code == 3 and "nosuch.csv: no such file" in result.err
