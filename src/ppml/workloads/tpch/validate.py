"""Run the 22 queries on plaintext Parquet with DuckDB or Spark and check them against the SF1 answers.

The engines are imported only when used, so importing ``ppml.workloads.tpch`` costs neither. Run
``python -m ppml.workloads.tpch.validate DIR ENGINE [QUERIES]`` to print one line per query.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ppml.errors import ConfigError, InputError
from ppml.workloads.tpch.answers import CheckResult, check_answer, read_answer
from ppml.workloads.tpch.datagen import TABLES
from ppml.workloads.tpch.queries import QUERIES, parse_queries, query_text

ENGINES: tuple[str, ...] = ("duckdb", "spark")
SF1_ORDERS = 1_500_000

Runner = Callable[[str], pa.Table]
"""Runs one SQL text over the TPC-H views and returns the whole result as an Arrow table."""


def table_paths(scale_dir: str | Path) -> dict[str, Path]:
    """``<scale_dir>/<table>.parquet`` for the 8 tables; an ``InputError`` names any that are missing."""
    directory = Path(scale_dir)
    paths = {table: directory / f"{table}.parquet" for table in TABLES}
    missing = [str(path) for path in paths.values() if not path.is_file()]
    if missing:
        raise InputError(f"{directory}: not a TPC-H Parquet directory; missing {', '.join(missing)}")
    return paths


def scale_of(scale_dir: str | Path) -> float:
    """The scale factor of generated data, from the row count of ``orders`` (1,500,000 per unit)."""
    return pq.read_metadata(table_paths(scale_dir)["orders"]).num_rows / SF1_ORDERS


@contextmanager
def duckdb_runner(scale_dir: str | Path) -> Iterator[Runner]:
    """An in-memory DuckDB connection with one view per table over ``read_parquet``."""
    import duckdb

    connection = duckdb.connect()
    try:
        for table, path in table_paths(scale_dir).items():
            literal = str(path).replace("'", "''")
            connection.execute(f"create view {table} as select * from read_parquet('{literal}')")
        yield lambda sql: connection.sql(sql).to_arrow_table()
    finally:
        connection.close()


@contextmanager
def spark_runner(scale_dir: str | Path, spark: Any = None) -> Iterator[Runner]:
    """Temp views over ``spark.read.parquet`` in ``spark``, or in a local[2] session started here.

    A session started here is stopped at the end; in a caller's session the views are dropped instead.
    """
    session = spark if spark is not None else _local_spark()
    paths = table_paths(scale_dir)
    try:
        for table, path in paths.items():
            session.read.parquet(str(path)).createOrReplaceTempView(table)
        yield lambda sql: session.sql(sql).toArrow()
    finally:
        if spark is None:
            session.stop()
        else:
            for table in paths:
                session.catalog.dropTempView(table)


@contextmanager
def open_runner(engine: str, scale_dir: str | Path, *, spark: Any = None) -> Iterator[Runner]:
    """The runner for ``engine`` ("duckdb" or "spark") over the Parquet tables in ``scale_dir``."""
    if engine == "duckdb":
        with duckdb_runner(scale_dir) as runner:
            yield runner
    elif engine == "spark":
        with spark_runner(scale_dir, spark) as runner:
            yield runner
    else:
        raise ConfigError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")


def validate_plain(scale_dir: str | Path, engine: str, queries: Sequence[int] = QUERIES, *,
                   spark: Any = None) -> list[CheckResult]:
    """Run ``queries`` with ``engine`` over SF1 Parquet in ``scale_dir``; check each, with its time.

    A query that raises is reported as a failed result, so one broken query does not hide the others.
    The time covers planning, execution and fetching the result as Arrow.
    """
    scale = scale_of(scale_dir)
    if scale != 1:
        raise ConfigError(f"{scale_dir}: holds TPC-H scale factor {scale:g}; the official answers are for SF1")
    results = []
    with open_runner(engine, scale_dir, spark=spark) as run:
        for n in queries:
            results.append(_run_and_check(run, n, engine))
    return results


def _run_and_check(run: Runner, n: int, engine: str) -> CheckResult:
    started = time.perf_counter()
    try:
        table = run(query_text(n))
    except Exception as error:  # report the engine's error as this query's failure
        seconds = time.perf_counter() - started
        message = f"q{n:02d}: {engine} raised {type(error).__name__}: {str(error).strip()[:500]}"
        return CheckResult(n, False, len(read_answer(n).rows), 0, message, seconds)
    seconds = time.perf_counter() - started
    return replace(check_answer(n, table), seconds=seconds)


def _local_spark() -> Any:
    """A local[2] session sized for SF1: 4 GB driver heap, 8 shuffle partitions, no UI or progress bars."""
    from pyspark.sql import SparkSession

    session = (SparkSession.builder.master("local[2]").appName("ppml-tpch-validate")
               .config("spark.driver.memory", "4g")
               .config("spark.sql.shuffle.partitions", "8")
               .config("spark.ui.enabled", "false")
               .config("spark.ui.showConsoleProgress", "false")
               .getOrCreate())
    session.sparkContext.setLogLevel("ERROR")
    return session


def main(argv: Sequence[str] | None = None) -> int:
    """Print one line per query and a total; exit 0 only if every query matches the answers."""
    parser = argparse.ArgumentParser(prog="python -m ppml.workloads.tpch.validate", description=__doc__)
    parser.add_argument("scale_dir", help="directory with <table>.parquet at scale factor 1")
    parser.add_argument("engine", choices=ENGINES)
    parser.add_argument("queries", nargs="?", default="1-22", help="e.g. 1-22, 1,3,5-7 or 6 (default 1-22)")
    args = parser.parse_args(argv)
    results = validate_plain(args.scale_dir, args.engine, parse_queries(args.queries))
    for result in results:
        print(result)
    passed = sum(result.ok for result in results)
    total = sum(result.seconds or 0.0 for result in results)
    print(f"{args.engine}: {passed}/{len(results)} match the SF1 answers; {total:.2f} s in queries")
    return 0 if passed == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
