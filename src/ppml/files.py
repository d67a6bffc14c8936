"""Recipes that join the container format to the KMS: encrypt, decrypt, open, inspect and rewrap files.

Every function takes URLs that fsspec understands (local paths, ``abfs://``/``abfss://``/``az://`` for Azure Blob
Storage and ADLS Gen2), writes its output atomically (one blob committed at once on blob storage, see
``ppml.data.objectstore``), and raises a ``PPMLError`` that names the file on any failure.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, BinaryIO

import fsspec

from ppml._secrets import SecretKey
from ppml.data.objectstore import atomic_output, atomic_tree, fresh_fs, open_ranged, redact, storage_errors
from ppml.errors import InputError, KeyProviderError
from ppml.fileformat import (
    DEFAULT_SEGMENT_SIZE,
    SUITE_NAMES,
    DecryptingReader,
    EncryptingWriter,
    Header,
    SegmentLayout,
    decrypt_stream,
    read_header,
)
from ppml.fileformat._streams import AuthenticatedHeader
from ppml.kms import KeyRing

Progress = Callable[[int], None]
_CHUNK = 4 * 1024 * 1024


def key_resolver(keyring: KeyRing, name: str) -> Callable[[Header], SecretKey]:
    """A resolver that unwraps a header's data key with the KMS its key URI names."""

    def resolve(header: Header) -> SecretKey:
        backend, key_name = keyring.resolve(header.key_uri)
        try:
            return backend.unwrap_key(header.wrapped_key, key_name)
        except KeyProviderError as error:
            raise type(error)(f"{name}: {error}") from error

    return resolve


@contextmanager
def _open_input(url: str, *, ranged: bool = False) -> Iterator[BinaryIO]:
    """``ranged``: random access (headers, a few segments) in small ranged reads, not streaming blocks."""
    try:
        with storage_errors(url), (open_ranged(url) if ranged else fsspec.open(url, "rb")) as handle:
            yield handle
    except FileNotFoundError:
        raise InputError(f"{redact(url)}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{redact(url)}: is a directory") from None
    except PermissionError:
        raise InputError(f"{redact(url)}: permission denied") from None


def encrypt_file(src: str, dst: str, key_uri: str, *, keyring: KeyRing, overwrite: bool = False,
                 segment_size: int = DEFAULT_SEGMENT_SIZE, metadata: Mapping[str, Any] | None = None,
                 progress: Progress | None = None) -> Header:
    """Encrypt ``src`` into the container ``dst`` under a fresh data key wrapped by ``key_uri``."""
    meta = {"name": os.path.basename(src.rstrip("/")), **(metadata or {})}
    with _open_input(src) as source:  # a missing input is reported before any key is touched
        backend, key_name = keyring.resolve(key_uri)
        data_key, wrapped = backend.generate_data_key(key_name)
        with atomic_output(dst, overwrite=overwrite) as sink, \
                EncryptingWriter(sink, data_key=data_key, key_uri=backend.key_uri(key_name), wrapped_key=wrapped,
                                 metadata=meta, segment_size=segment_size) as writer:
            _copy(source, writer, progress)
    return writer.header


def decrypt_file(src: str, dst: str, *, keyring: KeyRing, overwrite: bool = False,
                 progress: Progress | None = None) -> Header:
    """Decrypt and authenticate the container ``src`` into ``dst``; nothing is left at ``dst`` on failure."""
    with _open_input(src) as source, atomic_output(dst, overwrite=overwrite) as sink:
        header_holder: list[Header] = []

        def resolve(header: Header) -> SecretKey:
            header_holder.append(header)
            return key_resolver(keyring, src)(header)

        decrypt_stream(source, sink, resolve, name=src, progress=progress)
    return header_holder[0]


@contextmanager
def open_encrypted(url: str, *, keyring: KeyRing) -> Iterator[DecryptingReader]:
    """A seekable plaintext view of an encrypted file that decrypts only the segments it reads."""
    with _open_input(url, ranged=True) as source:
        reader = DecryptingReader(source, key_resolver(keyring, url), name=url)
        with io.BufferedReader(reader, buffer_size=reader.header.segment_size) as buffered:  # type: ignore[arg-type]
            yield buffered  # type: ignore[misc]


@dataclass(frozen=True, slots=True)
class FileInfo:
    """What ``inspect`` shows: the header's public fields and sizes, never a key."""

    url: str
    version: int
    suite: str
    key_uri: str
    wrapped_key_size: int
    segment_size: int
    segments: int
    header_size: int
    ciphertext_size: int
    plaintext_size: int
    metadata: Mapping[str, Any]


def inspect_file(url: str) -> FileInfo:
    """Read a container's header without any key. Sizes come from the header and the file length."""
    with _open_input(url, ranged=True) as source:
        header = read_header(source, url)
        total = source.seek(0, io.SEEK_END)
    layout = SegmentLayout(header.segment_size, total - header.size)
    layout.check(url)
    return FileInfo(url=url, version=header.version, suite=SUITE_NAMES[header.suite], key_uri=header.key_uri,
                    wrapped_key_size=len(header.wrapped_key), segment_size=header.segment_size,
                    segments=layout.segment_count, header_size=header.size, ciphertext_size=total,
                    plaintext_size=layout.plaintext_size, metadata=dict(header.metadata))


def rewrap_file(url: str, *, keyring: KeyRing, to_key_uri: str | None = None,
                progress: Progress | None = None) -> tuple[str, str]:
    """Re-wrap a file's data key under the current version of its key (or under ``to_key_uri``).

    Only the key slot and header MAC change; the encrypted body is copied byte for byte, never
    re-encrypted. The file is replaced atomically. Returns the old and new key URIs.
    """
    with _open_input(url) as source:
        opened = AuthenticatedHeader(source, key_resolver(keyring, url), url)
        backend, key_name = keyring.resolve(to_key_uri or opened.header.key_uri)
        new_uri = backend.key_uri(key_name)
        header_bytes = opened.with_key_slot(new_uri, backend.wrap_key(opened.data_key, key_name))
        with atomic_output(url, overwrite=True) as sink:
            sink.write(header_bytes)
            _copy(source, sink, progress)
    return opened.header.key_uri, new_uri


def _copy(source: BinaryIO, sink: Any, progress: Progress | None) -> None:  # noqa: ANN401 - any writable
    buffer = bytearray(_CHUNK)
    view = memoryview(buffer)
    while True:
        got = source.readinto(view) if hasattr(source, "readinto") else None
        if got is None:
            chunk = source.read(_CHUNK)
            got = len(chunk)
            view[:got] = chunk
        if not got:
            return
        sink.write(view[:got])
        if progress is not None:
            progress(got)


SUFFIX = ".ppml"


def is_directory(url: str) -> bool:
    """Whether ``url`` names an existing directory."""
    with storage_errors(url):
        fs, path = fresh_fs(url)
        return bool(fs.isdir(path))


def tree_plan(src: str, dst: str, *, encrypting: bool) -> list[tuple[str, str]]:
    """Pairs of (input, output) URLs for every file under ``src``, mirrored under ``dst``.

    Encrypting adds ``.ppml``; decrypting takes every ``.ppml`` file and drops the suffix. Hidden
    partial outputs of interrupted runs are ignored.
    """
    with storage_errors(src):
        fs, root = fresh_fs(src)
        root = root.rstrip("/")
        if not fs.exists(root):
            raise InputError(f"{redact(src)}: no such file or directory")
        found = sorted(fs.find(root))
    prefix = src.rstrip("/")
    pairs = []
    for path in found:
        relative = path[len(root) + 1 :]
        if any(part.startswith(".") for part in relative.split("/")):
            continue
        if encrypting:
            target = relative + SUFFIX
        elif relative.endswith(SUFFIX):
            target = relative[: -len(SUFFIX)]
        else:
            continue
        pairs.append((f"{prefix}/{relative}", f"{dst.rstrip('/')}/{target}"))
    if not pairs:
        what = "files" if encrypting else f"{SUFFIX} files"
        raise InputError(f"{redact(src)}: no {what} to process")
    return pairs


def total_size(urls: list[str]) -> int:
    """Sum of the sizes of ``urls``, for progress bars."""
    total = 0
    for url in urls:
        with storage_errors(url):
            fs, path = fsspec.core.url_to_fs(url)
            total += int(fs.size(path) or 0)
    return total


def encrypt_tree(src: str, dst: str, key_uri: str, *, keyring: KeyRing, overwrite: bool = False,
                 segment_size: int = DEFAULT_SEGMENT_SIZE, progress: Progress | None = None) -> int:
    """Encrypt every file under ``src`` into ``dst``, which appears only once all files are done (on blob
    storage, which cannot rename a directory, file by file, each whole; a failed run deletes what it wrote)."""
    tree_plan(src, dst, encrypting=True)  # fail before staging anything
    with atomic_tree(dst, overwrite=overwrite) as staging:
        pairs = tree_plan(src, staging, encrypting=True)
        for source, target in pairs:
            encrypt_file(source, target, key_uri, keyring=keyring, segment_size=segment_size, progress=progress)
    return len(pairs)


def decrypt_tree(src: str, dst: str, *, keyring: KeyRing, overwrite: bool = False,
                 progress: Progress | None = None) -> int:
    """Decrypt every ``.ppml`` file under ``src`` into ``dst``, which appears only if all succeed."""
    tree_plan(src, dst, encrypting=False)
    with atomic_tree(dst, overwrite=overwrite) as staging:
        pairs = tree_plan(src, staging, encrypting=False)
        for source, target in pairs:
            decrypt_file(source, target, keyring=keyring, progress=progress)
    return len(pairs)
