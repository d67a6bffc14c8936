"""The workload commands end to end: the demo, the simple query, and the TPC-H commands."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import Run


def test_demo_runs_all_22_queries_and_writes_encrypted_results(ppml: Run, tmp_path: Path) -> None:
    result = ppml("demo", "--scale", "0.01", "--workdir", str(tmp_path / "demo"))
    assert result.code == 0, result.err
    for n in range(1, 23):
        assert f"Q{n:02d}" in result.out
    assert result.out.count("ok (same as plaintext)") == 22
    results = tmp_path / "demo" / "results"
    assert sorted(p.name for p in results.iterdir() if p.is_dir()) == [f"q{n:02d}" for n in range(1, 23)]
    assert all(p.read_bytes()[:4] == b"PPML" for p in results.rglob("part-*"))
    assert "ppml decrypt" in result.out


@pytest.mark.parametrize("engine", ["duckdb", "spark"])
def test_simple_query(ppml: Run, tmp_path: Path, engine: str, spark) -> None:  # type: ignore[no-untyped-def]
    result = ppml("example", "simple-query", "--engine", engine, "--rows", "3000", "--workdir", str(tmp_path / "s"))
    assert result.code == 0, result.err
    assert "names: 3,000" in result.out and "verified" in result.out


def test_tpch_commands(ppml: Run, tmp_path: Path) -> None:
    assert ppml("tpch", "gen", "--scale", "0.01", "--output", "plain").code == 0
    assert ppml("tpch", "encrypt", "plain", "enc", "--key", "local:sales").code == 0
    result = ppml("tpch", "run", "enc", "--queries", "1,6", "--output", "results", "--key", "local:sales")
    assert result.code == 0, result.err
    assert (tmp_path / "results" / "timings.csv").read_text().startswith("query,seconds,rows")
    assert (tmp_path / "results" / "q06" / "_ppml_dataset.json.ppml").exists()
    result = ppml("tpch", "check", "enc")
    assert result.code == 2 and "scale factor 1" in result.err and "SF 0.01" in result.err
    result = ppml("tpch", "run", "nowhere")
    assert result.code == 2 and "missing encrypted tables" in result.err


def test_bad_query_list(ppml: Run) -> None:
    result = ppml("demo", "--queries", "0-3")
    assert result.code == 2 and "0-3" in result.err


def test_tpch_encrypt_needs_local_plaintext(ppml: Run) -> None:
    remote = ppml("tpch", "encrypt", "abfs://c/plain", "out", "--key", "local:sales")
    assert remote.code == 2 and "must be a local directory" in remote.err
    missing = ppml("tpch", "encrypt", "no-such-dir", "out", "--key", "local:sales")
    assert missing.code == 2 and "no-such-dir: no such directory" in missing.err
