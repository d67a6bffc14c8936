"""``ppml broker``: init, serve, every admin command, and kbs: keys in ``ppml encrypt`` / ``ppml decrypt``.

Admin commands run against the session's broker (the ``kbs`` fixture), each test with its own names.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ppml.broker.client import AdminClient
from ppml.kms.kbs import KbsKeyManagement, forget_cached_keys
from ppml.kms.local import LocalKeystore
from tests.conftest import PASSPHRASE, KbsFixture, Run, make_broker_dir
from tests.kms.test_kbs import OTHER_MRENCLAVE, audit_records, simulated_policy, unique

PLAINTEXT = "".join(f"{i},person {i},{i * 7 % 100}\n" for i in range(2000))


@pytest.fixture
def admin(kbs: KbsFixture) -> Iterator[AdminClient]:
    """The test's own admin client, to check what the commands did."""
    client = kbs.admin()
    yield client
    client.close()


@pytest.fixture
def broker_env(kbs: KbsFixture, monkeypatch: pytest.MonkeyPatch) -> Iterator[KbsFixture]:
    """The data owner's environment: broker URL, CA and admin key; no attester settings."""
    monkeypatch.setenv("PPML_KBS_URL", kbs.url)
    monkeypatch.setenv("PPML_KBS_CA_FILE", kbs.ca_file)
    monkeypatch.setenv("PPML_KBS_ADMIN_KEY", kbs.admin_key_path)
    monkeypatch.delenv("PPML_ATTESTER", raising=False)
    monkeypatch.delenv("PPML_SIMULATOR_KEY", raising=False)
    forget_cached_keys()  # in-process CLI runs share the key cache; each real command is a new process
    yield kbs
    forget_cached_keys()


def write_json(path: Path, document: Any) -> str:  # noqa: ANN401 - any JSON
    path.write_text(json.dumps(document))
    return str(path)


def policy_names(ppml: Run) -> list[str]:
    result = ppml("broker", "admin", "policies")
    assert result.code == 0, result.err
    return result.out.split()


# -- init and serve ------------------------------------------------------------------------------------------


def _private_keys(directory: Path) -> dict[str, object]:
    """Every unencrypted PEM private key under ``directory``, by relative path."""
    found = {}
    for path in directory.rglob("*"):
        data = path.read_bytes() if path.is_file() else b""
        if b"PRIVATE KEY-----" in data:
            found[path.relative_to(directory).as_posix()] = serialization.load_pem_private_key(data, password=None)
    return found


def test_init_makes_a_broker_directory(ppml: Run, tmp_path: Path) -> None:
    result = ppml("broker", "init", "kbs")
    assert result.code == 0, result.err
    root = tmp_path / "kbs"
    config = json.loads((root / "broker.json").read_text())
    assert config["tls"] == {"certificate": "tls/server.pem", "private_key": "tls/server-key.pem"}
    admin_key = root / "admin" / "admin-key.pem"
    assert stat.S_IMODE(admin_key.stat().st_mode) == 0o600
    assert "kbs/admin/admin-key.pem" in result.err and "kbs/tls/ca.pem" in result.err
    ca = x509.load_pem_x509_certificate((root / "tls" / "ca.pem").read_bytes())
    server = x509.load_pem_x509_certificate((root / "tls" / "server.pem").read_bytes())
    server.verify_directly_issued_by(ca)  # the CA really is the one that signed the server certificate
    ca_public = ca.public_key().public_bytes(serialization.Encoding.DER,
                                             serialization.PublicFormat.SubjectPublicKeyInfo)
    keys = _private_keys(root)
    assert set(keys) == {"admin/admin-key.pem", "token-key.pem", "tls/server-key.pem"}
    for key in keys.values():
        public = key.public_key().public_bytes(  # type: ignore[attr-defined]
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        assert public != ca_public


def test_init_refuses_an_existing_broker(ppml: Run, tmp_path: Path) -> None:
    assert ppml("broker", "init", "kbs").code == 0
    before = {p: p.read_bytes() for p in (tmp_path / "kbs").rglob("*") if p.is_file()}
    result = ppml("broker", "init", "kbs")
    assert result.code == 3
    assert "broker.json" in result.err and "already exists" in result.err
    assert {p: p.read_bytes() for p in (tmp_path / "kbs").rglob("*") if p.is_file()} == before


def test_serve_refuses_a_configuration_without_tls(tmp_path: Path) -> None:
    config, _ = make_broker_dir(tmp_path)
    document = json.loads(config.read_text())
    del document["tls"]
    config.write_text(json.dumps(document))
    # A real process with a deadline: if the check ever regresses, the server is killed rather than left running.
    result = subprocess.run([sys.executable, "-m", "ppml", "broker", "serve", "--config", str(config), "--port", "0"],
                            capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "200"})
    assert result.returncode == 2
    assert "no tls section" in result.stderr and "--insecure-http" in result.stderr


# -- administration --------------------------------------------------------------------------------------------


def test_policy_and_resource_round_trip(ppml: Run, broker_env: KbsFixture, admin: AdminClient,
                                       tmp_path: Path) -> None:
    policy = unique("p")
    document = simulated_policy()
    assert ppml("broker", "admin", "set-policy", policy, write_json(tmp_path / "p.json", document)).code == 0
    shown = ppml("broker", "admin", "get-policy", policy)
    assert shown.code == 0, shown.err
    stored = json.loads(shown.out)
    assert stored["allowed_tees"] == ["simulated"] and stored["sgx"]["mrenclave"] == document["sgx"]["mrenclave"]
    assert policy in policy_names(ppml)

    path = f"{unique('r')}/blob/v"
    value = unique("value").encode() + b"\x00\xff"
    (tmp_path / "value.bin").write_bytes(value)
    stored_resource = ppml("broker", "admin", "set-resource", path, "value.bin", "--policy", policy)
    assert stored_resource.code == 0 and "version 1" in stored_resource.err
    listing = ppml("broker", "admin", "resources")
    assert listing.code == 0 and path in listing.out and policy in listing.out
    assert value[:18].decode() not in listing.out
    assert admin.get_resource(path) == value

    in_use = ppml("broker", "admin", "delete-policy", policy)
    assert in_use.code == 7 and "is used by" in in_use.err and path in in_use.err
    assert ppml("broker", "admin", "delete-resource", path).code == 0
    assert path not in ppml("broker", "admin", "resources").out
    assert ppml("broker", "admin", "delete-policy", policy).code == 0
    assert policy not in policy_names(ppml)
    gone = ppml("broker", "admin", "get-policy", policy)
    assert gone.code == 7 and "404" in gone.err


def test_audit_prints_and_verifies(ppml: Run, broker_env: KbsFixture, admin: AdminClient, tmp_path: Path) -> None:
    last = max((r["seq"] for r in audit_records(admin)), default=0)
    policy = unique("audited")
    assert ppml("broker", "admin", "set-policy", policy, write_json(tmp_path / "p.json", simulated_policy())).code == 0
    result = ppml("broker", "admin", "audit", "--after", str(last))
    assert result.code == 0, result.err
    records = [json.loads(line) for line in result.out.splitlines()]
    assert [r["seq"] for r in records] == list(range(last + 1, last + 1 + len(records)))
    assert any(r["event"] == "policy.put" and r["detail"]["policy"] == policy for r in records)
    verified = ppml("broker", "admin", "audit", "--verify")
    assert verified.code == 0 and verified.out == ""
    assert int(verified.err.split("verified:")[1].split()[0]) >= last + len(records)


@pytest.mark.parametrize(("content", "complaint"), [
    ({"allowed_tees": ["simulated"], "sgx": {"mr_enclave": ["00" * 32]}, "accepted_tcb_statuses": [None]},
     "sgx.mr_enclave"),
    ({"allowed_tees": ["simulated"], "accepted_tcb_statuses": [None], "allow_debug": "yes"}, "allow_debug"),
    ("{not json", "not valid JSON"),
])
def test_malformed_policy_file_fails_locally(ppml: Run, broker_env: KbsFixture, tmp_path: Path,
                                             content: Any, complaint: str) -> None:  # noqa: ANN401
    policy_file = tmp_path / "typo.json"
    policy_file.write_text(content if isinstance(content, str) else json.dumps(content))
    policy = unique("typo")
    result = ppml("broker", "admin", "set-policy", policy, str(policy_file))
    assert result.code == 2
    assert "typo.json" in result.err and complaint in result.err
    assert policy not in policy_names(ppml)


def test_missing_policy_file(ppml: Run, broker_env: KbsFixture) -> None:
    result = ppml("broker", "admin", "set-policy", unique("p"), "nosuch.json")
    assert result.code == 3 and "nosuch.json" in result.err


def test_wrong_admin_key_is_refused(ppml: Run, broker_env: KbsFixture, tmp_path: Path) -> None:
    impostor = tmp_path / "impostor.pem"
    impostor.write_bytes(Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    policy = unique("p")
    leaky = ppml("broker", "admin", "set-policy", policy, write_json(tmp_path / "p.json", simulated_policy()),
                 "--admin-key", str(impostor))
    assert leaky.code == 2 and "accessible by group or others" in leaky.err  # a readable admin key is refused
    impostor.chmod(0o600)
    result = ppml("broker", "admin", "set-policy", policy, write_json(tmp_path / "p.json", simulated_policy()),
                  "--admin-key", str(impostor))
    assert result.code == 7
    assert "admin" in result.err and "token" in result.err and "401" in result.err
    assert policy not in policy_names(ppml)  # the genuine key still works, and nothing was written


# -- kbs: keys in encrypt / decrypt ----------------------------------------------------------------------------


def test_owner_encrypts_and_only_an_allowed_tee_decrypts(ppml: Run, broker_env: KbsFixture, admin: AdminClient,
                                                        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    policy, name = unique("p"), unique("k")
    policy_file = write_json(tmp_path / "p.json", simulated_policy())
    assert ppml("broker", "admin", "set-policy", policy, policy_file).code == 0
    created = ppml("broker", "admin", "create-key", name, "--policy", policy)
    assert created.code == 0 and f"kbs:{name}" in created.err
    again = ppml("broker", "admin", "create-key", name, "--policy", policy)
    assert again.code == 5 and "already exists" in again.err
    (tmp_path / "people.csv").write_text(PLAINTEXT)
    assert ppml("encrypt", "people.csv", "people.csv.ppml", "--key", f"kbs:{name}").code == 0
    assert PLAINTEXT.encode()[:200] not in (tmp_path / "people.csv.ppml").read_bytes()
    assert ppml("decrypt", "people.csv.ppml", "owner.csv").code == 0
    assert (tmp_path / "owner.csv").read_text() == PLAINTEXT

    monkeypatch.delenv("PPML_KBS_ADMIN_KEY")  # now the workload: no admin key, a (simulated) TEE
    tee = ("--attester", "simulated", "--simulator-key", broker_env.simulator_key_path)
    forget_cached_keys()
    assert ppml("decrypt", "people.csv.ppml", "tee.csv", *tee).code == 0
    assert (tmp_path / "tee.csv").read_text() == PLAINTEXT

    admin.put_policy(policy, simulated_policy(OTHER_MRENCLAVE))
    forget_cached_keys()
    denied = ppml("decrypt", "people.csv.ppml", "denied.csv", *tee)
    assert denied.code == 6 and "mrenclave" in denied.err
    assert not (tmp_path / "denied.csv").exists()
    path = f"default/ppml-key/{name}"
    outcomes = [r["outcome"] for r in audit_records(admin) if r["event"] == "release"
                and r["subject"] == path]
    assert outcomes == ["released", "refused"]


def test_workload_cannot_create_keys(ppml: Run, broker_env: KbsFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PPML_KBS_ADMIN_KEY")
    result = ppml("keys", "create", f"kbs:{unique('k')}", "--attester", "simulated",
                  "--simulator-key", broker_env.simulator_key_path)
    assert result.code == 5 and "needs an admin key" in result.err


def test_import_key_keeps_every_version(ppml: Run, broker_env: KbsFixture, tmp_path: Path) -> None:
    name, policy = unique("moved"), unique("p")
    assert ppml("keys", "create", f"local:{name}").code == 0
    local = LocalKeystore(tmp_path / "keystore.json", passphrase=PASSPHRASE)
    old_key, old_wrapped = local.generate_data_key(name)
    assert ppml("keys", "rotate", f"local:{name}").code == 0
    new_key, new_wrapped = local.generate_data_key(name)
    assert ppml("broker", "admin", "set-policy", policy, write_json(tmp_path / "p.json", simulated_policy())).code == 0
    result = ppml("broker", "admin", "import-key", name, "--from", f"local:{name}", "--policy", policy)
    assert result.code == 0, result.err
    forget_cached_keys()
    tee = KbsKeyManagement(**broker_env.workload_options())  # type: ignore[arg-type]
    assert tee.unwrap_key(old_wrapped, name) == old_key
    assert tee.unwrap_key(new_wrapped, name) == new_key


def test_import_key_needs_a_local_source(ppml: Run, broker_env: KbsFixture) -> None:
    result = ppml("broker", "admin", "import-key", unique("k"), "--from", "kbs:elsewhere", "--policy", "p")
    assert result.code == 2 and "--from must be a local: key" in result.err

