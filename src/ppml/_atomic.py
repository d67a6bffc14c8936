"""Outputs that appear whole or not at all: write to a hidden temporary name, then rename.

A crash or an error leaves no file under the final name, only a ``.*.ppml-partial`` file that the
next run ignores (and that the failing run removes when it can).
"""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import fsspec
from fsspec.implementations.local import LocalFileSystem

from ppml.errors import InputError

PARTIAL_MARKER = ".ppml-partial"


def atomic_write_bytes(path: Path, data: bytes, *, mode: int = 0o600) -> None:
    """Durably replace a local file with ``data`` (temporary file, fsync, rename, fsync directory)."""
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=PARTIAL_MARKER, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_output(url: str, *, overwrite: bool = False) -> Iterator[BinaryIO]:
    """Yield a writable file that becomes ``url`` only if the block completes without an exception."""
    fs, path = fsspec.core.url_to_fs(url)
    if not overwrite and fs.exists(path):
        raise InputError(f"{url}: output exists; pass --force to overwrite it")
    if fs.isdir(path):
        raise InputError(f"{url}: output is a directory")
    parent = fs._parent(path)
    fs.makedirs(parent, exist_ok=True)
    temp = f"{parent}/.{path.rsplit('/', 1)[-1]}.{secrets.token_hex(4)}{PARTIAL_MARKER}"
    try:
        with fs.open(temp, "wb") as handle:
            yield handle
            if isinstance(fs, LocalFileSystem):
                handle.flush()
                os.fsync(handle.fileno())
        _commit(fs, temp, path, url, overwrite)
    except BaseException:
        if fs.exists(temp):
            fs.rm(temp)
        raise


def _commit(fs: fsspec.AbstractFileSystem, temp: str, path: str, url: str, overwrite: bool) -> None:
    if not isinstance(fs, LocalFileSystem):
        fs.mv(temp, path)
        return
    if overwrite:
        os.replace(temp, path)
    else:
        try:
            os.link(temp, path)  # fails if a file appeared meanwhile: never clobber without --force
        except FileExistsError:
            raise InputError(f"{url}: output exists; pass --force to overwrite it") from None
        os.unlink(temp)
    _fsync_directory(Path(path).parent)


@contextmanager
def atomic_directory(url: str, *, overwrite: bool = False) -> Iterator[str]:
    """Yield a staging directory URL that replaces ``url`` as a whole when the block succeeds."""
    fs, path = fsspec.core.url_to_fs(url)
    path = path.rstrip("/")
    if fs.exists(path) and not overwrite:
        raise InputError(f"{url}: output exists; pass --force to overwrite it")
    parent, base = fs._parent(path), path.rsplit("/", 1)[-1]
    fs.makedirs(parent, exist_ok=True)
    staging = f"{parent}/.{base}.{secrets.token_hex(4)}{PARTIAL_MARKER}"
    fs.makedirs(staging, exist_ok=True)
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    try:
        yield staging if isinstance(fs, LocalFileSystem) else f"{protocol}://{staging}"
        if fs.exists(path):
            fs.rm(path, recursive=True)
        if isinstance(fs, LocalFileSystem):
            os.rename(staging, path)
        else:
            fs.mv(staging, path, recursive=True)
    except BaseException:
        if fs.exists(staging):
            fs.rm(staging, recursive=True)
        raise
