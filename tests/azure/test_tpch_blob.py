"""``ppml tpch`` and BigDL-format files on blob storage (``abfs://``), against the session's Azurite.

TPC-H runs at SF 0.01 on DuckDB; ``tpch check`` compares with the SF 1 answers, so the results of ``tpch run``
are compared with a plaintext run instead.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import fsspec
import pytest

from ppml._atomic import PARTIAL_MARKER
from ppml.data import read_dataset
from ppml.engines.registry import DuckDBEngine
from ppml.kms import KeyRing
from ppml.testing.azurite import AzuriteEndpoint
from ppml.workloads.tpch import compare_tables, generate
from ppml.workloads.tpch.pipeline import register_plain, run_queries
from tests.conftest import Run

VECTORS = Path(__file__).parents[1] / "vectors" / "bigdl"
QUERIES = (1, 3, 6)  # lineitem alone, and a three-table join with ORDER BY and LIMIT


@pytest.fixture
def container(azurite: AzuriteEndpoint) -> str:
    """A fresh, existing container for one test."""
    name = f"t-{uuid.uuid4().hex[:12]}"
    azurite.create_container(name)
    return name


@pytest.fixture(scope="module")
def sf001(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """TPC-H SF 0.01, generated locally once for the module."""
    directory = tmp_path_factory.mktemp("tpch") / "sf0.01"
    generate(directory, 0.01)
    return directory


def _blobs(url: str) -> dict[str, bytes]:
    fs, path = fsspec.core.url_to_fs(url)
    fs.invalidate_cache()
    return {name[len(path) + 1 :]: fs.cat_file(name) for name in fs.find(path)}


# -- TPC-H -----------------------------------------------------------------------------------------------


def test_tpch_encrypt_run_and_check_on_blob_storage(keyring: KeyRing, ppml: Run, sf001: Path, container: str) -> None:
    data, results = f"abfs://{container}/sf0.01-enc", f"abfs://{container}/results"
    result = ppml("tpch", "encrypt", str(sf001), data, "--key", "local:test")
    assert result.code == 0, result.err
    tables = _blobs(data)
    assert len(tables) == 16 and all(blob[:4] == b"PPML" for blob in tables.values())  # a part and a manifest each

    queries = ",".join(map(str, QUERIES))
    result = ppml("tpch", "run", data.replace("abfs://", "az://"), "--queries", queries, "--output", results,
                  "--key", "local:test")
    assert result.code == 0, result.err
    assert all(f"Q{n:02d}" in result.out for n in QUERIES)
    written = _blobs(results)
    assert written["timings.csv"].decode().startswith("query,seconds,rows")
    assert all(blob[:4] == b"PPML" for name, blob in written.items() if name != "timings.csv")

    baseline = DuckDBEngine(keyring)
    try:
        register_plain(baseline, sf001)
        expected = {run.query: run.result for run in run_queries(baseline, QUERIES)}
    finally:
        baseline.close()
    for n in QUERIES:
        assert compare_tables(expected[n], read_dataset(f"{results}/q{n:02d}", keyring)) is None, n

    result = ppml("tpch", "check", data)  # reads the orders manifest from blob storage to find the scale
    assert result.code == 2 and "scale factor 1" in result.err and "SF 0.01" in result.err


def test_missing_blob_datasets_are_clear_errors(keyring: KeyRing, ppml: Run, sf001: Path, container: str) -> None:
    for url in (f"abfs://{container}/nothing", "abfs://no-such-container/sf1-enc"):
        result = ppml("tpch", "run", url, "--queries", "6")
        assert result.code == 2 and f"{url}: missing encrypted tables: region, nation" in result.err, result.err
        result = ppml("tpch", "check", url)
        assert result.code == 2 and f"{url}/orders: not an encrypted ppml dataset" in result.err, result.err
    assert ppml("tpch", "encrypt", str(sf001), f"abfs://{container}/enc", "--key", "local:test").code == 0
    fsspec.filesystem("abfs").rm(f"{container}/enc/lineitem", recursive=True)
    result = ppml("tpch", "run", f"abfs://{container}/enc", "--queries", "6")
    assert result.code == 2 and f"abfs://{container}/enc: missing encrypted tables: lineitem (" in result.err
    assert "Traceback" not in result.err


def test_plaintext_tpch_stays_local(ppml: Run, container: str) -> None:
    result = ppml("tpch", "gen", "--scale", "0.01", "--output", f"abfs://{container}/plain")
    assert result.code == 2 and f"ppml tpch encrypt DIR abfs://{container}/plain" in result.err
    result = ppml("tpch", "run", f"abfs://{container}/plain", "--plain")
    assert result.code == 2 and "--plain reads generated plaintext tables from a local directory" in result.err
    assert _blobs(f"abfs://{container}") == {}


# -- BigDL files ------------------------------------------------------------------------------------------


@pytest.fixture
def primary_key(tmp_path: Path) -> Path:
    vector = json.loads((VECTORS / "vectors.json").read_text())["vectors"][0]
    path = tmp_path / "primary.key"
    path.write_text(vector["primary_key"] + "\n")
    return path


def test_bigdl_files_round_trip_through_blob_storage(ppml: Run, primary_key: Path, tmp_path: Path,
                                                     container: str, azurite: AzuriteEndpoint) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "part-0.csv").write_text("name,age\nann,31\n")
    (tmp_path / "data" / "part-1.csv").write_text("name,age\nbob,42\n")
    key = ("--bigdl-key-file", str(primary_key))
    bigdl, plain = f"abfs://{container}/bigdl", f"abfs://{container}/plain"
    with pytest.warns(UserWarning, match="BigDL"):
        result = ppml("encrypt", "data", bigdl, "--insecure-bigdl-format", "common", *key)
    assert result.code == 0, result.err
    assert sorted(_blobs(bigdl)) == [".meta", "part-0.csv.cbc", "part-1.csv.cbc"]  # written in place, no staging
    assert ppml("decrypt", bigdl, plain, *key).code == 0  # blob to blob
    assert _blobs(plain) == {"part-0.csv": b"name,age\nann,31\n", "part-1.csv": b"name,age\nbob,42\n"}
    assert ppml("decrypt", f"{bigdl}/part-1.csv.cbc", "one.csv", *key).code == 0
    assert (tmp_path / "one.csv").read_text() == "name,age\nbob,42\n"
    again = ppml("decrypt", bigdl, plain, *key)
    assert again.code == 3 and f"{plain}: output exists" in again.err
    assert not [r for r in azurite.requests(container) if PARTIAL_MARKER in r.path]  # never staged, copied, deleted


def test_a_failed_bigdl_write_to_blob_storage_leaves_nothing(ppml: Run, primary_key: Path, tmp_path: Path,
                                                             container: str) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "part-0.csv").write_text("name,age\nann,31\n")
    (tmp_path / "data" / "part-1.csv").write_text("name,age\nbob,42\n")
    key = ("--bigdl-key-file", str(primary_key))
    bigdl = f"abfs://{container}/bigdl"
    with pytest.warns(UserWarning, match="BigDL"):
        assert ppml("encrypt", "data", bigdl, "--insecure-bigdl-format", "common", *key).code == 0
    fs = fsspec.filesystem("abfs")
    tampered = bytearray(fs.cat_file(f"{container}/bigdl/part-1.csv.cbc"))
    tampered[-40] ^= 0x01
    fs.pipe_file(f"{container}/bigdl/part-1.csv.cbc", bytes(tampered))

    result = ppml("decrypt", bigdl, f"abfs://{container}/plain", *key)  # part-0 decrypts, then part-1 fails
    assert result.code == 4 and "part-1.csv.cbc" in result.err and "HMAC" in result.err
    result = ppml("decrypt", f"{bigdl}/part-1.csv.cbc", f"abfs://{container}/one.csv", *key)
    assert result.code == 4
    assert sorted(_blobs(f"abfs://{container}")) == ["bigdl/.meta", "bigdl/part-0.csv.cbc", "bigdl/part-1.csv.cbc"]
