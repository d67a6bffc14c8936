"""TPC-H workload: query specs, SQL texts, generation, DuckDB/Spark agreement and the answer checker."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from decimal import Decimal
from importlib.resources import files
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ppml.errors import ConfigError, InputError, PPMLError
from ppml.workloads import tpch
from ppml.workloads.tpch import answers, datagen
from ppml.workloads.tpch.validate import Runner, duckdb_runner, spark_runner, validate_plain

# PySpark leaves closing its result sockets to the garbage collector (pyspark.util._load_from_socket),
# which the suite's "error" warning filter would turn into failures of whichever test collected them.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <socket.socket:pytest.PytestUnraisableExceptionWarning")

ALL = list(range(1, 23))


# --- query specs and texts --------------------------------------------------------------------------------

@pytest.mark.parametrize(("spec", "expected"), [
    ("1-22", ALL),
    ("1,3,5-7", [1, 3, 5, 6, 7]),
    ("6", [6]),
    (" 2 , 4 - 5 ", [2, 4, 5]),
    ("22,1", [22, 1]),
    ("3,1-4", [3, 1, 2, 4]),
    ("7-7", [7]),
])
def test_parse_queries(spec: str, expected: list[int]) -> None:
    assert tpch.parse_queries(spec) == expected


@pytest.mark.parametrize(("spec", "complaint"), [
    ("", "empty"),
    ("  ", "empty"),
    ("0", "no query 0"),
    ("23", "no query 23"),
    ("1-23", "no query 23"),
    ("5-3", "runs backwards"),
    ("a", "'a' is not a query number"),
    ("1-", "'1-' is not a query number"),
    ("-3", "'-3' is not a query number"),
    ("1,,2", "'' is not a query number"),
    ("1.5", "'1.5' is not a query number"),
    ("1-2-3", "'1-2-3' is not a query number"),
    ("q6", "'q6' is not a query number"),
    ("\u0663", "is not a query number"),  # an Arabic-Indic digit: str.isdigit() but not a query number
])
def test_parse_queries_rejects(spec: str, complaint: str) -> None:
    with pytest.raises(ConfigError, match="TPC-H query list") as caught:
        tpch.parse_queries(spec)
    assert complaint in str(caught.value)


@pytest.mark.parametrize("n", [0, 23, -1, True, "6"])
def test_query_text_rejects_unknown_queries(n: object) -> None:
    with pytest.raises(ConfigError, match="no TPC-H query"):
        tpch.query_text(n)  # type: ignore[arg-type]


def test_sql_files_are_exactly_q01_to_q22() -> None:
    shipped = sorted(entry.name for entry in files("ppml.workloads.tpch").joinpath("queries").iterdir()
                     if entry.name.endswith(".sql"))
    assert shipped == [f"q{n:02d}.sql" for n in ALL]


@pytest.mark.parametrize("n", ALL)
def test_sql_text_is_one_statement_without_semicolon(n: int) -> None:
    text = tpch.query_text(n)
    assert text == text.strip() and ";" not in text
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--"))
    assert code.split(None, 1)[0] in ("select", "with")
    assert not text.splitlines()[-1].lstrip().startswith("--"), "a trailing comment would swallow a wrapper's ')'"


# --- data generation ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sf001(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SF 0.01 Parquet, generated once for the module (about a second)."""
    directory = tmp_path_factory.mktemp("tpch") / "sf0.01"
    paths = tpch.generate(directory, 0.01)
    assert paths == {table: directory / f"{table}.parquet" for table in tpch.TABLES}
    return directory


def test_generate_writes_one_typed_file_per_table(sf001: Path) -> None:
    assert sorted(path.name for path in sf001.iterdir()) == sorted(f"{table}.parquet" for table in tpch.TABLES)
    schema = pq.read_schema(sf001 / "lineitem.parquet")
    assert schema.field("l_orderkey").type == pa.int64()
    assert schema.field("l_extendedprice").type == pa.decimal128(15, 2)
    assert schema.field("l_shipdate").type == pa.date32()
    assert pq.read_metadata(sf001 / "orders.parquet").num_rows == 15_000
    assert pq.read_metadata(sf001 / "region.parquet").num_rows == 5


def test_generate_refuses_an_existing_directory(sf001: Path) -> None:
    with pytest.raises(InputError, match="output exists"):
        tpch.generate(sf001, 0.01)


@pytest.mark.parametrize("scale", [0, -1, math.nan, math.inf, True, "1"])
def test_generate_rejects_bad_scales(tmp_path: Path, scale: object) -> None:
    with pytest.raises(ConfigError, match="scale factor must be a number greater than 0"):
        tpch.generate(tmp_path / "out", scale)  # type: ignore[arg-type]
    assert not (tmp_path / "out").exists()


def test_generate_rejects_unknown_formats(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="'orc' is not supported"):
        tpch.generate(tmp_path / "out", 0.01, fmt="orc")


def _fake_tpchgen(tmp_path: Path, script: str) -> Path:
    fake = tmp_path / "bin" / "tpchgen-cli"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\n" + script)
    fake.chmod(0o755)
    return fake


def test_failed_generation_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _fake_tpchgen(tmp_path, 'for a; do case "$a" in --output-dir=*) d=${a#*=};; esac; done\n'
                                   ': > "$d/region.parquet"\necho "[x INFO  y] Generated table region to r" >&2\n'
                                   'echo "No space left on device" >&2\nexit 3\n')
    monkeypatch.setattr(datagen, "find_tpchgen", lambda: fake)
    seen: list[tuple[str, int, int]] = []
    with pytest.raises(PPMLError, match=r"exit code 3; missing nation, .*lineitem\): No space left on device$"):
        tpch.generate(tmp_path / "out" / "sf1", 1, progress=lambda *event: seen.append(event))
    assert seen == [("region", 1, 8)]
    assert os.listdir(tmp_path / "out") == []


def test_progress_reports_every_table_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _fake_tpchgen(tmp_path, 'for a; do case "$a" in --output-dir=*) d=${a#*=};; esac; done\n'
                                   'for t in lineitem orders partsupp customer supplier part region nation; do\n'
                                   '  : > "$d/$t.parquet"; done\n'
                                   'echo "[x INFO  y] Generated table lineitem to lineitem.parquet" >&2\n'
                                   'echo "[x INFO  y] Generated table orders to orders.parquet" >&2\n')
    monkeypatch.setattr(datagen, "find_tpchgen", lambda: fake)
    seen: list[tuple[str, int, int]] = []
    paths = tpch.generate(tmp_path / "out", 2, progress=lambda *event: seen.append(event))
    assert [table for table, _, _ in seen[:2]] == ["lineitem", "orders"]  # as tpchgen-cli logs them
    assert sorted(table for table, _, _ in seen) == sorted(tpch.TABLES)  # the rest once it exits
    assert [(done, total) for _, done, total in seen] == [(done, 8) for done in range(1, 9)]
    assert all(path.is_file() for path in paths.values())


def test_missing_tpchgen_is_a_config_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(datagen.sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ConfigError, match="tpchgen-cli not found"):
        tpch.find_tpchgen()


def test_validate_plain_needs_sf1_data(sf001: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="scale factor 0.01; the official answers are for SF1"):
        validate_plain(sf001, "duckdb")
    with pytest.raises(InputError, match="missing .*lineitem.parquet"):
        validate_plain(tmp_path, "duckdb")


# --- DuckDB and Spark agree on every query --------------------------------------------------------------------

@pytest.fixture(scope="module")
def duckdb_run(sf001: Path) -> Iterator[Runner]:
    with duckdb_runner(sf001) as run:
        yield run


@pytest.fixture(scope="module")
def spark_run(sf001: Path, spark) -> Iterator[Runner]:  # type: ignore[no-untyped-def]
    with spark_runner(sf001, spark) as run:
        yield run


@pytest.mark.parametrize("n", ALL)
def test_duckdb_and_spark_agree(n: int, duckdb_run: Runner, spark_run: Runner) -> None:
    text = tpch.query_text(n)
    ours, theirs = duckdb_run(text), spark_run(text)
    assert ours.num_rows > 0 and ours.num_columns == len(answers.COLUMN_ROLES[n])
    assert tpch.compare_tables(ours, theirs) is None, f"q{n:02d}: {tpch.compare_tables(ours, theirs)}"


# --- the answer checker -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("n", ALL)
def test_each_answer_passes_against_itself(n: int) -> None:
    expected = tpch.load_answer(n)
    result = tpch.check_answer(n, expected)
    assert result.ok and result.message is None, result.message
    assert result.rows_expected == result.rows_actual == expected.num_rows > 0


def _replace(table: pa.Table, column: int, row: int, value: object) -> pa.Table:
    values = table.column(column).to_pylist()
    values[row] = value
    return table.set_column(column, table.field(column), pa.array(values, table.field(column).type))


def _failure(n: int, table: pa.Table, answers_dir: Path | None = None) -> str:
    result = tpch.check_answer(n, table, answers_dir)
    assert not result.ok and result.message is not None
    assert result.message.startswith(f"q{n:02d}: ")
    return result.message


def test_rejects_a_missing_row() -> None:
    table = tpch.load_answer(3)
    message = _failure(3, table.slice(0, 9))
    assert message == "q03: expected 10 rows, got 9"


def test_rejects_a_changed_string() -> None:
    message = _failure(4, _replace(tpch.load_answer(4), 0, 2, "3-MEDIUMX"))
    assert message == "q04: row 3, column 1 (o_orderpriority): expected '3-MEDIUM', got '3-MEDIUMX'"


def test_rejects_a_trimmed_space() -> None:
    table = tpch.load_answer(10)
    addresses = table.column("c_address").to_pylist()
    row = next(i for i, address in enumerate(addresses) if address != address.strip())
    trimmed = addresses[row].strip()
    message = _failure(10, _replace(table, 5, row, trimmed))
    assert f"row {row + 1}, column 6 (c_address): expected {addresses[row]!r}, got {trimmed!r}" in message


def test_rejects_money_off_by_two_cents_but_not_half_a_cent() -> None:
    table = tpch.load_answer(6)
    revenue = table.column(0)[0].as_py()
    assert tpch.check_answer(6, _replace(table, 0, 0, revenue + Decimal("0.005"))).ok
    message = _failure(6, _replace(table, 0, 0, revenue + Decimal("0.02")))
    assert message == ("q06: row 1, column 1 (revenue): expected 123141078.2283, got 123141078.2483 "
                       "(money sums must agree within 0.01)")


def test_rejects_a_swapped_row_order() -> None:
    table = tpch.load_answer(3)
    swapped = pa.concat_tables([table.slice(1, 1), table.slice(0, 1), table.slice(2)])
    message = _failure(3, swapped)
    assert message.startswith("q03: row 1, column 1 (l_orderkey): expected 2456423, got 3459808")
    assert message.endswith("this row is expected at row 2 (wrong row order?)")


def test_ratios_are_relative_and_keys_exact() -> None:
    table = tpch.load_answer(8)
    share = table.column(1)[0].as_py()
    assert tpch.check_answer(8, _replace(table, 1, 0, share * (1 + 1e-7))).ok
    assert "within 1e-6 relative" in _failure(8, _replace(table, 1, 0, share * (1 + 1e-5)))
    years = pa.array([float(year) for year in table.column(0).to_pylist()])
    assert tpch.check_answer(8, table.set_column(0, "o_year", years)).ok  # 1995.0 is the key 1995
    assert "counts and keys must be equal" in _failure(8, table.set_column(0, "o_year", pa.array([1995.5, 1996.0])))


def test_rejects_wrong_types_and_shapes() -> None:
    table = tpch.load_answer(4)
    as_text = table.set_column(1, "order_count", pa.array([str(v) for v in table.column(1).to_pylist()]))
    assert "expected the number 10594, got '10594'" in _failure(4, as_text)
    assert "expected 2 columns (o_orderpriority, order_count), got 1" in _failure(4, table.select([0]))
    dates = tpch.load_answer(3)
    as_text = dates.set_column(2, "o_orderdate", pa.array([d.isoformat() for d in dates.column(2).to_pylist()]))
    assert "expected date 1995-03-05, got '1995-03-05'" in _failure(3, as_text)


def test_answers_dir_overrides_the_shipped_answers(tmp_path: Path) -> None:
    (tmp_path / "q06.csv").write_text("revenue\n1.00\n")
    assert tpch.check_answer(6, pa.table({"revenue": [Decimal("1.00")]}), answers_dir=tmp_path).ok
    with pytest.raises(InputError, match="no answer file for TPC-H query 5"):
        tpch.check_answer(5, pa.table({"x": [1]}), answers_dir=tmp_path)
    (tmp_path / "q04.csv").write_text("o_orderpriority|order_count\n1-URGENT|many\n")
    assert _failure(4, tpch.load_answer(4), tmp_path) == "q04: expected 1 rows, got 5"
    assert "row 1, column 2 (order_count): the answer 'many' is not a number" in _failure(
        4, tpch.load_answer(4).slice(0, 1), tmp_path)
    with pytest.raises(InputError, match="q04.csv: column order_count does not parse"):
        tpch.load_answer(4, tmp_path)
    with pytest.raises(ConfigError, match="no TPC-H query 23"):
        tpch.check_answer(23, pa.table({"x": [1]}))


def test_compare_tables() -> None:
    a = pa.table({"k": [1, 2], "s": ["x ", "y"], "v": [Decimal("1.50"), Decimal("2.25")], "f": [0.1, None]})
    assert tpch.compare_tables(a, a) is None
    same = pa.table({"key": [1, 2], "s": ["x ", "y"], "v": [1.5, 2.25 * (1 + 1e-12)], "f": [0.1, None]})
    assert tpch.compare_tables(a, same) is None
    assert tpch.compare_tables(a, a.slice(0, 1)) == "2 rows vs 1"
    assert tpch.compare_tables(a, a.select([0, 1, 2])) == "4 columns (k, s, v, f) vs 3 (k, s, v)"
    trimmed = a.set_column(1, "s", pa.array(["x", "y"]))
    assert tpch.compare_tables(a, trimmed) == "row 1, column 2 (s): 'x ' vs 'x'"
    nudged = a.set_column(2, "v", pa.array([1.5, 2.25 * (1 + 1e-8)]))
    assert tpch.compare_tables(a, nudged) == f"row 2, column 3 (v): Decimal('2.25') vs {2.25 * (1 + 1e-8)!r}"
    assert tpch.compare_tables(a, a.set_column(3, "f", pa.array([0.1, 0.0]))) == "row 2, column 4 (f): None vs 0.0"
