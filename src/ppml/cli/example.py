"""``ppml example``: small end-to-end runs that show the product working."""

from __future__ import annotations

import hashlib
import time

import click

from ppml import files
from ppml.cli._common import out
from ppml.data.modes import Mode
from ppml.engines.registry import ENGINES, open_engine
from ppml.workloads.people import people_csv
from ppml.workloads.simple_query import prepare_people, run_simple_query
from ppml.workloads.workspace import Workspace

MODES = [mode.value for mode in Mode]


@click.group()
def example() -> None:
    """Runnable examples."""


@example.command()
@click.option("--rows", type=int, default=200_000, show_default=True, help="Rows of people.csv to generate.")
@click.option("--workdir", type=click.Path(file_okay=False), default=None,
              help="Where to put the keystore and files [default: a new temporary directory].")
def roundtrip(rows: int, workdir: str | None) -> None:
    """Create a key, encrypt a sample dataset, inspect it, decrypt it, and verify the result."""
    work = Workspace.create(workdir)
    keyring = work.keyring
    out.print(f"[bold]ppml round trip[/] in {work.root}")
    key_uri = work.ensure_key("example")
    out.print(f"  1. primary key {key_uri} in {work.keystore} (Argon2id-sealed)")

    plain, developers = people_csv(rows)
    source, encrypted, decrypted = (work.root / n for n in ("people.csv", "people.csv.ppml", "people.decrypted.csv"))
    source.write_bytes(plain)
    out.print(f"  2. generated {source.name}: {rows:,} rows, {len(plain) / 1e6:.1f} MB, "
              f"{developers:,} Developers aged 20-40")

    start = time.perf_counter()
    header = files.encrypt_file(str(source), str(encrypted), key_uri, keyring=keyring, overwrite=True)
    out.print(f"  3. encrypted -> {encrypted.name} in {time.perf_counter() - start:.3f} s "
              f"({encrypted.stat().st_size:,} bytes, data key wrapped by {header.key_uri})")

    info = files.inspect_file(str(encrypted))
    out.print(f"  4. inspect: {info.suite}, {info.segments} segment(s), plaintext {info.plaintext_size:,} bytes")

    start = time.perf_counter()
    files.decrypt_file(str(encrypted), str(decrypted), keyring=keyring, overwrite=True)
    out.print(f"  5. decrypted -> {decrypted.name} in {time.perf_counter() - start:.3f} s")
    if hashlib.sha256(decrypted.read_bytes()).digest() != hashlib.sha256(plain).digest():
        raise click.ClickException("the decrypted file differs from the original")
    out.print("  6. [bold green]verified[/]: the decrypted file is identical to the original (SHA-256)")
    _hint(work, str(encrypted))


@example.command("simple-query")
@click.option("--engine", type=click.Choice(ENGINES), default="duckdb", show_default=True)
@click.option("--rows", type=int, default=100_000, show_default=True, help="Rows of people.csv to generate.")
@click.option("--input-mode", type=click.Choice(MODES, case_sensitive=False), default="ppml", show_default=True)
@click.option("--output-mode", type=click.Choice(MODES, case_sensitive=False), default="ppml", show_default=True)
@click.option("--bigdl-key-file", type=click.Path(dir_okay=False), default=None,
              help="BigDL plaintext primary key file, for the aes/cbc/pkcs5padding mode.")
@click.option("--workdir", type=click.Path(file_okay=False), default=None,
              help="Where to put the keystore and datasets [default: a new temporary directory].")
def simple_query(engine: str, rows: int, input_mode: str, output_mode: str, bigdl_key_file: str | None,
                 workdir: str | None) -> None:
    """BigDL PPML's simple query on encrypted people.csv: count names, show age + 1, count the
    Developers aged 20-40, and write them encrypted.

    \b
    Examples:
      ppml example simple-query
      ppml example simple-query --engine spark --input-mode plain_text --output-mode ppml
    """
    work = Workspace.create(workdir)
    key_uri = work.ensure_key("people")
    options = {"bigdl_key_file": bigdl_key_file, "insecure_bigdl_format": True} if bigdl_key_file else None
    input_url, output_url = str(work.root / "people"), str(work.root / "developers")
    expected = prepare_people(input_url, work.keyring, rows=rows, mode=input_mode, key_uri=key_uri, options=options)
    out.print(f"[bold]simple query[/] on {engine}: {rows:,} people ({input_mode}) in {input_url}")
    started = time.perf_counter()
    query_engine = open_engine(engine, work.keyring)
    try:
        result = run_simple_query(query_engine, input_url, output_url, output_mode=output_mode, key_uri=key_uri,
                                  expected_developers=expected, options=options)
    finally:
        query_engine.close()
    out.print(f"  names: {result.names:,}")
    out.print("  age + 1 (first rows): " + ", ".join(
        f"{row['name']} {row['age_plus_1']}" for row in result.age_plus_one.slice(0, 5).to_pylist()))
    out.print(f"  Developers aged 20-40: {result.developers:,} (expected {expected:,})")
    out.print(f"  written ({output_mode}) to {output_url} in {time.perf_counter() - started:.1f} s")
    if result.names != rows or result.developers != expected:
        raise click.ClickException("the simple query gave a wrong answer")
    out.print("  [bold green]verified[/]")
    _hint(work, output_url)


def _hint(work: Workspace, path: str) -> None:
    out.print(f"\nTry: PPML_KEYSTORE={work.keystore} PPML_KEYSTORE_PASSPHRASE_FILE={work.passphrase_file} "
              f"ppml inspect ...  (files under {path})", soft_wrap=True)
