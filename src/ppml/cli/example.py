"""``ppml example``: small end-to-end runs that show the product working."""

from __future__ import annotations

import hashlib
import os
import secrets
import tempfile
import time
from pathlib import Path

import click

from ppml import files
from ppml.cli._common import out
from ppml.kms import KeyRing
from ppml.kms.local import LocalKeystore
from ppml.workloads.people import people_csv


@click.group()
def example() -> None:
    """Runnable examples."""


@example.command()
@click.option("--rows", type=int, default=200_000, show_default=True, help="Rows of people.csv to generate.")
@click.option("--workdir", type=click.Path(file_okay=False), default=None,
              help="Where to put the keystore and files [default: a new temporary directory].")
def roundtrip(rows: int, workdir: str | None) -> None:
    """Create a key, encrypt a sample dataset, inspect it, decrypt it, and verify the result."""
    work = Path(workdir or tempfile.mkdtemp(prefix="ppml-example-"))
    work.mkdir(parents=True, exist_ok=True)
    passphrase_file = work / "keystore.pass"
    if not passphrase_file.exists():
        passphrase_file.write_text(secrets.token_urlsafe(24) + "\n")
        os.chmod(passphrase_file, 0o600)
    keystore = LocalKeystore(work / "keystore.json", passphrase=passphrase_file.read_text().strip())
    keyring = KeyRing(backends=(keystore,))  # the example's own keystore, not the user's default one
    out.print(f"[bold]ppml round trip[/] in {work}")

    if "example" not in {info.uri.split(":", 1)[1] for info in keystore.list_keys()}:
        keystore.create_key("example")
    out.print(f"  1. primary key local:example in {keystore.path} (Argon2id-sealed)")

    plain, developers = people_csv(rows)
    source, encrypted, decrypted = work / "people.csv", work / "people.csv.ppml", work / "people.decrypted.csv"
    source.write_bytes(plain)
    out.print(f"  2. generated {source.name}: {rows:,} rows, {len(plain) / 1e6:.1f} MB, "
              f"{developers:,} Developers aged 20-40")

    start = time.perf_counter()
    header = files.encrypt_file(str(source), str(encrypted), "local:example", keyring=keyring, overwrite=True)
    took = time.perf_counter() - start
    out.print(f"  3. encrypted -> {encrypted.name} in {took:.3f} s ({encrypted.stat().st_size:,} bytes, "
              f"{header.segment_size // 1024} KiB segments, data key wrapped by {header.key_uri})")

    info = files.inspect_file(str(encrypted))
    out.print(f"  4. inspect: {info.suite}, {info.segments} segment(s), plaintext {info.plaintext_size:,} bytes")

    start = time.perf_counter()
    files.decrypt_file(str(encrypted), str(decrypted), keyring=keyring, overwrite=True)
    took = time.perf_counter() - start
    same = hashlib.sha256(decrypted.read_bytes()).digest() == hashlib.sha256(plain).digest()
    out.print(f"  5. decrypted -> {decrypted.name} in {took:.3f} s")
    if not same:
        raise click.ClickException("the decrypted file differs from the original")
    out.print("  6. [bold green]verified[/]: the decrypted file is identical to the original (SHA-256)")
    out.print(f"\nTry: PPML_KEYSTORE={keystore.path} PPML_KEYSTORE_PASSPHRASE_FILE={passphrase_file} "
              f"ppml inspect {encrypted}")
