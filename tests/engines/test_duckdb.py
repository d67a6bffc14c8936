"""DuckDB over encrypted datasets: exact types, tampering fails loudly, results written back encrypted."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from ppml.data import read_dataset, write_dataset
from ppml.engines import duckdb as ppml_duckdb
from ppml.kms import KeyRing
from tests.data.fidelity import CASES, fidelity_table


@pytest.fixture
def con(keyring: KeyRing):  # type: ignore[no-untyped-def]
    with ppml_duckdb.connect(keyring) as connection:
        yield connection


@pytest.mark.parametrize(("file_format", "mode"), CASES)
def test_every_type_survives(tmp_path: Path, keyring: KeyRing, con, file_format: str, mode: str) -> None:  # type: ignore[no-untyped-def]
    table = fidelity_table()
    write_dataset(table, str(tmp_path / "d"), keyring, file_format=file_format, mode=mode, key_uri="local:test",
                  rows_per_part=3)
    con.register_encrypted("t", str(tmp_path / "d"))
    assert con.sql("select * from t order by id nulls last").to_arrow_table().to_pylist() == \
        sorted(table.to_pylist(), key=lambda r: (r["id"] is None, r["id"] or 0))


@pytest.mark.parametrize(("file_format", "mode"), [("parquet", "ppml"), ("csv", "ppml"), ("parquet", "aes_gcm_v1")])
def test_results_are_written_encrypted(tmp_path: Path, keyring: KeyRing, con, file_format: str, mode: str) -> None:  # type: ignore[no-untyped-def]
    write_dataset(fidelity_table(), str(tmp_path / "in"), keyring, key_uri="local:test")
    con.register_encrypted("t", str(tmp_path / "in"))
    con.write_encrypted("select name, amount from t where id > 0", str(tmp_path / "out"), key_uri="local:test",
                        file_format=file_format, mode=mode)
    assert read_dataset(str(tmp_path / "out"), keyring).to_pylist() == \
        [{"name": r["name"], "amount": r["amount"]} for r in fidelity_table().to_pylist() if (r["id"] or 0) > 0]
    assert not any(b"ascii" in p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file())


@pytest.mark.parametrize("where", [0.25, 0.5, 0.9, -30])
def test_tampered_container_part_fails_naming_the_file(tmp_path: Path, keyring: KeyRing, con, where: float) -> None:  # type: ignore[no-untyped-def]
    import pyarrow as pa

    rows = pa.table({"k": range(300_000), "v": [f"value-{i}" for i in range(300_000)]})
    write_dataset(rows, str(tmp_path / "d"), keyring, key_uri="local:test", options={"row_group_size": 50_000})
    part = next((tmp_path / "d").glob("part-*"))
    data = bytearray(part.read_bytes())
    data[int(len(data) * where) if where > 0 else int(where)] ^= 0x01
    part.write_bytes(bytes(data))
    with pytest.raises(duckdb.Error, match=part.name.removesuffix(".ppml")):
        con.register_encrypted("t", str(tmp_path / "d"))
        con.sql("select sum(k), count(v) from t").fetchall()


def test_projection_decrypts_only_what_it_reads(tmp_path: Path, keyring: KeyRing, con) -> None:  # type: ignore[no-untyped-def]
    import pyarrow as pa

    rows = pa.table({"k": range(400_000), "pad": [f"{i:020d}-padding-padding" for i in range(400_000)]})
    write_dataset(rows, str(tmp_path / "d"), keyring, key_uri="local:test", options={"compression": "none"})
    con.register_encrypted("t", str(tmp_path / "d"))
    assert con.sql("select sum(k) from t").fetchall() == [(sum(range(400_000)),)]
    decrypted = len(con.filesystem._cache._items)
    total = con.filesystem._container(str(next((tmp_path / "d").glob("part-*")))).layout.segment_count
    assert decrypted < total / 2  # the padding column's segments were never decrypted


def test_missing_dataset(tmp_path: Path, con) -> None:  # type: ignore[no-untyped-def]
    from ppml.errors import InputError

    with pytest.raises(InputError, match="nowhere: no such dataset"):
        con.register_encrypted("t", str(tmp_path / "nowhere"))


def test_no_spilling_to_disk_by_default(con) -> None:  # type: ignore[no-untyped-def]
    assert con.sql("select current_setting('temp_directory')").fetchall() == [("",)]
