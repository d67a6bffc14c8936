"""Shared fixtures: a cheap-KDF local keystore and a key ring over it."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from ppml.cli import main
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


@dataclass
class Result:
    code: int
    out: str
    err: str


Run = Callable[..., Result]


@pytest.fixture
def ppml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Run:
    """Run the CLI in-process against a keystore in ``tmp_path``; returns a ``Result``."""
    monkeypatch.setenv("PPML_KEYSTORE", str(tmp_path / "keystore.json"))
    monkeypatch.setenv("PPML_KEYSTORE_PASSPHRASE", PASSPHRASE)
    monkeypatch.chdir(tmp_path)

    def run(*args: str) -> Result:
        monkeypatch.setattr(sys, "argv", ["ppml", *args])
        code = 0
        try:
            main()
        except SystemExit as exit_:
            code = int(exit_.code or 0)
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    assert run("keys", "create", "local:sales").code == 0
    return run


@pytest.fixture(scope="session")
def spark_local_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the shared Spark session keeps shuffle and spill files (scanned by the no-plaintext test)."""
    return tmp_path_factory.mktemp("spark-local")


@pytest.fixture(scope="session")
def spark(spark_local_dir: Path):  # type: ignore[no-untyped-def]
    """One trusted local Spark session for the whole test run (starting Spark costs seconds).

    Shuffles spill after 50,000 records per task, so tests exercise Spark's encrypted spill files.
    """
    from ppml.engines.spark import trusted_session

    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # keep Spark on loopback
    session = trusted_session("ppml-tests", "local[2]", conf={
        "spark.sql.shuffle.partitions": "4",
        "spark.default.parallelism": "4",
        "spark.local.dir": str(spark_local_dir),
        "spark.shuffle.spill.numElementsForceSpillThreshold": "50000",
        "spark.driver.memory": "2g",
    })
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()
