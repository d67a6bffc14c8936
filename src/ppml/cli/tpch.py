"""``ppml tpch``: generate, encrypt, run and check the 22 TPC-H queries on encrypted data."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import click
from rich.table import Table

from ppml.cli._common import console, keystore_options, out
from ppml.data.modes import Mode
from ppml.data.objectstore import fresh_fs, is_blob_url, redact, storage_errors
from ppml.engines.registry import ENGINES, open_engine
from ppml.kms import KeyRing
from ppml.workloads.tpch.answers import check_answer
from ppml.workloads.tpch.datagen import generate
from ppml.workloads.tpch.pipeline import (
    QueryRun,
    encrypt_tables,
    geometric_mean,
    join_url,
    register_encrypted,
    register_plain,
    run_queries,
    write_results,
    write_timings,
)
from ppml.workloads.tpch.queries import parse_queries

MODES = [mode.value for mode in Mode]


@click.group()
def tpch() -> None:
    """TPC-H on encrypted data."""


@tpch.command()
@click.option("--scale", type=float, default=0.1, show_default=True, help="Scale factor (1 = 1 GB).")
@click.option("--output", type=click.Path(file_okay=False), required=True,
              help="Local directory for <table>.parquet.")
@click.option("--force", is_flag=True, help="Replace an existing output directory.")
def gen(scale: float, output: str, force: bool) -> None:
    """Generate the 8 TPC-H tables as Parquet with tpchgen-cli (the same data as dbgen), locally.

    \b
    Example:
      ppml tpch gen --scale 1 --output tpch-sf1
    """
    if is_blob_url(output):  # plaintext never goes to blob storage: only ppml's encrypted containers do
        raise click.UsageError(f"{redact(output)}: tpch gen writes plaintext tables to a local directory only; "
                               f"generate locally, then `ppml tpch encrypt DIR {redact(output)}` writes them "
                               "encrypted to blob storage")
    generate(output, scale, overwrite=force, progress=lambda table, done, total: console.print(
        f"  {table} ({done}/{total})"))
    console.print(f"generated TPC-H SF {scale:g} in {output}")


@tpch.command()
@click.argument("plain_dir")
@click.argument("output")
@click.option("--key", "key_uri", envvar="PPML_KEY", help="Primary key URI, e.g. local:tpch.")
@click.option("--mode", type=click.Choice(MODES, case_sensitive=False), default="ppml", show_default=True)
@click.option("--format", "file_format", type=click.Choice(["parquet", "csv"]), default="parquet", show_default=True)
@keystore_options
def encrypt(plain_dir: str, output: str, key_uri: str | None, mode: str, file_format: str, keyring: KeyRing) -> None:
    """Encrypt generated tables into one dataset per table under OUTPUT (a directory or a blob storage URL).

    \b
    Examples:
      ppml tpch encrypt tpch-sf1 tpch-sf1-enc --key local:tpch
      ppml tpch encrypt tpch-sf1 abfs://analytics/tpch-sf1 --key azurekv:tpch
    """
    if is_blob_url(plain_dir):
        raise click.UsageError(f"{redact(plain_dir)}: the plaintext tables must be a local directory (plaintext "
                               "never goes to blob storage); generate them with ppml tpch gen")
    if not Path(plain_dir).is_dir():
        raise click.UsageError(f"{plain_dir}: no such directory of generated tables (run ppml tpch gen)")
    encrypt_tables(plain_dir, output, keyring, key_uri=key_uri, mode=mode, file_format=file_format,
                   progress=lambda table: console.print(f"  encrypted {table}"))
    console.print(f"encrypted TPC-H tables from {plain_dir} into {output} ({mode}, {file_format})")


@tpch.command()
@click.argument("data")
@click.option("--engine", type=click.Choice(ENGINES), default="duckdb", show_default=True)
@click.option("--queries", default="1-22", show_default=True)
@click.option("--plain", is_flag=True, help="DATA holds plaintext <table>.parquet files (the baseline).")
@click.option("--output", type=click.Path(file_okay=False), default=None,
              help="Write each result as OUTPUT/qNN (a directory or a blob storage URL).")
@click.option("--output-mode", type=click.Choice(MODES, case_sensitive=False), default="ppml", show_default=True)
@click.option("--key", "key_uri", envvar="PPML_KEY", help="Key URI for encrypted results.")
@keystore_options
def run(data: str, engine: str, queries: str, plain: bool, output: str | None, output_mode: str,
        key_uri: str | None, keyring: KeyRing) -> None:
    """Run TPC-H queries on encrypted tables (or plaintext with --plain); print and save the timings.

    DATA and OUTPUT may be blob storage URLs (abfs://, abfss://, az://); --plain reads a local directory.

    \b
    Examples:
      ppml tpch run tpch-sf1-enc --engine spark --output results --key local:tpch
      ppml tpch run abfs://analytics/tpch-sf1 --output abfs://analytics/results --key azurekv:tpch
    """
    runs = _run(data, engine, parse_queries(queries), plain, keyring, progress=lambda r: console.print(
        f"  Q{r.query:02d} {r.seconds:.3f} s, {r.result.num_rows} rows"))
    table = Table("query", "seconds", "rows")
    for r in runs:
        table.add_row(f"Q{r.query:02d}", f"{r.seconds:.3f}", str(r.result.num_rows))
    table.add_row("total", f"{sum(r.seconds for r in runs):.3f}", "")
    out.print(table)
    if output:
        write_results(runs, output, keyring, key_uri=key_uri, mode=output_mode)
        write_timings(join_url(output, "timings.csv"),
                      [{"query": r.query, "seconds": round(r.seconds, 4), "rows": r.result.num_rows} for r in runs])
        console.print(f"results ({output_mode}) and timings.csv in {output}")


@tpch.command()
@click.argument("data")
@click.option("--engine", type=click.Choice(ENGINES), default="duckdb", show_default=True)
@click.option("--queries", default="1-22", show_default=True)
@click.option("--plain", is_flag=True, help="DATA holds plaintext <table>.parquet files.")
@keystore_options
def check(data: str, engine: str, queries: str, plain: bool, keyring: KeyRing) -> None:
    """Run queries on SF 1 data (encrypted by default) and compare with the official TPC-H answers.

    DATA may be a blob storage URL (abfs://, abfss://, az://) unless --plain.

    \b
    Examples:
      ppml tpch check tpch-sf1-enc --engine duckdb
      ppml tpch check abfs://analytics/tpch-sf1
    """
    numbers = parse_queries(queries)
    scale = _scale(data, plain, keyring)
    if abs(scale - 1) > 1e-9:
        raise click.UsageError(f"{redact(data)}: the official answers are for scale factor 1; "
                               f"this data is SF {scale:g}")
    runs = _run(data, engine, numbers, plain, keyring)
    verdicts = [check_answer(r.query, r.result) for r in runs]
    for verdict, r in zip(verdicts, runs, strict=True):
        console.print(f"  {verdict} ({r.seconds:.2f} s)")
    passed = sum(v.ok for v in verdicts)
    out.print(f"{passed}/{len(verdicts)} queries match the official answers on {engine}; "
              f"geomean {geometric_mean([r.seconds for r in runs]):.3f} s")
    if passed != len(verdicts):
        raise click.ClickException("some queries do not match the official answers")


def _run(data: str, engine: str, numbers: list[int], plain: bool, keyring: KeyRing,
         progress: Callable[[QueryRun], None] | None = None) -> list[QueryRun]:
    """Register DATA's tables (plaintext or encrypted) on a fresh engine and run the queries."""
    if plain:
        _require_local(data)
    datasets = None if plain else _datasets(data)  # missing tables fail before an engine starts
    query_engine = open_engine(engine, keyring)
    try:
        if datasets is None:
            register_plain(query_engine, data)
        else:
            register_encrypted(query_engine, datasets)
        return run_queries(query_engine, numbers, progress=progress)
    finally:
        query_engine.close()


def _scale(data: str, plain: bool, keyring: KeyRing) -> float:
    """The scale factor, from the row count of ``orders`` (1,500,000 per unit)."""
    from ppml.data.manifest import read_manifest
    from ppml.workloads.tpch.validate import SF1_ORDERS, scale_of

    if plain:
        _require_local(data)
        return scale_of(data)
    orders = join_url(data, "orders")
    manifest = read_manifest(orders, keyring)
    if manifest is None:
        raise click.UsageError(f"{redact(orders)}: not an encrypted ppml dataset (run ppml tpch encrypt)")
    return manifest.rows / SF1_ORDERS


def _require_local(data: str) -> None:
    """--plain is the engines' own Parquet reader on generated files, which ppml never puts on blob storage."""
    if is_blob_url(data):
        raise click.UsageError(f"{redact(data)}: --plain reads generated plaintext tables from a local directory; "
                               "blob storage holds only encrypted tables (ppml tpch encrypt DIR URL)")


def _datasets(data: str) -> dict[str, str]:
    """``DATA/<table>`` for the 8 tables, local or on blob storage; a usage error names any that are missing."""
    from ppml.workloads.tpch.datagen import TABLES

    with storage_errors(data):
        fs, root = fresh_fs(data)
        try:
            present = {entry.rstrip("/").rsplit("/", 1)[-1] for entry in fs.ls(root.rstrip("/"), detail=False)}
        except FileNotFoundError:  # no such directory, prefix or container: every table is missing
            present = set()
    missing = [t for t in TABLES if t not in present]
    if missing:
        raise click.UsageError(f"{redact(data)}: missing encrypted tables: {', '.join(missing)} "
                               "(run ppml tpch encrypt)")
    return {t: join_url(data, t) for t in TABLES}
