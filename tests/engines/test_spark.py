"""Spark over encrypted datasets, in one shared trusted local session."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pytest

from ppml.data import read_dataset, write_dataset
from ppml.engines.spark import PPMLContext
from ppml.kms import KeyRing
from ppml.kms.local import LocalKeystore
from tests.conftest import PASSPHRASE
from tests.data.fidelity import CASES, fidelity_table


@pytest.fixture
def options(tmp_path: Path, keystore: LocalKeystore) -> dict[str, str]:
    """Data source options: where executors find the keystore and its passphrase (a file, not a secret)."""
    passphrase = tmp_path / "passphrase"
    passphrase.write_text(PASSPHRASE + "\n")
    return {"keystore": str(keystore.path), "passphraseFile": str(passphrase)}


def _rows(table: pa.Table) -> list[dict]:  # type: ignore[type-arg]
    return sorted(table.to_pylist(), key=lambda r: (r["id"] is None, r["id"] or 0))


@pytest.mark.parametrize(("file_format", "mode"), CASES)
def test_reads_every_type(spark, tmp_path: Path, keyring: KeyRing, options, file_format: str, mode: str) -> None:  # type: ignore[no-untyped-def]
    table = fidelity_table()
    write_dataset(table, str(tmp_path / "d"), keyring, file_format=file_format, mode=mode, key_uri="local:test",
                  rows_per_part=3)
    frame = spark.read.format("ppml").options(**options).load(str(tmp_path / "d"))
    assert _rows(frame.toArrow()) == _rows(table)


@pytest.mark.parametrize("file_format", ["parquet", "csv", "json"])
def test_writes_encrypted_and_appends(spark, tmp_path: Path, keyring: KeyRing, options, file_format: str) -> None:  # type: ignore[no-untyped-def]
    table = fidelity_table()
    write_dataset(table, str(tmp_path / "in"), keyring, key_uri="local:test")
    frame = spark.read.format("ppml").options(**options).load(str(tmp_path / "in"))  # keeps naive timestamps
    target = str(tmp_path / "out")
    writer = frame.write.format("ppml").options(**options).option("key", "local:test").option("format", file_format)
    writer.mode("overwrite").save(target)
    writer.mode("append").save(target)
    back = read_dataset(target, keyring)
    assert _rows(back) == _rows(pa.concat_tables([table, table]))
    assert not any(b"ascii" in p.read_bytes() for p in Path(target).rglob("*") if p.is_file())


def test_row_groups_become_partitions(spark, tmp_path: Path, keyring: KeyRing, options) -> None:  # type: ignore[no-untyped-def]
    rows = pa.table({"k": pa.array(range(10_000), pa.int64())})
    write_dataset(rows, str(tmp_path / "d"), keyring, key_uri="local:test", options={"row_group_size": 1000},
                  rows_per_part=5000)
    frame = spark.read.format("ppml").options(**options).load(str(tmp_path / "d"))
    assert frame.rdd.getNumPartitions() == 10
    assert frame.selectExpr("sum(k)").collect()[0][0] == sum(range(10_000))


def test_tampered_part_fails_the_job(spark, tmp_path: Path, keyring: KeyRing, options) -> None:  # type: ignore[no-untyped-def]
    write_dataset(fidelity_table(), str(tmp_path / "d"), keyring, key_uri="local:test", rows_per_part=2)
    part = sorted((tmp_path / "d").glob("part-*"))[1]
    data = bytearray(part.read_bytes())
    data[len(data) // 2] ^= 0x01
    part.write_bytes(bytes(data))
    with pytest.raises(Exception, match=part.name):
        spark.read.format("ppml").options(**options).load(str(tmp_path / "d")).collect()


def test_bigdl_style_context(spark, tmp_path: Path, keyring: KeyRing, options) -> None:  # type: ignore[no-untyped-def]
    context = PPMLContext(spark, keys={"defaultKey": "local:test"}, options=options)
    frame = spark.createDataFrame(fidelity_table().select(["id", "name"]))
    context.write(frame, "ppml", "defaultKey").mode("overwrite").option("header", True).csv(str(tmp_path / "o"))
    with pytest.raises(Exception, match="dataset exists"):
        context.write(frame, "ppml", "defaultKey").csv(str(tmp_path / "o"))
    back = context.read("ppml").csv(str(tmp_path / "o"))
    assert sorted(map(tuple, back.collect()), key=str) == sorted(map(tuple, frame.collect()), key=str)


def test_trusted_session_settings(spark) -> None:  # type: ignore[no-untyped-def]
    conf = dict(spark.sparkContext.getConf().getAll())
    for key in ("spark.authenticate", "spark.network.crypto.enabled", "spark.io.encryption.enabled"):
        assert conf[key] == "true", key
    assert not any(PASSPHRASE in value for value in conf.values())


def test_no_plaintext_at_rest(spark, spark_local_dir: Path, tmp_path: Path, keyring: KeyRing, options) -> None:  # type: ignore[no-untyped-def]
    """Canaries in an encrypted dataset go through a shuffle that spills; none may reach any disk."""
    canary = "CANARY-5e8d2f71"
    rows = pa.table({"k": pa.array([i % 97 for i in range(240_000)], pa.int64()),
                     "v": [f"{canary}-{i}" for i in range(240_000)]})  # 120k rows per shuffle partition: spills
    write_dataset(rows, str(tmp_path / "in"), keyring, key_uri="local:test", rows_per_part=60_000)
    started = time.time()
    frame = spark.read.format("ppml").options(**options).load(str(tmp_path / "in"))
    shuffled = frame.repartition(2, "k").sortWithinPartitions("v").groupBy("k").agg({"v": "max"})
    shuffled.write.format("ppml").options(**options).option("key", "local:test").mode("overwrite") \
        .save(str(tmp_path / "out"))
    assert read_dataset(str(tmp_path / "out"), keyring).num_rows == 97
    scanned = 0
    roots = [spark_local_dir, tmp_path, *[p for p in Path(tempfile.gettempdir()).glob("spark-*")
                                          if p.stat().st_mtime >= started - 1]]
    for root in roots:
        for path in root.rglob("*"):
            if path.is_file():
                scanned += 1
                assert canary.encode() not in path.read_bytes(), f"plaintext canary found in {path}"
    shuffle_files = [p for p in spark_local_dir.rglob("*") if p.is_file()]
    assert shuffle_files, "the shuffle left no files to scan"
    assert scanned > len(shuffle_files)


@pytest.mark.parametrize("file_format", ["csv", "json"])
def test_large_row_files_are_read_as_splits(spark, tmp_path: Path, keyring: KeyRing, options,  # type: ignore[no-untyped-def]
                                            file_format: str) -> None:
    rows = pa.table({"k": pa.array(range(20_000), pa.int64()), "v": [f"row {i} ✓" for i in range(20_000)]})
    write_dataset(rows, str(tmp_path / "d"), keyring, file_format=file_format, key_uri="local:test")
    frame = spark.read.format("ppml").options(**options).option("splitSize", "16384").load(str(tmp_path / "d"))
    assert frame.rdd.getNumPartitions() > 10
    assert sorted(frame.toArrow().to_pylist(), key=lambda r: r["k"]) == rows.to_pylist()


def test_context_takes_the_key_ring_that_ppml_submit_put_in_the_conf(spark) -> None:  # type: ignore[no-untyped-def]
    from ppml.deploy.submit import KEYRING_CONF as SUBMIT_CONF
    from ppml.engines.spark.context import KEYRING_CONF, PPMLContext

    assert SUBMIT_CONF == KEYRING_CONF
    ring = '{"kbs": {"attester": "gramine", "ca_file": "/etc/ppml/kbs/ca.pem", "url": "https://kbs:8443"}}'
    spark.conf.set(KEYRING_CONF, ring)
    try:
        assert PPMLContext(spark).options["keyring"] == ring
        assert PPMLContext(spark, options={"keyring": "{}"}).options["keyring"] == "{}"  # explicit wins
    finally:
        spark.conf.unset(KEYRING_CONF)
    assert "keyring" not in PPMLContext(spark).options
