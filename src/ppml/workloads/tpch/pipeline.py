"""TPC-H on encrypted data: encrypt the tables, run the queries on an engine, time them, write results.

The same SQL runs on DuckDB and Spark, over plaintext Parquet (each engine's native reader: the
baseline) or over encrypted datasets. Encrypted tables and results may live on any fsspec URL
(``abfs://container/prefix`` for Azure Blob Storage / ADLS Gen2), so they are joined as URLs, not paths.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ppml.data import write_dataset
from ppml.data.dataset import import_files
from ppml.data.objectstore import atomic_output
from ppml.engines.base import QueryEngine
from ppml.kms import KeyRing
from ppml.workloads.tpch.datagen import TABLES
from ppml.workloads.tpch.queries import query_text

ROWS_PER_PART = 2_000_000  # SF1 lineitem becomes 3 parts; every other table one
ROW_GROUP_SIZE = 250_000  # as the generator's, so both readers split the same way


@dataclass(frozen=True)
class QueryRun:
    """One query's timing and result."""

    query: int
    seconds: float
    result: pa.Table


def join_url(base: str | Path, name: str) -> str:
    """``base/name`` for a local path or a URL (``Path`` would turn ``abfs://c`` into ``abfs:/c``)."""
    return f"{str(base).rstrip('/')}/{name}"


def plain_tables(directory: str | Path) -> dict[str, str]:
    """``<dir>/<table>.parquet`` for the 8 tables, as generated."""
    return {table: str(Path(directory) / f"{table}.parquet") for table in TABLES}


def encrypt_tables(plain_dir: str | Path, out_dir: str | Path, keyring: KeyRing, *, key_uri: str | None,
                   mode: str = "ppml", file_format: str = "parquet",
                   progress: Callable[[str], None] | None = None) -> dict[str, str]:
    """Write every table of ``plain_dir`` as an encrypted dataset ``<out_dir>/<table>``.

    Parquet in the ``.ppml`` container (the default) encrypts the generated files byte for byte, so the
    engines read exactly the Parquet the plaintext baseline reads; other modes re-encode the tables.
    """
    urls = {}
    for table, path in plain_tables(plain_dir).items():
        url = join_url(out_dir, table)
        if file_format == "parquet" and mode in ("ppml", "plain_text"):
            import_files([path], url, keyring, mode=mode, key_uri=key_uri, write_mode="overwrite")
        else:
            write_dataset(pq.read_table(path), url, keyring, file_format=file_format, mode=mode, key_uri=key_uri,
                          write_mode="overwrite", rows_per_part=ROWS_PER_PART,
                          options={"row_group_size": ROW_GROUP_SIZE, "header": True})
        urls[table] = url
        if progress is not None:
            progress(table)
    return urls


def register_encrypted(engine: QueryEngine, datasets: Mapping[str, str]) -> None:
    """Register every encrypted table dataset with ``engine``."""
    for table, url in datasets.items():
        engine.register(table, url)


def register_plain(engine: QueryEngine, plain_dir: str | Path) -> None:
    """Register the plaintext Parquet tables with the engine's native reader."""
    for table, path in plain_tables(plain_dir).items():
        engine.register_plain_parquet(table, [path])


def run_queries(engine: QueryEngine, queries: Sequence[int], progress: Callable[[QueryRun], None] | None = None,
                *, repeat: int = 1) -> list[QueryRun]:
    """Run each query on the registered tables (``repeat`` times, keeping the best time); results are fully
    materialized inside the timing."""
    runs = []
    for n in queries:
        best: QueryRun | None = None
        for _ in range(max(1, repeat)):
            started = time.perf_counter()
            result = engine.query(query_text(n))
            run = QueryRun(n, time.perf_counter() - started, result)
            best = run if best is None or run.seconds < best.seconds else best
        assert best is not None
        runs.append(best)
        if progress is not None:
            progress(best)
    return runs


def write_results(runs: Sequence[QueryRun], out_dir: str | Path, keyring: KeyRing, *, key_uri: str | None,
                  mode: str = "ppml") -> dict[int, str]:
    """Write each query's result as a CSV dataset ``<out_dir>/qNN``, encrypted unless ``mode`` is plain_text."""
    urls = {}
    for run in runs:
        url = join_url(out_dir, f"q{run.query:02d}")
        write_dataset(run.result, url, keyring, file_format="csv", mode=mode, key_uri=key_uri,
                      write_mode="overwrite", options={"header": True})
        urls[run.query] = url
    return urls


def write_timings(path: str | Path, rows: Sequence[Mapping[str, object]]) -> None:
    """A CSV timing report with one row per query (a local path or any fsspec URL), replaced whole: on blob
    storage one blob committed at the end, so a failed run never leaves half a report."""
    if not rows:
        return
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    with atomic_output(str(path), overwrite=True) as sink:
        sink.write(text.getvalue().encode("utf-8"))


def geometric_mean(values: Sequence[float]) -> float:
    """The geometric mean, the usual summary of per-query ratios."""
    import math

    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else float("nan")
