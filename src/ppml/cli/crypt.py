"""``ppml encrypt``, ``ppml decrypt`` and ``ppml inspect``."""

from __future__ import annotations

import json
from dataclasses import asdict

import click
from rich.table import Table

from ppml import files
from ppml.cli._common import console, keystore_options, out, progress_bar
from ppml.fileformat import DEFAULT_SEGMENT_SIZE
from ppml.kms import KeyRing


@click.command()
@click.argument("src")
@click.argument("dst")
@click.option("--key", "key_uri", envvar="PPML_KEY", show_envvar=True, required=True,
              help="Primary key URI that wraps the data key, e.g. local:sales.")
@click.option("--force", is_flag=True, help="Overwrite DST if it exists.")
@click.option("--segment-size", type=int, default=DEFAULT_SEGMENT_SIZE, show_default=True,
              help="Ciphertext segment size in bytes (4 KiB to 64 MiB).")
@keystore_options
def encrypt(src: str, dst: str, key_uri: str, force: bool, segment_size: int, keyring: KeyRing) -> None:
    """Encrypt a file, or every file under a directory, into .ppml containers.

    \b
    Examples:
      ppml encrypt people.csv people.csv.ppml --key local:sales
      ppml encrypt data/ data-encrypted/ --key local:sales
    """
    if files.is_directory(src):
        sources = [s for s, _ in files.tree_plan(src, dst, encrypting=True)]
        with progress_bar("encrypting", files.total_size(sources)) as advance:
            count = files.encrypt_tree(src, dst, key_uri, keyring=keyring, overwrite=force,
                                       segment_size=segment_size, progress=advance)
        console.print(f"encrypted {count} files from {src} into {dst} with {key_uri}")
        return
    with progress_bar("encrypting", files.total_size([src]) if _exists(src) else 0) as advance:
        files.encrypt_file(src, dst, key_uri, keyring=keyring, overwrite=force, segment_size=segment_size,
                           progress=advance)
    console.print(f"encrypted {src} -> {dst} with {key_uri}")


@click.command()
@click.argument("src")
@click.argument("dst")
@click.option("--force", is_flag=True, help="Overwrite DST if it exists.")
@keystore_options
def decrypt(src: str, dst: str, force: bool, keyring: KeyRing) -> None:
    """Decrypt and authenticate a .ppml file, or every .ppml file under a directory.

    The key is found from the file's own header. Any tampering fails the whole command, and no
    output is left behind.

    \b
    Examples:
      ppml decrypt people.csv.ppml people.csv
      ppml decrypt data-encrypted/ data/
    """
    if files.is_directory(src):
        sources = [s for s, _ in files.tree_plan(src, dst, encrypting=False)]
        with progress_bar("decrypting", files.total_size(sources)) as advance:
            count = files.decrypt_tree(src, dst, keyring=keyring, overwrite=force, progress=advance)
        console.print(f"decrypted {count} files from {src} into {dst}")
        return
    with progress_bar("decrypting", files.total_size([src]) if _exists(src) else 0) as advance:
        files.decrypt_file(src, dst, keyring=keyring, overwrite=force, progress=advance)
    console.print(f"decrypted {src} -> {dst}")


@click.command()
@click.argument("src")
@click.option("--json", "as_json", is_flag=True, help="Print the header as JSON.")
def inspect(src: str, as_json: bool) -> None:
    """Show a .ppml file's header: key reference, algorithm, sizes. Needs no key; shows no secret.

    \b
    Example:
      ppml inspect people.csv.ppml
    """
    info = files.inspect_file(src)
    if as_json:
        out.print_json(json.dumps(asdict(info)))
        return
    table = Table(title=src, show_header=False)
    for field, value in asdict(info).items():
        if field != "url":
            table.add_row(field.replace("_", " "), json.dumps(value) if field == "metadata" else str(value))
    out.print(table)


def _exists(url: str) -> bool:
    import fsspec

    fs, path = fsspec.core.url_to_fs(url)
    return bool(fs.exists(path))
