"""All 22 TPC-H queries give the same answers on encrypted tables as on plaintext, on both engines."""

from __future__ import annotations

from pathlib import Path

import pytest

from ppml.engines.registry import open_engine
from ppml.kms import KeyRing
from ppml.workloads.tpch import compare_tables, generate
from ppml.workloads.tpch.pipeline import encrypt_tables, register_encrypted, register_plain, run_queries
from ppml.workloads.workspace import Workspace

QUERIES = list(range(1, 23))


@pytest.fixture(scope="module")
def tpch(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str], KeyRing, dict]:  # type: ignore[type-arg]
    work = Workspace.create(tmp_path_factory.mktemp("tpch"))
    plain = work.root / "plain"
    generate(plain, 0.01)
    key_uri = work.ensure_key("tpch")
    datasets = encrypt_tables(plain, work.root / "encrypted", work.keyring, key_uri=key_uri)
    engine = open_engine("duckdb", work.keyring)
    register_plain(engine, plain)
    baseline = {run.query: run.result for run in run_queries(engine, QUERIES)}
    engine.close()
    return plain, datasets, work.keyring, baseline


def test_no_plaintext_in_encrypted_tables(tpch) -> None:  # type: ignore[no-untyped-def]
    _, datasets, _, _ = tpch
    for url in datasets.values():
        for path in Path(url).rglob("*"):
            assert path.read_bytes()[:4] in (b"PPML",), path  # every file is a container: parts and manifest


@pytest.mark.parametrize("engine_name", ["duckdb", "spark"])
def test_encrypted_answers_equal_plaintext(tpch, engine_name: str, spark) -> None:  # type: ignore[no-untyped-def]
    _, datasets, keyring, baseline = tpch
    engine = open_engine(engine_name, keyring)
    try:
        register_encrypted(engine, datasets)
        runs = run_queries(engine, QUERIES)
    finally:
        engine.close()
    differences = {run.query: compare_tables(baseline[run.query], run.result) for run in runs}
    assert {q: d for q, d in differences.items() if d} == {}
    assert sum(baseline[q].num_rows for q in QUERIES) > 100  # the queries really returned rows
