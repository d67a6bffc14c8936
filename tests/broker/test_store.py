"""The broker's SQLite store: encrypted resources, policies, the hash-chained audit log, durability choices."""

from __future__ import annotations

import sqlite3
import stat
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from ppml.attestation.policy import Policy
from ppml.broker.store import GENESIS_HASH, BrokerStore
from ppml.errors import (
    AuditChainBroken,
    BrokerStoreCorrupt,
    ConfigError,
    InvalidRequest,
    KeyProviderError,
    PolicyInUse,
    PolicyNotFound,
    ResourceNotFound,
)
from ppml.kms.local import LocalKeystore
from tests.conftest import CHEAP_KDF, PASSPHRASE

SECRET = b"PLAINTEXT-MARKER-7f3a9c: the dataset key"
PATH = "default/key/sales"


def make_policy(description: str = "") -> Policy:
    return Policy.from_dict({"allowed_tees": ["simulated"], "description": description})


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "broker" / "broker.db"


@pytest.fixture
def store(db_path: Path, keystore: LocalKeystore) -> Iterator[BrokerStore]:
    with BrokerStore(db_path, kms=keystore, kms_key="test") as opened:
        opened.put_policy("open", make_policy())
        yield opened


def raw(db_path: Path) -> sqlite3.Connection:
    return sqlite3.connect(db_path, isolation_level=None)


# -- resources ---------------------------------------------------------------------------------------------------


def test_round_trip_and_versions(store: BrokerStore) -> None:
    assert store.put_resource(PATH, SECRET, policy="open") == 1
    got = store.get_resource(PATH)
    assert (got.path, got.version, got.policy, got.value) == (PATH, 1, "open", SECRET)
    assert SECRET.decode() not in repr(got)
    assert store.put_resource(PATH, b"v2", policy="open") == 2
    assert store.get_resource(PATH).value == b"v2"
    assert store.put_resource("default/key/other", b"", policy="open") == 1
    assert store.get_resource("default/key/other").value == b""
    assert [(r.path, r.version, r.policy) for r in store.list_resources()] == [
        ("default/key/other", 1, "open"), (PATH, 2, "open")]


def test_versions_keep_growing_across_delete(store: BrokerStore) -> None:
    store.put_resource(PATH, b"one", policy="open")
    store.delete_resource(PATH)
    with pytest.raises(ResourceNotFound, match=f"no resource {PATH}"):
        store.get_resource(PATH)
    assert store.put_resource(PATH, b"two", policy="open") == 2


def test_persisted_across_reopen(db_path: Path, keystore: LocalKeystore, store: BrokerStore) -> None:
    store.put_resource(PATH, SECRET, policy="open")
    store.close()
    with BrokerStore(db_path, kms=keystore, kms_key="test") as reopened:
        assert reopened.get_resource(PATH).value == SECRET
        assert reopened.get_policy("open") == make_policy()
        assert reopened.verify_audit_chain() == 2


def test_value_is_not_stored_in_plaintext(db_path: Path, store: BrokerStore) -> None:
    store.put_resource(PATH, SECRET, policy="open")
    store.get_resource(PATH)
    files = sorted(db_path.parent.iterdir())
    assert db_path.with_name("broker.db-wal") in files
    for file in files:
        assert SECRET not in file.read_bytes(), file.name
        assert SECRET[:16] not in file.read_bytes(), file.name


def test_database_file_is_private(db_path: Path, store: BrokerStore) -> None:
    assert stat.S_IMODE(db_path.stat().st_mode) == 0o600
    assert raw(db_path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_unknown_resource_and_policy(store: BrokerStore) -> None:
    with pytest.raises(ResourceNotFound, match="no resource a/b/c"):
        store.get_resource("a/b/c")
    with pytest.raises(ResourceNotFound, match="no resource a/b/c"):
        store.delete_resource("a/b/c")
    with pytest.raises(PolicyNotFound, match="policy 'missing' does not exist; create it first"):
        store.put_resource(PATH, SECRET, policy="missing")
    assert store.list_resources() == []


@pytest.mark.parametrize("path", ["a/b", "a/b/c/d", "a/../c", "../b/c", "a/b/..", "a/./c", "a//c", "a/b/c d",
                                  "a/b/c\n", "", "/a/b/c", "a/b/" + "x" * 129, "é/b/c", None])
def test_invalid_paths_are_rejected(store: BrokerStore, path: Any) -> None:
    with pytest.raises(InvalidRequest, match="invalid resource path"):
        store.put_resource(path, SECRET, policy="open")
    with pytest.raises(InvalidRequest, match="invalid resource path"):
        store.get_resource(path)


def test_valid_path_characters(store: BrokerStore) -> None:
    path = "repo.v1/type_2/tag-3." + "x" * 100
    store.put_resource(path, SECRET, policy="open")
    assert store.get_resource(path).value == SECRET


def test_tampered_ciphertext_row_is_refused(db_path: Path, store: BrokerStore) -> None:
    store.put_resource(PATH, SECRET, policy="open")
    assert store.get_resource(PATH).value == SECRET  # cached now: the cache must not hide the change
    raw(db_path).execute("UPDATE resources SET ciphertext = substr(ciphertext, 1, 5) || x'00' || "
                         "substr(ciphertext, 7) WHERE path = ?", (PATH,))
    with pytest.raises(BrokerStoreCorrupt, match=f"resource {PATH} version 1 does not authenticate"):
        store.get_resource(PATH)


def test_row_moved_to_another_path_or_policy_is_refused(db_path: Path, store: BrokerStore) -> None:
    store.put_policy("strict", make_policy("strict"))
    store.put_resource(PATH, SECRET, policy="strict")
    store.put_resource("default/key/public", b"public", policy="open")
    db = raw(db_path)
    db.execute("UPDATE resources SET policy = 'open' WHERE path = ?", (PATH,))
    with pytest.raises(BrokerStoreCorrupt, match=f"resource {PATH} version 1 does not authenticate"):
        store.get_resource(PATH)
    db.execute("DELETE FROM resources WHERE path = 'default/key/public'")
    db.execute("UPDATE resources SET path = 'default/key/public' WHERE path = ?", (PATH,))
    with pytest.raises(BrokerStoreCorrupt, match="resource default/key/public"):
        store.get_resource("default/key/public")


def test_wrong_kms_key_is_refused(tmp_path: Path, db_path: Path, store: BrokerStore) -> None:
    store.put_resource(PATH, SECRET, policy="open")
    store.close()
    other = LocalKeystore(tmp_path / "other-keystore.json", passphrase=PASSPHRASE, kdf=CHEAP_KDF)
    other.create_key("test")
    with BrokerStore(db_path, kms=other, kms_key="test") as wrong, \
            pytest.raises(KeyProviderError, match="local:test"):
        wrong.get_resource(PATH)


def test_rows_remember_their_kms_key(db_path: Path, keystore: LocalKeystore, store: BrokerStore) -> None:
    store.put_resource(PATH, SECRET, policy="open")
    store.close()
    keystore.create_key("next")
    with BrokerStore(db_path, kms=keystore, kms_key="next") as rotated:
        assert rotated.get_resource(PATH).value == SECRET
        rotated.put_resource(PATH, b"new", policy="open")
        assert raw(db_path).execute("SELECT kms_key FROM resources").fetchone()[0] == "next"


def test_failed_admin_write_leaves_nothing(monkeypatch: pytest.MonkeyPatch, store: BrokerStore) -> None:
    def broken_append(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("crash between the change and its audit record")

    monkeypatch.setattr(store, "_append", broken_append)
    with pytest.raises(RuntimeError):
        store.put_resource(PATH, SECRET, policy="open")
    with pytest.raises(RuntimeError):
        store.put_policy("other", make_policy())
    monkeypatch.undo()
    with pytest.raises(ResourceNotFound):
        store.get_resource(PATH)
    assert store.list_policies() == ["open"]
    assert store.put_resource(PATH, SECRET, policy="open") == 1  # the version counter rolled back too
    assert store.verify_audit_chain() == 2


# -- policies ----------------------------------------------------------------------------------------------------


def test_policy_round_trip_and_list(store: BrokerStore) -> None:
    strict = Policy.from_dict({"allowed_tees": ["sgx"], "sgx": {"mrenclave": ["ab" * 32]}, "allow_debug": False})
    store.put_policy("strict", strict)
    assert store.get_policy("strict") == strict
    store.put_policy("strict", make_policy("replaced"))
    assert store.get_policy("strict").description == "replaced"
    assert store.list_policies() == ["open", "strict"]
    with pytest.raises(PolicyNotFound, match="no policy 'nope'"):
        store.get_policy("nope")
    with pytest.raises(InvalidRequest, match="invalid policy name"):
        store.put_policy("../x", strict)
    with pytest.raises(InvalidRequest, match="expected a Policy"):
        store.put_policy("doc", {"allowed_tees": ["sgx"]})  # type: ignore[arg-type]


def test_policy_in_use_cannot_be_deleted(store: BrokerStore) -> None:
    store.put_resource(PATH, SECRET, policy="open")
    with pytest.raises(PolicyInUse, match=f"policy 'open' is used by {PATH}"):
        store.delete_policy("open")
    store.delete_resource(PATH)
    store.delete_policy("open")
    assert store.list_policies() == []
    with pytest.raises(PolicyNotFound):
        store.delete_policy("open")


def test_corrupt_policy_document_is_reported(db_path: Path, store: BrokerStore) -> None:
    raw(db_path).execute("UPDATE policies SET document = '{\"allowed_tees\": []}' WHERE name = 'open'")
    with pytest.raises(BrokerStoreCorrupt, match="stored policy 'open' no longer parses"):
        store.get_policy("open")


# -- audit -------------------------------------------------------------------------------------------------------


def test_admin_writes_are_audited(store: BrokerStore) -> None:
    store.put_resource(PATH, SECRET, policy="open", actor="alice")
    store.delete_resource(PATH, actor="bob")
    store.delete_policy("open", actor="carol")
    records = store.read_audit()
    assert [(r.seq, r.event, r.subject, r.outcome) for r in records] == [
        (1, "policy.put", "admin", "ok"), (2, "resource.put", "alice", "ok"),
        (3, "resource.delete", "bob", "ok"), (4, "policy.delete", "carol", "ok")]
    assert records[1].detail == {"path": PATH, "version": 1, "policy": "open", "kms_key": "local:test"}
    assert records[0].prev_hash == GENESIS_HASH and records[1].prev_hash == records[0].hash
    assert records[1].to_dict()["hash"] == records[1].hash.hex()
    assert store.verify_audit_chain() == 4


def test_audit_never_contains_the_value_or_key(db_path: Path, store: BrokerStore) -> None:
    store.put_resource(PATH, SECRET, policy="open")
    wrapped = raw(db_path).execute("SELECT wrapped_key FROM resources").fetchone()[0]
    dump = repr(raw(db_path).execute("SELECT * FROM audit").fetchall()).encode()
    assert SECRET not in dump and wrapped.hex().encode() not in dump
    with pytest.raises(ValueError, match="may not carry key material"):
        store.append_audit("release", subject=PATH, outcome="ok", detail={"nested": [{"value": "x"}]})
    with pytest.raises(TypeError, match="plain JSON"):
        store.append_audit("release", subject=PATH, outcome="ok", detail={"raw": b"bytes"})


def test_append_and_read_audit(store: BrokerStore) -> None:
    when = datetime(2030, 1, 2, 3, 4, 5, 6, tzinfo=timezone.utc)
    store._clock = lambda: when
    record = store.append_audit("release", subject=PATH, outcome="released", detail={"tee": "sgx", "n": 1.5})
    assert (record.seq, record.time, record.detail) == (2, "2030-01-02T03:04:05.000006Z", {"tee": "sgx", "n": 1.5})
    for i in range(5):
        store.append_audit("release", subject=PATH, outcome="refused", detail={"i": i, "ü": "ß"})
    assert [r.seq for r in store.read_audit(after_seq=3, limit=2)] == [4, 5]
    assert store.read_audit(after_seq=7) == []
    assert store.verify_audit_chain() == 7


def test_audit_chain_detects_an_edited_row(db_path: Path, store: BrokerStore) -> None:
    for i in range(4):
        store.append_audit("release", subject=PATH, outcome="released", detail={"i": i})
    db = raw(db_path)
    db.execute("DROP TRIGGER audit_no_update")
    db.execute("UPDATE audit SET outcome = 'refused' WHERE seq = 3")
    with pytest.raises(AuditChainBroken, match="broken at seq 3: the record was modified") as info:
        store.verify_audit_chain()
    assert info.value.seq == 3


def test_audit_chain_detects_a_recomputed_row(db_path: Path, store: BrokerStore) -> None:
    for i in range(3):
        store.append_audit("release", subject=PATH, outcome="released", detail={"i": i})
    db = raw(db_path)
    db.execute("DROP TRIGGER audit_no_update")
    db.execute("UPDATE audit SET hash = zeroblob(32) WHERE seq = 2")  # a forger who rewrote one hash
    with pytest.raises(AuditChainBroken, match="seq 2") as info:
        store.verify_audit_chain()
    assert info.value.seq == 2


def test_audit_chain_detects_a_removed_row(db_path: Path, store: BrokerStore) -> None:
    for i in range(3):
        store.append_audit("release", subject=PATH, outcome="released", detail={"i": i})
    db = raw(db_path)
    db.execute("DROP TRIGGER audit_no_delete")
    db.execute("DELETE FROM audit WHERE seq = 2")
    with pytest.raises(AuditChainBroken, match="broken at seq 2: the next record is seq 3") as info:
        store.verify_audit_chain()
    assert info.value.seq == 2


def test_triggers_forbid_update_and_delete(db_path: Path, store: BrokerStore) -> None:
    db = raw(db_path)
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("UPDATE audit SET outcome = 'x'")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("DELETE FROM audit")
    assert store.verify_audit_chain() == 1


def test_concurrent_appends_keep_one_chain(db_path: Path, keystore: LocalKeystore, store: BrokerStore) -> None:
    second = BrokerStore(db_path, kms=keystore, kms_key="test")  # another process's view of the same file

    def work(target: BrokerStore, name: str) -> None:
        for i in range(25):
            target.append_audit("release", subject=name, outcome="released", detail={"i": i})

    threads = [threading.Thread(target=work, args=(target, f"t{n}"))
               for n, target in enumerate([store, store, second, second])]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    second.close()
    assert store.verify_audit_chain() == 101


# -- schema and performance --------------------------------------------------------------------------------------


def test_unknown_schema_version_is_refused(db_path: Path, keystore: LocalKeystore, store: BrokerStore) -> None:
    store.close()
    raw(db_path).execute("UPDATE schema_version SET version = 99")
    with pytest.raises(ConfigError, match="schema version 99"):
        BrokerStore(db_path, kms=keystore, kms_key="test")


def test_unopenable_database_is_reported(tmp_path: Path, keystore: LocalKeystore) -> None:
    (tmp_path / "dir.db").mkdir()
    with pytest.raises(ConfigError, match="cannot open broker database"):
        BrokerStore(tmp_path / "dir.db", kms=keystore, kms_key="test")


def test_release_path_is_fast(store: BrokerStore) -> None:
    store.put_resource(PATH, SECRET, policy="open")
    store.get_resource(PATH)  # the first read unwraps the data key through the KMS
    timings = []
    for _ in range(200):
        start = time.perf_counter()
        resource = store.get_resource(PATH)
        store.append_audit("release", subject=PATH, outcome="released",
                           detail={"version": resource.version, "policy": resource.policy, "tee": "sgx"})
        timings.append(time.perf_counter() - start)
    timings.sort()
    assert timings[len(timings) // 2] < 0.0005, f"median release took {timings[len(timings) // 2] * 1e6:.0f} µs"
