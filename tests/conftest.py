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


@dataclass
class KbsFixture:
    """A running key broker on loopback with a simulated-TEE trust, and what clients need to use it."""

    url: str
    directory: Path
    ca_file: str
    admin_key_path: str
    simulator_key_path: str
    server: object

    def admin(self):  # type: ignore[no-untyped-def]
        from ppml._keyfiles import load_ed25519_private_key
        from ppml.broker.client import AdminClient

        return AdminClient(self.url, admin_key=load_ed25519_private_key(self.admin_key_path), ca_file=self.ca_file)

    def workload_options(self, **overrides: object) -> dict[str, object]:
        """kbs: key-ring options of a workload attesting with the simulated TEE."""
        return {"url": self.url, "ca_file": self.ca_file, "attester": "simulated",
                "simulator_key": self.simulator_key_path, **overrides}

    def owner_options(self, **overrides: object) -> dict[str, object]:
        """kbs: key-ring options of the data owner, through the admin API."""
        return {"url": self.url, "ca_file": self.ca_file, "admin_key": self.admin_key_path, **overrides}


def make_broker_dir(root: Path, *, session_ttl_seconds: float | None = None) -> tuple[Path, Path]:
    """A broker directory trusting a fresh simulator key (cheap KDF); returns (config, simulator key)."""
    import json

    from ppml.broker.jws import write_public_key
    from ppml.broker.setup import init_broker
    from ppml.testing.simulated_tee import load_or_create_simulator_key

    simulator_key = root / "simulator.key"
    write_public_key(root / "simulator.pub", load_or_create_simulator_key(simulator_key).public_key())
    made = init_broker(root / "kbs", simulator_public_key=root / "simulator.pub", kdf=CHEAP_KDF)
    if session_ttl_seconds is not None:
        document = json.loads(made.config.read_text())
        document["session_ttl_seconds"] = session_ttl_seconds
        made.config.write_text(json.dumps(document))
    return made.config, simulator_key


@pytest.fixture(scope="session")
def kbs(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """One broker for the whole run (like the Spark session): tests use their own policies and resources."""
    from ppml.broker.config import BrokerConfig
    from ppml.broker.server import BackgroundBroker
    from ppml.kms.kbs import forget_cached_keys

    root = tmp_path_factory.mktemp("kbs")
    config, simulator_key = make_broker_dir(root)
    with BackgroundBroker(BrokerConfig.load(config)) as server:
        yield KbsFixture(url=server.url, directory=config.parent, ca_file=str(config.parent / "tls" / "ca.pem"),
                         admin_key_path=str(config.parent / "admin" / "admin-key.pem"),
                         simulator_key_path=str(simulator_key), server=server)
    forget_cached_keys()
