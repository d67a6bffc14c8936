"""``ppml keys``: create, list, rotate and disable primary keys; rewrap file headers after rotation."""

from __future__ import annotations

import click
from rich.table import Table

from ppml import files
from ppml.cli._common import console, keystore_options, out
from ppml.kms import KeyInfo, KeyRing


@click.group()
def keys() -> None:
    """Manage primary keys (key-encryption keys) in a KMS."""


def _describe(info: KeyInfo) -> str:
    states = ", ".join(f"v{v.version}{'' if v.enabled else ' (disabled)'}" for v in info.versions)
    return f"{info.uri}: primary version {info.primary_version}; versions {states}"


@keys.command()
@click.argument("uri")
@keystore_options
def create(uri: str, keyring: KeyRing) -> None:
    """Create a primary key. URI is scheme:name, e.g. local:sales.

    \b
    Example:
      PPML_KEYSTORE_PASSPHRASE_FILE=pass.txt ppml keys create local:sales
    """
    backend, name = keyring.resolve(uri)
    console.print(f"created {_describe(backend.create_key(name))}")


@keys.command("list")
@click.option("--kms", "scheme", default="local", show_default=True, help="Which KMS backend to list.")
@keystore_options
def list_keys(scheme: str, keyring: KeyRing) -> None:
    """List primary keys and their versions (never key material)."""
    table = Table("key", "primary version", "versions", "created")
    for info in keyring.backend(scheme).list_keys():
        versions = " ".join(f"v{v.version}{'' if v.enabled else '(disabled)'}" for v in info.versions)
        table.add_row(info.uri, str(info.primary_version), versions, info.versions[0].created)
    out.print(table)


@keys.command()
@click.argument("uri")
@keystore_options
def rotate(uri: str, keyring: KeyRing) -> None:
    """Add a new version of a primary key; new data keys are wrapped by it.

    Existing files keep working; run `ppml keys rewrap` to move them to the new version, then
    `ppml keys disable --version N` to retire the old one.
    """
    backend, name = keyring.resolve(uri)
    console.print(f"rotated {_describe(backend.rotate_key(name))}")


@keys.command()
@click.argument("uri")
@click.option("--version", type=int, default=None, help="Disable only this version (default: all).")
@keystore_options
def disable(uri: str, version: int | None, keyring: KeyRing) -> None:
    """Disable a primary key or one of its versions: it no longer wraps or unwraps."""
    backend, name = keyring.resolve(uri)
    console.print(f"disabled {_describe(backend.disable_key(name, version))}")


@keys.command()
@click.argument("paths", nargs=-1, required=True)
@click.option("--to-key", "to_key", default=None, help="Re-wrap under this key URI instead of the file's own.")
@keystore_options
def rewrap(paths: tuple[str, ...], to_key: str | None, keyring: KeyRing) -> None:
    """Re-wrap the data keys in .ppml file headers under the current key version, without
    re-encrypting the data. PATHS may be files or directories.

    \b
    Example:
      ppml keys rotate local:sales && ppml keys rewrap data-encrypted/
    """
    targets = []
    for path in paths:
        if files.is_directory(path):
            targets += [source for source, _ in files.tree_plan(path, path, encrypting=False)]
        else:
            targets.append(path)
    for target in targets:
        old, new = files.rewrap_file(target, keyring=keyring, to_key_uri=to_key)
        console.print(f"rewrapped {target}: {old} -> {new}")
