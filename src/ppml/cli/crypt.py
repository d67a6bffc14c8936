"""``ppml encrypt``, ``ppml decrypt`` and ``ppml inspect``."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import click
import fsspec
from rich.table import Table

from ppml import bigdl_files, files
from ppml.bigdl_files import BigDLKeySource
from ppml.cli._common import console, keystore_options, out, progress_bar
from ppml.data.objectstore import storage_errors
from ppml.errors import ConfigError, NotEncrypted
from ppml.fileformat import DEFAULT_SEGMENT_SIZE
from ppml.kms import KeyRing


def bigdl_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--bigdl-key-file`` and ``--bigdl-kms``, combined into a ``bigdl_keys`` argument."""

    @click.option("--bigdl-key-file", type=click.Path(dir_okay=False), default=None,
                  help="BigDL primary key file: a base64 plaintext primary key, or a SimpleKMS key file.")
    @click.option("--bigdl-kms", type=click.Choice(["plaintext", "simple"]), default="plaintext",
                  show_default=True, help="What --bigdl-key-file holds.")
    @functools.wraps(command)
    def wrapper(*args: Any, bigdl_key_file: str | None, bigdl_kms: str, **kwargs: Any) -> Any:
        keys = BigDLKeySource(bigdl_kms, bigdl_key_file) if bigdl_key_file else None  # type: ignore[arg-type]
        return command(*args, bigdl_keys=keys, **kwargs)

    return wrapper


@click.command()
@click.argument("src")
@click.argument("dst")
@click.option("--key", "key_uri", envvar="PPML_KEY", show_envvar=True,
              help="Primary key URI that wraps the data key, e.g. local:sales.")
@click.option("--force", is_flag=True, help="Overwrite DST if it exists.")
@click.option("--segment-size", type=int, default=DEFAULT_SEGMENT_SIZE, show_default=True,
              help="Ciphertext segment size in bytes (4 KiB to 64 MiB).")
@click.option("--insecure-bigdl-format", type=click.Choice(["common", "native"]), default=None,
              help="Write BigDL PPML's unauthenticated AES-CBC format instead (for BigDL clusters only).")
@bigdl_options
@keystore_options
def encrypt(src: str, dst: str, key_uri: str | None, force: bool, segment_size: int,
            insecure_bigdl_format: str | None, bigdl_keys: BigDLKeySource | None, keyring: KeyRing) -> None:
    """Encrypt a file, or every file under a directory, into .ppml containers.

    \b
    Examples:
      ppml encrypt people.csv people.csv.ppml --key local:sales
      ppml encrypt data/ data-encrypted/ --key local:sales
      ppml encrypt data/ bigdl-in/ --insecure-bigdl-format common --bigdl-key-file primary.key
    """
    if insecure_bigdl_format:
        _encrypt_bigdl(src, dst, insecure_bigdl_format, bigdl_keys, force)
        return
    if not key_uri:
        raise click.UsageError("Missing option '--key' (or set PPML_KEY).")
    directory = files.is_directory(src)
    sources = [s for s, _ in files.tree_plan(src, dst, encrypting=True)] if directory else [src]
    with progress_bar("encrypting", files.total_size(sources) if _exists(src) else 0) as advance:
        if directory:
            files.encrypt_tree(src, dst, key_uri, keyring=keyring, overwrite=force, segment_size=segment_size,
                               progress=advance)
        else:
            files.encrypt_file(src, dst, key_uri, keyring=keyring, overwrite=force, segment_size=segment_size,
                               progress=advance)
    console.print(f"encrypted {len(sources)} file(s) from {src} into {dst} with {key_uri}")


def _encrypt_bigdl(src: str, dst: str, variant: str, keys: BigDLKeySource | None, force: bool) -> None:
    if keys is None:
        raise ConfigError("--insecure-bigdl-format needs --bigdl-key-file")
    console.print("[bold yellow]warning:[/] writing BigDL PPML's AES-CBC format: it is not authenticated "
                  "and its keys are weak; use it only to feed an existing BigDL cluster")
    if files.is_directory(src):
        count = bigdl_files.encrypt_bigdl_tree(src, dst, keys, variant=variant,  # type: ignore[arg-type]
                                               insecure_bigdl_format=True, overwrite=force)
    else:
        bigdl_files.encrypt_bigdl_file(src, dst, keys, variant=variant,  # type: ignore[arg-type]
                                       insecure_bigdl_format=True, overwrite=force)
        count = 1
    console.print(f"wrote {count} BigDL {variant} file(s) from {src} into {dst}")


@click.command()
@click.argument("src")
@click.argument("dst")
@click.option("--force", is_flag=True, help="Overwrite DST if it exists.")
@click.option("--bigdl-variant", type=click.Choice(["common", "native"]), default="common", show_default=True,
              help="With --bigdl-key-file: BigDL's encrypter type (spark.bigdl.encryter.type).")
@bigdl_options
@keystore_options
def decrypt(src: str, dst: str, force: bool, bigdl_variant: str, bigdl_keys: BigDLKeySource | None,
            keyring: KeyRing) -> None:
    """Decrypt and authenticate a .ppml file, or every .ppml file under a directory.

    The key is found from the file's own header. Any tampering fails the whole command, and no
    output is left behind. With --bigdl-key-file, reads BigDL PPML's AES-CBC files instead and checks
    their HMAC (which BigDL itself never does).

    \b
    Examples:
      ppml decrypt people.csv.ppml people.csv
      ppml decrypt data-encrypted/ data/
      ppml decrypt bigdl-out/ plain/ --bigdl-key-file primary.key
    """
    if bigdl_keys is not None:
        if files.is_directory(src):
            count = bigdl_files.decrypt_bigdl_tree(src, dst, bigdl_keys, variant=bigdl_variant,  # type: ignore[arg-type]
                                                   overwrite=force)
        else:
            bigdl_files.decrypt_bigdl_file(src, dst, bigdl_keys, variant=bigdl_variant,  # type: ignore[arg-type]
                                           overwrite=force)
            count = 1
        console.print(f"decrypted {count} BigDL file(s) from {src} into {dst}; every HMAC verified")
        return
    directory = files.is_directory(src)
    sources = [s for s, _ in files.tree_plan(src, dst, encrypting=False)] if directory else [src]
    try:
        with progress_bar("decrypting", files.total_size(sources) if _exists(src) else 0) as advance:
            if directory:
                files.decrypt_tree(src, dst, keyring=keyring, overwrite=force, progress=advance)
            else:
                files.decrypt_file(src, dst, keyring=keyring, overwrite=force, progress=advance)
    except NotEncrypted as error:
        if not directory and bigdl_files.looks_like_bigdl_file(src):
            raise NotEncrypted(f"{error}; it looks like a BigDL PPML file: pass --bigdl-key-file") from None
        raise
    console.print(f"decrypted {len(sources)} file(s) from {src} into {dst}")


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
    with storage_errors(url):  # a refused or unreachable store is an error naming the URL, not "missing"
        fs, path = fsspec.core.url_to_fs(url)
        return bool(fs.exists(path))
