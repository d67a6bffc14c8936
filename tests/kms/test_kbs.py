"""The ``kbs:`` backend against a running broker: conformance as the data owner, attested release as a workload.

The broker is shared by the whole session, so every test works in its own repository, policy and key names.
"""

from __future__ import annotations

import json
import pickle
import socket
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ppml.attestation.collectors.simulated import code_measurement
from ppml.broker.client import AdminClient
from ppml.errors import BrokerError, ConfigError, KeyNotFound, KeyProviderError, PolicyDenied
from ppml.kms import KeyRing
from ppml.kms.kbs import KbsKeyManagement, forget_cached_keys
from ppml.kms.local import LocalKeystore
from tests.conftest import CHEAP_KDF, PASSPHRASE, KbsFixture
from tests.kms.conformance import KeyManagementConformance

OTHER_MRENCLAVE = "ab" * 32


def unique(prefix: str) -> str:
    """A name no other test of this session uses on the shared broker."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def simulated_policy(mrenclave: str | None = None, *, tees: tuple[str, ...] = ("simulated",)) -> dict[str, Any]:
    """A development policy for the simulated TEE pinning ``mrenclave`` (default: this ppml code)."""
    return {"allowed_tees": list(tees), "sgx": {"mrenclave": [mrenclave or code_measurement().hex()]},
            "accepted_tcb_statuses": [None]}


def audit_records(admin: AdminClient, *, after: int = 0) -> list[dict[str, Any]]:
    """Every audit record after ``after``, paging through the log (other tests fill it too)."""
    records: list[dict[str, Any]] = []
    while batch := admin.audit(after=after, limit=1000):
        records += batch
        after = batch[-1]["seq"]
    return records


def count_events(admin: AdminClient, subject: str, *, event: str = "release", outcome: str = "released") -> int:
    """How many ``event`` records about ``subject`` ended with ``outcome``."""
    return sum(1 for r in audit_records(admin)
               if r["event"] == event and r["subject"] == subject and r["outcome"] == outcome)


@pytest.fixture(scope="module")
def admin(kbs: KbsFixture) -> Iterator[AdminClient]:
    client = kbs.admin()
    yield client
    client.close()


@pytest.fixture(autouse=True)
def fresh_cache() -> Iterator[None]:
    """No test sees key tables another test left in this process."""
    forget_cached_keys()
    yield
    forget_cached_keys()


def owned_key(kbs: KbsFixture, admin: AdminClient, policy: dict[str, Any]) -> tuple[KbsKeyManagement, str, str]:
    """A new key under a new policy; returns the owner's backend, the key name and the policy name."""
    policy_name = unique("policy")
    admin.put_policy(policy_name, policy)
    owner = KbsKeyManagement(**kbs.owner_options(policy=policy_name))  # type: ignore[arg-type]
    name = unique("key")
    owner.create_key(name)
    return owner, name, policy_name


def workload(kbs: KbsFixture, **overrides: object) -> KbsKeyManagement:
    return KbsKeyManagement(**kbs.workload_options(**overrides))  # type: ignore[arg-type]


class TestKbsOwner(KeyManagementConformance):
    """The data owner's view through the admin API: every KMS behaviour, in a repository of its own."""

    @pytest.fixture
    def kms(self, kbs: KbsFixture, admin: AdminClient) -> KbsKeyManagement:
        policy = unique("conformance")
        admin.put_policy(policy, simulated_policy())
        return KbsKeyManagement(**kbs.owner_options(repository=unique("repo"), policy=policy))  # type: ignore[arg-type]


# -- a workload in a (simulated) TEE ---------------------------------------------------------------------------


def test_workload_unwraps_under_a_policy_pinning_this_code(kbs: KbsFixture, admin: AdminClient) -> None:
    owner, name, policy = owned_key(kbs, admin, simulated_policy())
    data_key, wrapped = owner.generate_data_key(name)
    tee = workload(kbs)
    assert tee.unwrap_key(wrapped, name) == data_key
    released = [r for r in audit_records(admin) if r["event"] == "release" and r["subject"] ==
                tee.resource_path(name)]
    assert [(r["outcome"], r["detail"]["policy"], r["detail"]["simulated"]) for r in released] == [
        ("released", policy, True)]


def test_workload_refused_when_the_policy_pins_other_code(kbs: KbsFixture, admin: AdminClient) -> None:
    owner, name, _ = owned_key(kbs, admin, simulated_policy(OTHER_MRENCLAVE))
    _, wrapped = owner.generate_data_key(name)
    with pytest.raises(PolicyDenied, match="mrenclave") as denied:
        workload(kbs).unwrap_key(wrapped, name)
    assert denied.value.rule == "mrenclave"
    refusals = [r for r in audit_records(admin) if r["subject"] == owner.resource_path(name)
                and r["outcome"] == "refused"]
    assert [r["detail"]["rule"] for r in refusals] == ["mrenclave"]


def test_workload_refused_when_the_policy_does_not_allow_simulated(kbs: KbsFixture, admin: AdminClient) -> None:
    owner, name, _ = owned_key(kbs, admin, simulated_policy(tees=("sgx",)))
    _, wrapped = owner.generate_data_key(name)
    with pytest.raises(PolicyDenied, match="allowed_tees") as denied:
        workload(kbs).unwrap_key(wrapped, name)
    assert denied.value.rule == "allowed_tees"


def test_released_table_is_cached_for_the_ttl(kbs: KbsFixture, admin: AdminClient) -> None:
    owner, name, _ = owned_key(kbs, admin, simulated_policy())
    first_key, first = owner.generate_data_key(name)
    second_key, second = owner.generate_data_key(name)
    path = owner.resource_path(name)
    tee = workload(kbs)
    assert tee.unwrap_key(first, name) == first_key
    assert tee.unwrap_key(second, name) == second_key
    assert workload(kbs).unwrap_key(first, name) == first_key  # another instance shares the process cache
    assert count_events(admin, path) == 1
    forget_cached_keys()
    assert tee.unwrap_key(second, name) == second_key
    assert count_events(admin, path) == 2


def test_zero_ttl_fetches_every_time(kbs: KbsFixture, admin: AdminClient) -> None:
    owner, name, _ = owned_key(kbs, admin, simulated_policy())
    data_key, wrapped = owner.generate_data_key(name)
    tee = workload(kbs, cache_ttl_seconds=0)
    for _ in range(2):
        assert tee.unwrap_key(wrapped, name) == data_key
    assert count_events(admin, owner.resource_path(name)) == 2


def test_policy_change_applies_after_the_cache_is_dropped(kbs: KbsFixture, admin: AdminClient) -> None:
    owner, name, policy = owned_key(kbs, admin, simulated_policy())
    data_key, wrapped = owner.generate_data_key(name)
    assert workload(kbs).unwrap_key(wrapped, name) == data_key
    admin.put_policy(policy, simulated_policy(OTHER_MRENCLAVE))
    forget_cached_keys()
    with pytest.raises(PolicyDenied, match="mrenclave"):
        workload(kbs).unwrap_key(wrapped, name)


@pytest.mark.parametrize("operation", ["create", "rotate", "disable", "list"])
def test_workload_cannot_manage_keys(kbs: KbsFixture, admin: AdminClient, operation: str) -> None:
    _, name, _ = owned_key(kbs, admin, simulated_policy())
    tee = workload(kbs)
    calls = {"create": lambda: tee.create_key(unique("new")), "rotate": lambda: tee.rotate_key(name),
             "disable": lambda: tee.disable_key(name), "list": tee.list_keys}
    with pytest.raises(KeyProviderError, match="needs an admin key"):
        calls[operation]()


def test_unknown_key_in_workload_mode_is_a_clear_error(kbs: KbsFixture, admin: AdminClient) -> None:
    owned_key(kbs, admin, simulated_policy())  # the workload can attest; the key it asks for does not exist
    name = unique("absent")
    with pytest.raises(KeyNotFound, match=name):
        workload(kbs).unwrap_key(b"\x01" + bytes(64), name)


# -- moving a local key into the broker ---------------------------------------------------------------------------


def test_imported_local_key_unwraps_every_version(kbs: KbsFixture, admin: AdminClient, tmp_path: Path) -> None:
    name = unique("imported")
    store = LocalKeystore(tmp_path / "ks.json", passphrase=PASSPHRASE, kdf=CHEAP_KDF)
    store.create_key(name)
    old_key, old_wrapped = store.generate_data_key(name)
    store.rotate_key(name)
    new_key, new_wrapped = store.generate_data_key(name)
    policy = unique("policy")
    admin.put_policy(policy, simulated_policy())
    owner = KbsKeyManagement(**kbs.owner_options(policy=policy))  # type: ignore[arg-type]
    info = owner.import_entry(name, store.export_entry(name))
    assert (info.uri, info.primary_version, len(info.versions)) == (f"kbs:{name}", 2, 2)
    tee = workload(kbs)
    assert tee.unwrap_key(old_wrapped, name) == old_key
    assert tee.unwrap_key(new_wrapped, name) == new_key
    # The other way round too: what the broker's key wraps, the local key unwraps.
    data_key, wrapped = owner.generate_data_key(name)
    assert store.unwrap_key(wrapped, name) == data_key


def test_imported_key_is_bound_to_its_name(kbs: KbsFixture, admin: AdminClient, tmp_path: Path) -> None:
    name = unique("local")
    store = LocalKeystore(tmp_path / "ks.json", passphrase=PASSPHRASE, kdf=CHEAP_KDF)
    store.create_key(name)
    _, wrapped = store.generate_data_key(name)
    policy = unique("policy")
    admin.put_policy(policy, simulated_policy())
    owner = KbsKeyManagement(**kbs.owner_options(policy=policy))  # type: ignore[arg-type]
    renamed = unique("renamed")
    owner.import_entry(renamed, store.export_entry(name))
    with pytest.raises(KeyProviderError, match="wrapped by another key"):
        workload(kbs).unwrap_key(wrapped, renamed)


def test_import_refuses_a_malformed_table(kbs: KbsFixture, admin: AdminClient) -> None:
    owner = KbsKeyManagement(**kbs.owner_options())  # type: ignore[arg-type]
    name = unique("bad")
    with pytest.raises(KeyProviderError, match="malformed"):
        owner.import_entry(name, {"primary": 1, "versions": {"1": {"enabled": True, "material": "c2hvcnQ="}}})
    assert all(not r["path"].endswith(f"/{name}") for r in admin.list_resources())


# -- key-ring options travel to Spark executors ----------------------------------------------------------------


@pytest.mark.parametrize("role", ["workload", "owner"])
def test_keyring_options_are_json_and_picklable(kbs: KbsFixture, admin: AdminClient, role: str) -> None:
    owner, name, _ = owned_key(kbs, admin, simulated_policy())
    data_key, wrapped = owner.generate_data_key(name)
    options = kbs.workload_options() if role == "workload" else kbs.owner_options()
    ring = KeyRing({"kbs": options})
    backend, key_name = ring.resolve(f"kbs:{name}")
    assert backend.unwrap_key(wrapped, key_name) == data_key  # used once: the options must not have changed
    as_json = json.dumps(ring.options, sort_keys=True)
    assert json.loads(as_json) == pickle.loads(pickle.dumps(ring.options)) == {"kbs": options}
    material = owner._admin_entry(name)["versions"]["1"]["material"]
    assert material not in as_json
    forget_cached_keys()  # what an executor does: a new process, a ring rebuilt from the JSON alone
    rebuilt, key_name = KeyRing(json.loads(as_json)).resolve(f"kbs:{name}")
    assert rebuilt is not backend and rebuilt.unwrap_key(wrapped, key_name) == data_key


# -- bad configuration and an unreachable or untrusted broker ---------------------------------------------------


def test_plain_http_needs_an_explicit_opt_in(kbs: KbsFixture) -> None:
    url = kbs.url.replace("https://", "http://")
    for backend in (workload(kbs, url=url), KbsKeyManagement(**kbs.owner_options(url=url))):  # type: ignore[arg-type]
        with pytest.raises(ConfigError, match="plain HTTP"):
            backend.unwrap_key(b"\x01" + bytes(64), "anything")


def test_url_is_required() -> None:
    with pytest.raises(ConfigError, match="'url'"):
        KbsKeyManagement("")


def _foreign_ca(path: Path) -> str:
    """A CA certificate that did not sign the broker's certificate."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "someone else's CA")])
    now = datetime.now(timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return str(path)


@pytest.mark.parametrize("role", ["workload", "owner"])
def test_broker_signed_by_another_ca_is_refused(kbs: KbsFixture, tmp_path: Path, role: str) -> None:
    ca_file = _foreign_ca(tmp_path / "other-ca.pem")
    options = kbs.workload_options(ca_file=ca_file) if role == "workload" else kbs.owner_options(ca_file=ca_file)
    backend = KbsKeyManagement(**options)  # type: ignore[arg-type]
    with pytest.raises(BrokerError, match="(?i)certificate verify failed") as refused:
        backend.unwrap_key(b"\x01" + bytes(64), "anything")
    assert kbs.url in str(refused.value)


def test_ca_file_that_is_not_a_certificate(kbs: KbsFixture, tmp_path: Path) -> None:
    bogus = tmp_path / "ca.pem"
    bogus.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match="ca.pem"):
        workload(kbs, ca_file=str(bogus)).unwrap_key(b"\x01" + bytes(64), "anything")


def test_unreachable_broker(kbs: KbsFixture) -> None:
    with socket.socket() as probe:  # a port nobody listens on once the probe closes
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"https://127.0.0.1:{port}"
    for backend in (workload(kbs, url=url), KbsKeyManagement(**kbs.owner_options(url=url))):  # type: ignore[arg-type]
        with pytest.raises(BrokerError, match="cannot reach the key broker") as unreachable:
            backend.unwrap_key(b"\x01" + bytes(64), "anything")
        assert unreachable.value.status == 503
