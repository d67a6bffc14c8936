"""``ppml demo``: the main job, and what ``make run`` runs."""

from __future__ import annotations

import click
from rich.table import Table

from ppml.cli._common import out
from ppml.engines.registry import ENGINES
from ppml.workloads.demo import STORAGES, run_demo
from ppml.workloads.tpch.pipeline import geometric_mean
from ppml.workloads.tpch.queries import parse_queries


@click.command()
@click.option("--engine", type=click.Choice(ENGINES), default="duckdb", show_default=True)
@click.option("--scale", type=float, default=0.1, show_default=True, help="TPC-H scale factor.")
@click.option("--queries", default="1-22", show_default=True, help="Which queries, e.g. 1-22 or 1,3,6.")
@click.option("--workdir", type=click.Path(file_okay=False), default=None,
              help="Where to keep data, keystore and results [default: a new temporary directory].")
@click.option("--storage", type=click.Choice(STORAGES), default="local", show_default=True,
              help="Where the encrypted tables and results go: the work directory, or Azurite (the Azure Storage "
                   "emulator, started for the run; install it with scripts/ensure-azurite.sh).")
@click.option("--storage-url", default=None, metavar="URL",
              help="Put the encrypted tables and results under URL instead, e.g. abfs://container/prefix; "
                   "credentials come from AZURE_STORAGE_* or the Azure identity chain, never from options.")
def demo(engine: str, scale: float, queries: str, workdir: str | None, storage: str, storage_url: str | None) -> None:
    """TPC-H on encrypted data, end to end, with the key broker in the loop: generate, create a key in the
    broker, encrypt, attest (simulated TEE), run all 22 queries on plaintext and encrypted tables, check the
    answers, write the results encrypted, and print the timings and the broker's audit summary.

    \b
    Examples:
      ppml demo
      ppml demo --engine spark
      ppml demo --scale 1 --workdir ~/ppml-demo     # also checks the official TPC-H answers
      ppml demo --storage azurite --queries 1,6     # tables and results in Azure Blob Storage (emulated)
      ppml demo --storage-url abfs://data/ppml-demo # a real account; AZURE_STORAGE_* in the environment
    """
    out.print(f"[bold]ppml demo[/]: TPC-H SF {scale:g} on {engine}, encrypted vs plaintext")
    report = run_demo(engine=engine, scale=scale, workdir=workdir, queries=parse_queries(queries),
                      say=lambda line: out.print("  " + line, soft_wrap=True), storage=storage,
                      storage_url=storage_url)
    table = Table("query", "plaintext s", "encrypted s", "ratio", "rows", "check")
    for q in report.queries:
        style = "" if q.check.startswith("ok") else "bold red"
        table.add_row(f"Q{q.query:02d}", f"{q.plain_seconds:.3f}", f"{q.encrypted_seconds:.3f}", f"{q.ratio:.2f}",
                      str(q.rows), q.check, style=style)
    plain = sum(q.plain_seconds for q in report.queries)
    encrypted = sum(q.encrypted_seconds for q in report.queries)
    table.add_row("total", f"{plain:.3f}", f"{encrypted:.3f}", f"{encrypted / plain:.2f}", "", "")
    table.add_row("geomean ratio", "", "", f"{geometric_mean([q.ratio for q in report.queries]):.2f}", "", "")
    out.print(table)
    work = report.workspace
    out.print(f"Encrypted tables: {report.storage_root}/tpch-sf{scale:g}/encrypted/<table>; encrypted results: "
              f"{report.storage_root}/results/qNN (CSV in .ppml containers); timings: {report.timings_csv}",
              soft_wrap=True)
    if report.storage == "azurite":
        out.print(f"Azurite has stopped; its blobs stay in {work.root / 'azurite'} (run azurite-blob --location "
                  "there, with AZURE_STORAGE_CONNECTION_STRING, to read them again).", soft_wrap=True)
    kbs = report.broker_dir
    first = min(report.results, default=1)
    first_url = report.results.get(first, f"{report.storage_root}/results/q{first:02d}")
    out.print("Decrypt one with (serve the demo's broker, then ask it as the data owner):\n"
              f"  ppml broker serve --config {kbs / 'broker.json'} &\n"
              f"  PPML_KBS_URL=https://127.0.0.1:8443 PPML_KBS_CA_FILE={kbs / 'tls' / 'ca.pem'} "
              f"PPML_KBS_ADMIN_KEY={kbs / 'admin' / 'admin-key.pem'} \\\n"
              f"    ppml decrypt {first_url} q{first:02d}-plain", soft_wrap=True)
    if report.failures:
        raise click.ClickException(f"{len(report.failures)} of {len(report.queries)} queries gave wrong answers")
