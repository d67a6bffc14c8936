"""Encrypted TPC-H with a key held by the key broker: the owner encrypts, attested DuckDB and Spark jobs query.

The data owner encrypts SF 0.01 with ``kbs:`` through the admin API; each engine's job gets the key only by
attesting with the simulated TEE under a policy that pins this ppml code, and is refused once the policy pins
another MRENCLAVE. Spark executors rebuild the key ring from the data-source options and attest themselves.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from ppml.broker.client import AdminClient
from ppml.engines.registry import SparkEngine, open_engine
from ppml.errors import PolicyDenied
from ppml.kms import KeyRing
from ppml.kms import kbs as kbs_module
from ppml.kms.kbs import forget_cached_keys
from ppml.workloads.tpch import compare_tables, generate
from ppml.workloads.tpch.pipeline import encrypt_tables, register_encrypted, register_plain, run_queries
from tests.conftest import KbsFixture
from tests.kms.test_kbs import OTHER_MRENCLAVE, audit_records, simulated_policy, unique

QUERIES = [1, 6, 14]


@dataclass
class EncryptedTpch:
    """SF 0.01 encrypted under ``kbs:<key>``, and the plaintext answers."""

    datasets: dict[str, str]
    key: str
    policy: str
    resource: str
    baseline: dict[int, pa.Table]
    admin: AdminClient


@pytest.fixture(scope="module")
def tpch(tmp_path_factory: pytest.TempPathFactory, kbs: KbsFixture) -> Iterator[EncryptedTpch]:
    root = tmp_path_factory.mktemp("tpch-kbs")
    generate(root / "plain", 0.01)
    admin = kbs.admin()
    policy, key = unique("tpch"), unique("tpch")
    admin.put_policy(policy, simulated_policy())
    owner = KeyRing({"kbs": kbs.owner_options(policy=policy)})
    backend, _ = owner.resolve(f"kbs:{key}")
    backend.create_key(key)
    datasets = encrypt_tables(root / "plain", root / "encrypted", owner, key_uri=f"kbs:{key}")
    engine = open_engine("duckdb", KeyRing())
    register_plain(engine, root / "plain")
    baseline = {run.query: run.result for run in run_queries(engine, QUERIES)}
    engine.close()
    assert all(baseline[q].num_rows > 0 for q in QUERIES)
    yield EncryptedTpch(datasets, key, policy, backend.resource_path(key), baseline, admin)  # type: ignore[attr-defined]
    admin.close()


@pytest.fixture
def pinned_to_this_code(tpch: EncryptedTpch) -> None:
    """The key's policy pins the code as it is on disk now.

    A workload measures the ppml source when it starts (Spark workers are new processes), so an edit to
    ``src/`` since the module began would rightly be denied; re-pinning just before the job keeps the test
    about the broker, not about the working tree.
    """
    tpch.admin.put_policy(tpch.policy, simulated_policy())


@pytest.fixture
def wrong_mrenclave(tpch: EncryptedTpch) -> Iterator[None]:
    """The key's policy pins code other than this ppml for the test's duration; cached keys are dropped."""
    tpch.admin.put_policy(tpch.policy, simulated_policy(OTHER_MRENCLAVE))
    forget_cached_keys()
    yield
    tpch.admin.put_policy(tpch.policy, simulated_policy())
    forget_cached_keys()


def events(admin: AdminClient, after: int, *, event: str, outcome: str,
           subject: str | None = None) -> list[dict[str, Any]]:
    """Audit records after ``after`` of one event and outcome (about ``subject``, if given)."""
    return [r for r in audit_records(admin, after=after)
            if r["event"] == event and r["outcome"] == outcome and (subject is None or r["subject"] == subject)]


def last_seq(admin: AdminClient) -> int:
    """Where the audit log ends now: later records belong to the test that asks."""
    return max((r["seq"] for r in audit_records(admin)), default=0)


def query_all(engine: Any, datasets: dict[str, str]) -> dict[int, pa.Table]:  # noqa: ANN401 - a QueryEngine
    """Register the encrypted tables and run the queries, then close the engine."""
    try:
        register_encrypted(engine, datasets)
        return {run.query: run.result for run in run_queries(engine, QUERIES)}
    finally:
        engine.close()


def workload_ring(kbs: KbsFixture, tmp_path: Path, **overrides: object) -> KeyRing:
    """The workload's key ring, with a CA path of its own so that no broker session from another test is
    reused: whoever uses this ring must attest now."""
    ca_file = shutil.copy(kbs.ca_file, tmp_path / "broker-ca.pem")
    return KeyRing({"kbs": kbs.workload_options(ca_file=str(ca_file), **overrides)})


def test_owner_encrypted_everything(tpch: EncryptedTpch) -> None:
    for url in tpch.datasets.values():
        files = [p for p in Path(url).rglob("*") if p.is_file()]
        assert files and all(p.read_bytes()[:4] == b"PPML" for p in files)


def test_duckdb_job_in_an_attested_tee(tpch: EncryptedTpch, kbs: KbsFixture, tmp_path: Path,
                                       pinned_to_this_code: None) -> None:
    forget_cached_keys()
    before = last_seq(tpch.admin)
    results = query_all(open_engine("duckdb", workload_ring(kbs, tmp_path)), tpch.datasets)
    assert {q: compare_tables(tpch.baseline[q], results[q]) for q in QUERIES} == dict.fromkeys(QUERIES)
    assert len(events(tpch.admin, before, event="attest", outcome="verified")) == 1
    assert len(events(tpch.admin, before, event="release", outcome="released", subject=tpch.resource)) == 1


def test_duckdb_job_refused_when_the_policy_pins_other_code(tpch: EncryptedTpch, kbs: KbsFixture, tmp_path: Path,
                                                            wrong_mrenclave: None) -> None:
    before = last_seq(tpch.admin)
    with pytest.raises(PolicyDenied, match="rule mrenclave"):
        query_all(open_engine("duckdb", workload_ring(kbs, tmp_path)), tpch.datasets)
    refused = events(tpch.admin, before, event="release", outcome="refused", subject=tpch.resource)
    assert [r["detail"]["rule"] for r in refused] == ["mrenclave"]


def spark_ring(kbs: KbsFixture, tmp_path: Path) -> KeyRing:
    # Executors keep released keys for cache_ttl_seconds, and the driver cannot flush their caches; with 0
    # every read asks the broker, so a policy change applies to the very next job.
    return workload_ring(kbs, tmp_path, cache_ttl_seconds=0)


def test_spark_executors_attest_and_fetch_the_key(tpch: EncryptedTpch, kbs: KbsFixture, tmp_path: Path,
                                                  spark: Any, pinned_to_this_code: None) -> None:  # noqa: ANN401
    forget_cached_keys()
    before = last_seq(tpch.admin)
    ring = spark_ring(kbs, tmp_path)
    engine = open_engine("spark", ring, spark=spark)
    assert isinstance(engine, SparkEngine)
    assert json.loads(engine.source_options["keyring"]) == ring.options  # only the ring's options travel
    results = query_all(engine, tpch.datasets)
    assert {q: compare_tables(tpch.baseline[q], results[q]) for q in QUERIES} == dict.fromkeys(QUERIES)
    # The broker released the key to sessions that attested during this job, while this process (the
    # driver) neither attested nor holds the key: Spark's Python workers fetched it themselves.
    assert events(tpch.admin, before, event="attest", outcome="verified")
    released = events(tpch.admin, before, event="release", outcome="released", subject=tpch.resource)
    assert len(released) >= len(QUERIES)
    assert not kbs_module._CACHE and not kbs_module._CLIENTS


def test_spark_job_refused_when_the_policy_pins_other_code(tpch: EncryptedTpch, kbs: KbsFixture, tmp_path: Path,
                                                           spark: Any, wrong_mrenclave: None) -> None:  # noqa: ANN401
    before = last_seq(tpch.admin)
    with pytest.raises(Exception, match="rule mrenclave"):
        query_all(open_engine("spark", spark_ring(kbs, tmp_path), spark=spark), tpch.datasets)
    refused = events(tpch.admin, before, event="release", outcome="refused", subject=tpch.resource)
    assert refused and {r["detail"]["rule"] for r in refused} == {"mrenclave"}
    assert not events(tpch.admin, before, event="release", outcome="released", subject=tpch.resource)
