"""The image's Spark jobs run as ``ppml submit`` would run them: the session's conf carries the key ring."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ppml.data import read_dataset
from ppml.deploy import jobs
from ppml.engines.registry import open_engine
from ppml.errors import ConfigError
from ppml.workloads.simple_query import prepare_people
from ppml.workloads.tpch.datagen import generate
from ppml.workloads.tpch.pipeline import encrypt_tables, register_plain, run_queries
from ppml.workloads.workspace import Workspace

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def workspace(tmp_path: Path, spark) -> Workspace:  # type: ignore[no-untyped-def]
    work = Workspace.create(tmp_path / "work")
    work.ensure_key("jobs")
    spark.conf.set(jobs.KEYRING_CONF, json.dumps(work.keyring.options))
    yield work
    spark.conf.unset(jobs.KEYRING_CONF)


def test_tpch_job_writes_encrypted_results_equal_to_plaintext(spark, workspace: Workspace,  # type: ignore[no-untyped-def]
                                                              tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    generate(plain, 0.01, overwrite=True)
    encrypt_tables(plain, tmp_path / "enc", workspace.keyring, key_uri="local:jobs")
    rows = jobs.tpch([str(tmp_path / "enc"), str(tmp_path / "out"), "--queries", "1,6", "--key", "local:jobs"],
                     spark=spark)
    assert [r["query"] for r in rows] == [1, 6]
    duckdb = open_engine("duckdb", workspace.keyring)
    try:
        register_plain(duckdb, plain)
        expected = {r.query: r.result.num_rows for r in run_queries(duckdb, [1, 6])}
    finally:
        duckdb.close()
    for row in rows:
        result = read_dataset(str(tmp_path / "out" / f"q{row['query']:02d}"), workspace.keyring)
        assert result.num_rows == expected[row["query"]] == row["rows"]
    assert b"l_returnflag" not in (tmp_path / "out" / "q01").joinpath(
        next(p.name for p in (tmp_path / "out" / "q01").iterdir() if p.suffix == ".ppml")).read_bytes()


def test_simple_query_job(spark, workspace: Workspace, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    people = str(tmp_path / "people")
    developers = prepare_people(people, workspace.keyring, rows=500, mode="ppml", key_uri="local:jobs")
    report = jobs.simple_query([people, str(tmp_path / "devs"), "--key", "local:jobs"], spark=spark)
    assert report["developers"] == developers and report["names"] == 500
    assert read_dataset(str(tmp_path / "devs"), workspace.keyring).num_rows == developers


def test_jobs_need_the_key_ring_in_the_conf(spark) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match="spark.ppml.keyring is not set"):
        jobs.tpch(["abfs://c/in", "abfs://c/out", "--key", "kbs:k"], spark=spark)


def test_job_files_in_the_image_call_the_jobs() -> None:
    for job in ("tpch", "simple_query"):
        text = (ROOT / "deploy" / "jobs" / f"{job}.py").read_text()
        assert f'main("{job}")' in text
    assert "deploy/jobs" in (ROOT / "deploy" / "docker" / "Dockerfile").read_text()
