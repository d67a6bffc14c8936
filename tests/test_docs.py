"""The examples in the README run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import PASSPHRASE

ROOT = Path(__file__).resolve().parents[1]


def test_readme_python_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code = re.search(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert code is not None
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PPML_KEYSTORE_PASSPHRASE", PASSPHRASE)
    from ppml.kms.local import LocalKeystore

    LocalKeystore("keystore.json").create_key("sales")
    plaintext = b"".join(b"row %d,Developer\n" % i for i in range(100_000))
    (tmp_path / "people.csv").write_bytes(plaintext)
    namespace: dict[str, object] = {}
    exec(compile(code.group(1), "README.md", "exec"), namespace)  # noqa: S102 - our own documentation
    assert namespace["chunk"] == plaintext[1_000_000 : 1_000_000 + 4096]


def test_readme_starts_with_the_two_commands() -> None:
    head = (ROOT / "README.md").read_text().split("\n\n", 3)[:3]
    assert "make run" in "\n".join(head) and "make test" in "\n".join(head)


def test_data_guide_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "data.md").read_text(), re.S)
    assert len(blocks) == 3
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PPML_KEYSTORE_PASSPHRASE", PASSPHRASE)
    from ppml.kms.local import LocalKeystore

    LocalKeystore("keystore.json").create_key("sales")
    namespace: dict[str, object] = {}
    for block in blocks[:2]:  # the Spark block needs a keystore under /secure; the Spark tests cover it
        exec(compile(block, "docs/data.md", "exec"), namespace)  # noqa: S102 - our own documentation
    from ppml.data import read_dataset

    assert read_dataset("older", namespace["keyring"]).num_rows == 2  # type: ignore[arg-type]
