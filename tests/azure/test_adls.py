"""ppml on Azure Blob Storage / ADLS Gen2 URLs (``abfs://``, ``abfss://``, ``az://``), against Azurite.

Credentials reach adlfs only through the environment: the session's connection string (see conftest), a
SAS or an account key in ``AZURE_STORAGE_*`` (checked in fresh processes, as a user runs the CLI).
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import fsspec
import pyarrow as pa
import pytest

from ppml import decrypt_file, encrypt_file, open_encrypted
from ppml.data import DatasetWriter, open_dataset, read_dataset, write_dataset
from ppml.data.objectstore import RANGE_BLOCK, atomic_output, redact
from ppml.data.parts import read_part
from ppml.engines import duckdb as ppml_duckdb
from ppml.errors import ConfigError, InputError
from ppml.kms import KeyRing
from ppml.kms.local import LocalKeystore
from ppml.testing.azurite import ACCOUNT_KEY, AzuriteEndpoint, Request, exported, running_azurite
from tests.conftest import PASSPHRASE, Run

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def container(azurite: AzuriteEndpoint) -> str:
    """A fresh, existing container for one test."""
    name = f"t-{uuid.uuid4().hex[:12]}"
    azurite.create_container(name)
    return name


def _blobs(url: str) -> dict[str, bytes]:
    fs, path = fsspec.core.url_to_fs(url)
    fs.invalidate_cache()
    return {name[len(path) + 1 :]: fs.cat_file(name) for name in fs.find(path)}


def _gets(azurite: AzuriteEndpoint, blob: str, since: int = 0) -> list[Request]:
    """GETs of ``blob`` served after the first ``since`` log lines (the access log is written on response end)."""
    previous: list[Request] | None = None
    for _ in range(40):
        found = [r for r in azurite.requests()[since:] if r.method == "GET" and r.path.endswith(blob)]
        if found == previous:
            return found
        previous = found
        time.sleep(0.05)
    return previous or []


# -- files and the CLI -----------------------------------------------------------------------------------


def test_cli_encrypts_inspects_and_decrypts_on_blob_storage(ppml: Run, tmp_path: Path, container: str) -> None:
    plaintext = b"".join(b"%d,Developer,Berlin\n" % i for i in range(30_000))
    (tmp_path / "people.csv").write_bytes(plaintext)
    target = f"abfs://{container}/in/people.csv.ppml"
    result = ppml("encrypt", "people.csv", target, "--key", "local:sales", "--segment-size", "65536")
    assert result.code == 0, result.err
    assert _blobs(f"abfs://{container}/in")["people.csv.ppml"][:4] == b"PPML"
    assert b"Developer" not in _blobs(f"abfs://{container}/in")["people.csv.ppml"]

    adls = f"abfss://{container}@devstoreaccount1.dfs.core.windows.net/in/people.csv.ppml"  # the ADLS Gen2 form
    info = ppml("inspect", adls, "--json")
    assert info.code == 0, info.err
    assert json.loads(info.out)["plaintext_size"] == len(plaintext) and json.loads(info.out)["key_uri"] == "local:sales"
    assert ppml("decrypt", target.replace("abfs://", "az://"), "back.csv").code == 0
    assert (tmp_path / "back.csv").read_bytes() == plaintext
    again = ppml("encrypt", "people.csv", target, "--key", "local:sales")
    assert again.code == 3 and f"{target}: output exists" in again.err


def test_cli_encrypts_and_decrypts_trees(ppml: Run, tmp_path: Path, container: str) -> None:
    (tmp_path / "data" / "2024").mkdir(parents=True)
    (tmp_path / "data" / "a.csv").write_text("id\n1\n")
    (tmp_path / "data" / "2024" / "b.csv").write_text("id\n2\n")
    tree = f"abfs://{container}/encrypted"
    assert ppml("encrypt", "data", tree, "--key", "local:sales").code == 0
    assert sorted(_blobs(tree)) == ["2024/b.csv.ppml", "a.csv.ppml"]
    assert ppml("decrypt", tree, f"abfs://{container}/plain").code == 0  # blob to blob
    assert ppml("decrypt", f"abfs://{container}/encrypted/", "back").code == 0
    assert (tmp_path / "back" / "2024" / "b.csv").read_text() == "id\n2\n"


def test_missing_blobs_are_clear_errors(ppml: Run, container: str, keyring: KeyRing) -> None:
    result = ppml("decrypt", f"abfs://{container}/nothing.csv.ppml", "out.csv")
    assert result.code == 3 and f"abfs://{container}/nothing.csv.ppml: no such file" in result.err
    result = ppml("inspect", "abfs://no-such-container/x.ppml")
    assert result.code == 3 and "abfs://no-such-container/x.ppml: no such file" in result.err
    with pytest.raises(InputError, match=f"abfs://{container}/nothing: no such dataset"):
        open_dataset(f"abfs://{container}/nothing", keyring)


def test_a_failed_output_leaves_no_blob_and_a_new_one_never_clobbers(container: str) -> None:
    url = f"abfs://{container}/half.bin"
    with pytest.raises(RuntimeError, match="interrupted"), atomic_output(url) as sink:
        sink.write(b"x" * (51 << 20))  # more than adlfs' 50 MiB block: one block is already staged
        raise RuntimeError("interrupted")
    assert _blobs(f"abfs://{container}") == {}
    with pytest.raises(InputError, match=f"{container}/raced.bin: output exists"), \
            atomic_output(f"abfs://{container}/raced.bin") as sink:
        sink.write(b"ours")
        fsspec.filesystem("abfs").pipe_file(f"{container}/raced.bin", b"theirs")  # another writer, meanwhile
    assert _blobs(f"abfs://{container}") == {"raced.bin": b"theirs"}


# -- datasets, DuckDB -------------------------------------------------------------------------------------


def test_dataset_commits_through_the_manifest(container: str, keyring: KeyRing) -> None:
    table = pa.table({"id": pa.array(range(1000), pa.int64()), "city": ["Berlin", "Lyon"] * 500})
    url = f"abfs://{container}/sales"
    write_dataset(table, url, keyring, key_uri="local:test", rows_per_part=400)
    write_dataset(table, url, keyring, key_uri="local:test", write_mode="append")
    assert read_dataset(url, keyring).num_rows == 2000
    committed = _blobs(url)
    assert len(committed) == 5 and all(data[:4] == b"PPML" for data in committed.values())  # 4 parts + manifest
    assert not any(name.startswith(".") for name in committed)  # parts never moved: written in place

    writer = DatasetWriter.begin(url, table.schema, keyring, key_uri="local:test", write_mode="append")
    writer.write(table)
    assert len(_blobs(url)) == 6 and read_dataset(url, keyring).num_rows == 2000  # not committed: invisible
    writer.abort()
    assert _blobs(url) == committed

    write_dataset(table.slice(0, 10), url, keyring, key_uri="local:test", write_mode="overwrite", file_format="csv")
    assert read_dataset(url, keyring).to_pylist() == table.slice(0, 10).to_pylist()
    assert len(_blobs(url)) == 2
    with pytest.raises(InputError, match=f"{url}: dataset exists"):
        write_dataset(table, url, keyring, key_uri="local:test")


def test_duckdb_queries_encrypted_data_in_azurite(container: str, keyring: KeyRing, azurite: AzuriteEndpoint) -> None:
    table = pa.table({"k": pa.array(range(60_000), pa.int64()), "v": [f"value-{i % 97}" for i in range(60_000)]})
    write_dataset(table, f"abfs://{container}/t", keyring, key_uri="local:test", rows_per_part=25_000,
                  options={"row_group_size": 5_000})
    write_dataset(table, f"abfs://{container}/c", keyring, key_uri="local:test", file_format="csv")
    since = len(azurite.requests())
    with ppml_duckdb.connect(keyring) as con:
        con.register_encrypted("t", f"abfs://{container}/t")
        con.register_encrypted("c", f"az://{container}/c")
        expected = [(sum(1 for k in range(60_000) if k % 7 == 0), sum(k for k in range(60_000) if k % 7 == 0))]
        assert con.sql("select count(*), sum(k) from t where k % 7 = 0").fetchall() == expected
        assert con.sql("select count(*), sum(k) from c where k % 7 = 0").fetchall() == expected
        con.write_encrypted("select k, v from t where k < 100 order by k", f"abfs://{container}/out",
                            key_uri="local:test")
    assert read_dataset(f"abfs://{container}/out", keyring).to_pylist() == table.slice(0, 100).to_pylist()
    part_gets = [r for r in _gets(azurite, "", since) if "/part-" in r.path]
    assert part_gets and all(r.status == 206 for r in part_gets)  # DuckDB reads through ppml:// in ranged GETs


# -- ranged reads: one large file read as splits -----------------------------------------------------------


def test_a_split_of_a_large_file_fetches_only_its_segments(container: str, keyring: KeyRing, tmp_path: Path,
                                                           azurite: AzuriteEndpoint) -> None:
    from pyspark.sql.pandas.types import from_arrow_schema

    from ppml.engines.spark.source import PPMLReader

    lines = pa.table({"id": pa.array(range(400_000), pa.int64()), "name": [f"name-{i:012d}" for i in range(400_000)]})
    url = f"abfs://{container}/big"
    write_dataset(lines, url, keyring, key_uri="local:test", file_format="csv")  # one part, 1 MiB segments
    dataset = open_dataset(url, keyring)
    part, segment = dataset.sources[0].part, 1 << 20
    assert part is not None and part.size > 8 * segment
    reader = PPMLReader(dataset, {"splitsize": str(2 * segment)}, from_arrow_schema(dataset.schema))
    splits = reader.partitions()
    assert len(splits) == -(-part.size // (2 * segment))

    since = len(azurite.requests())
    rows = read_part(splits[3].source, keyring)  # what the Spark reader runs for this partition
    gets = _gets(azurite, part.name, since)
    fetched = sum(r.size for r in gets)
    assert 0 < rows.num_rows < lines.num_rows // 3
    assert all(r.status == 206 for r in gets)  # every GET a ranged read
    # header (one read-ahead block), the final segment, and the split's own segments plus the line crossing its end
    assert fetched <= RANGE_BLOCK + segment + (2 * segment + 2 * segment) + 2 * RANGE_BLOCK, (fetched, gets)
    assert fetched < part.size / 2


def test_a_range_of_a_large_file_fetches_only_its_segments(container: str, keyring: KeyRing, tmp_path: Path,
                                                           azurite: AzuriteEndpoint) -> None:
    plaintext = os.urandom(4 << 20)
    (tmp_path / "big.bin").write_bytes(plaintext)
    url = f"abfs://{container}/big.bin.ppml"
    segment = 64 * 1024
    encrypt_file(str(tmp_path / "big.bin"), url, "local:test", keyring=keyring, segment_size=segment)
    since = len(azurite.requests())
    with open_encrypted(url, keyring=keyring) as view:
        view.seek(2 << 20)
        assert view.read(1000) == plaintext[2 << 20 : (2 << 20) + 1000]
    gets = _gets(azurite, "big.bin.ppml", since)
    fetched = sum(r.size for r in gets)
    assert len(gets) <= 4 and fetched <= 5 * segment, gets  # header, final segment, one segment (+ read-ahead)

    from ppml.data.fs import DecryptedFileSystem  # the ppml:// filesystem DuckDB reads through

    since = len(azurite.requests())
    with DecryptedFileSystem(keyring).open(f"ppml://abfs://{container}/big.bin") as handle:
        handle.seek(3 << 20)
        assert handle.read(100) == plaintext[3 << 20 : (3 << 20) + 100]
    gets = _gets(azurite, "big.bin.ppml", since)
    assert len(gets) <= 3 and sum(r.size for r in gets) <= 3 * segment + RANGE_BLOCK, gets


# -- Spark ---------------------------------------------------------------------------------------------------


def test_spark_reads_tpch_from_azurite_and_writes_results_back(spark, container: str, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                               azurite: AzuriteEndpoint) -> None:
    from ppml.engines.registry import DuckDBEngine, SparkEngine
    from ppml.workloads.tpch import compare_tables, generate
    from ppml.workloads.tpch.pipeline import encrypt_tables, register_encrypted, register_plain, run_queries
    from ppml.workloads.tpch.queries import query_text
    from ppml.workloads.workspace import Workspace

    # Spark's Python workers see the environment the JVM started with: the session's Azurite must be in it
    jvm_env = spark.sparkContext._jvm.java.lang.System.getenv("AZURE_STORAGE_CONNECTION_STRING")
    assert jvm_env == azurite.connection_string, "Spark started before Azurite's connection string was exported"
    work = Workspace.create(tmp_path / "work")
    key = work.ensure_key("tpch")
    generate(tmp_path / "plain", 0.01)
    tables = encrypt_tables(tmp_path / "plain", f"abfs://{container}/tpch", work.keyring, key_uri=key)
    assert tables["lineitem"] == f"abfs://{container}/tpch/lineitem"

    baseline_engine = DuckDBEngine(work.keyring)
    register_plain(baseline_engine, tmp_path / "plain")
    baseline = {run.query: run.result for run in run_queries(baseline_engine, [1, 6])}
    baseline_engine.close()

    engine = SparkEngine(work.keyring, spark=spark)
    register_encrypted(engine, {"lineitem": tables["lineitem"]})  # Q1 and Q6 read lineitem only
    for run in run_queries(engine, [1, 6]):
        assert compare_tables(baseline[run.query], run.result) is None
    engine.write(query_text(1), f"abfs://{container}/results/q01", key_uri=key, file_format="csv")
    assert compare_tables(baseline[1], read_dataset(f"abfs://{container}/results/q01", work.keyring).sort_by(
        [("l_returnflag", "ascending"), ("l_linestatus", "ascending")])) is None
    results = _blobs(f"abfs://{container}/results")
    assert results and all(data[:4] == b"PPML" for data in results.values())
    assert "AccountKey" not in json.dumps(engine.source_options)  # credentials are never data source options
    assert not any("AccountKey" in value for _, value in spark.sparkContext.getConf().getAll())


# -- credentials ---------------------------------------------------------------------------------------------


def _cli(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI in a fresh process whose only storage credentials are ``env``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_STORAGE_", "FSSPEC_"))}
    return subprocess.run([sys.executable, "-m", "ppml", *args], env={**base, **env}, cwd=cwd, capture_output=True,
                          text=True, timeout=120, check=False)


@pytest.mark.parametrize("auth", ["account_key", "sas"])
def test_account_name_with_key_or_sas_from_the_environment(azurite_https: AzuriteEndpoint, keystore: LocalKeystore,
                                                           tmp_path: Path, auth: str) -> None:
    name = f"auth-{uuid.uuid4().hex[:12]}"
    azurite_https.create_container(name)
    sas = azurite_https.sas_token(name) if auth == "sas" else None
    env = {**azurite_https.environ(auth, sas_token=sas), "PPML_KEYSTORE": str(keystore.path),
           "PPML_KEYSTORE_PASSPHRASE": PASSPHRASE}
    (tmp_path / "a.csv").write_bytes(b"id,name\n1,ann\n" * 1000)
    url = f"abfs://{name}/a.csv.ppml"
    result = _cli(env, tmp_path, "encrypt", "a.csv", url, "--key", "local:test")
    assert result.returncode == 0, result.stderr
    result = _cli(env, tmp_path, "decrypt", url, "b.csv")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "b.csv").read_bytes() == (tmp_path / "a.csv").read_bytes()


def test_wrong_account_key_is_a_clear_error_without_the_key(azurite_https: AzuriteEndpoint, keystore: LocalKeystore,
                                                            tmp_path: Path) -> None:
    wrong = base64.b64encode(os.urandom(64)).decode()  # well-formed, but not the account's
    env = {**azurite_https.environ("account_key"), "AZURE_STORAGE_ACCOUNT_KEY": wrong,
           "PPML_KEYSTORE": str(keystore.path), "PPML_KEYSTORE_PASSPHRASE": PASSPHRASE}
    (tmp_path / "a.csv").write_text("id\n1\n")
    result = _cli(env, tmp_path, "encrypt", "a.csv", "abfs://somewhere/a.csv.ppml", "--key", "local:test")
    assert result.returncode == 2, result.stderr
    assert "abfs://somewhere/a.csv.ppml: the storage service refused access (HTTP 403" in result.stderr
    assert "AZURE_STORAGE_ACCOUNT_KEY" in result.stderr  # says where credentials come from
    assert wrong not in result.stderr and ACCOUNT_KEY not in result.stderr and "Traceback" not in result.stderr


def test_read_only_sas_reads_but_cannot_write_and_no_signature_is_echoed(azurite: AzuriteEndpoint, container: str,
                                                                          keyring: KeyRing, tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("hello\n")
    encrypt_file(str(tmp_path / "a.txt"), f"abfs://{container}/a.txt.ppml", "local:test", keyring=keyring)
    sas = azurite.sas_token(container, permission="rl")
    signature = re.search(r"sig=([^&]+)", sas).group(1)  # type: ignore[union-attr]
    with exported({"AZURE_STORAGE_CONNECTION_STRING": azurite.sas_connection_string(sas)}):
        decrypt_file(f"abfs://{container}/a.txt.ppml", str(tmp_path / "b.txt"), keyring=keyring)
        assert (tmp_path / "b.txt").read_text() == "hello\n"
        with pytest.raises(ConfigError) as refused:
            encrypt_file(str(tmp_path / "a.txt"), f"abfs://{container}/b.txt.ppml", "local:test", keyring=keyring)
    message = str(refused.value)
    assert message.startswith(f"abfs://{container}/b.txt.ppml: the storage service refused access (HTTP 403")
    assert signature not in message and "sig=" not in message and refused.value.__cause__ is None


def test_redact_hides_signatures_and_keys() -> None:
    url = "https://acct.blob.core.windows.net/c/x.ppml?sv=2025-01-05&se=2030&sr=c&sp=r&sig=abc%2Bdef%3D"
    assert redact(url) == "https://acct.blob.core.windows.net/c/x.ppml?sv=2025-01-05&se=2030&sr=c&sp=r&sig=REDACTED"
    text = f"AccountName=devstoreaccount1;AccountKey={ACCOUNT_KEY};SharedAccessSignature=sv=1&sig=x;"
    assert ACCOUNT_KEY not in redact(text) and "sig=x" not in redact(text)


# -- Azurite itself, the demo, the guide ---------------------------------------------------------------------


def test_azurite_stops_when_the_block_fails(tmp_path: Path) -> None:
    import socket

    with pytest.raises(RuntimeError, match="boom"), running_azurite(tmp_path / "az") as endpoint:
        socket.create_connection((endpoint.host, endpoint.port), timeout=1).close()
        raise RuntimeError("boom")
    with pytest.raises(OSError):
        socket.create_connection((endpoint.host, endpoint.port), timeout=1).close()


def test_demo_runs_on_azurite_with_one_flag(ppml: Run, tmp_path: Path, azurite: AzuriteEndpoint) -> None:
    result = ppml("demo", "--storage", "azurite", "--queries", "1,6", "--scale", "0.01",
                  "--workdir", str(tmp_path / "demo"))
    assert result.code == 0, result.err
    assert "storage: Azurite, the Azure Storage emulator" in result.out
    assert result.out.count("ok (same as plaintext)") == 2
    assert "abfs://ppml-demo/tpch-sf0.01/encrypted" in result.out and "abfs://ppml-demo/results/q01" in result.out
    assert (tmp_path / "demo" / "azurite" / "__blobstorage__").is_dir()  # Azurite's data, kept in the workdir
    assert os.environ["AZURE_STORAGE_CONNECTION_STRING"] == azurite.connection_string  # the session's, restored


def test_demo_storage_url_uses_the_environments_credentials(ppml: Run, tmp_path: Path, container: str) -> None:
    result = ppml("demo", "--storage-url", f"abfs://{container}/demo", "--queries", "6", "--scale", "0.01",
                  "--workdir", str(tmp_path / "demo"))
    assert result.code == 0, result.err
    results = _blobs(f"abfs://{container}/demo/results/q06")
    assert "_ppml_dataset.json.ppml" in results and all(data[:4] == b"PPML" for data in results.values())
    assert len(_blobs(f"abfs://{container}/demo/tpch-sf0.01/encrypted")) == 16  # 8 tables: a part and a manifest


def test_guide_example_runs_against_azurite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            azurite: AzuriteEndpoint) -> None:
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "azure-storage.md").read_text(), re.S)
    assert blocks
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PPML_KEYSTORE_PASSPHRASE", PASSPHRASE)
    LocalKeystore("keystore.json").create_key("sales")
    (tmp_path / "people.csv").write_text("name,age\nann,31\nbob,42\n")
    namespace: dict[str, object] = {}
    exec(compile(blocks[0], "docs/azure-storage.md", "exec"), namespace)  # noqa: S102 - our own documentation
    assert read_dataset("abfs://analytics/older", namespace["keyring"]).num_rows == 1  # type: ignore[arg-type]
