"""Blob storage as ppml uses it: Azure Blob Storage and ADLS Gen2 through adlfs (``abfs://``, ``abfss://``, ``az://``).

Blob storage has no rename: adlfs "moves" a blob by a server-side copy (which Azure may finish
asynchronously) and a delete. So ppml never moves anything there. What it relies on instead is that one
blob appears whole or not at all (its block list is committed in one request):

* an output is written in place and committed when it completes; a write that fails commits nothing,
  and the service discards its staged blocks (``atomic_output``);
* dataset parts are written in place under names unique to their write, and join the dataset only when
  the manifest, one blob, is replaced: that replacement is the commit (``ppml.data.dataset``);
* a tree of files (``encrypt_tree``) is written file by file: each file is whole, the tree is not, and a
  failed run deletes what it wrote (``atomic_tree``).

Reads of a few segments of a large file use exact ranged GETs (``open_ranged``, ``read_range``), not
adlfs' 50 MiB read-ahead. Credentials come from the environment (adlfs reads ``AZURE_STORAGE_*``) or
the Azure identity chain, never from ppml options; ``storage_errors`` re-raises storage failures as ppml
errors that name the URL, with SAS signatures and account keys redacted.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, BinaryIO
from urllib.parse import unquote, urlsplit

import fsspec
from fsspec.implementations.local import LocalFileSystem

from ppml import _atomic
from ppml.errors import ConfigError, InputError, PPMLError

BLOB_PROTOCOLS = ("abfs", "abfss", "az")
RANGE_BLOCK = 64 * 1024  # read-ahead of ranged handles: covers a container header in one GET
_SECRETS = re.compile(r"(?i)\b(sig|AccountKey|SharedAccessSignature|client_secret)=([^&;\s'\"]+)")
_CREDENTIALS_HINT = ("set AZURE_STORAGE_CONNECTION_STRING, or AZURE_STORAGE_ACCOUNT_NAME with "
                     "AZURE_STORAGE_ACCOUNT_KEY or AZURE_STORAGE_SAS_TOKEN, or give this identity a Storage Blob "
                     "Data role (DefaultAzureCredential: managed identity, AZURE_CLIENT_ID, az login)")
_created: set[tuple[int, str]] = set()  # (filesystem id, container) already checked by this process


def redact(text: str) -> str:
    """``text`` with SAS signatures (``sig=``), account keys and whole SAS tokens replaced by ``REDACTED``."""
    return _SECRETS.sub(lambda m: f"{m.group(1)}=REDACTED", text)


def is_blob_url(url: str) -> bool:
    """Whether ``url`` names blob storage (decided from the scheme alone, without connecting)."""
    return fsspec.core.split_protocol(url)[0] in BLOB_PROTOCOLS


def is_blob_fs(fs: fsspec.AbstractFileSystem) -> bool:
    """Whether ``fs`` is a blob store: no rename, one blob committed at once."""
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)
    return any(p in BLOB_PROTOCOLS for p in protocols)


@contextmanager
def storage_errors(url: str) -> Iterator[None]:
    """Re-raise the storage service's errors as ppml errors naming ``url`` (redacted), never echoing secrets."""
    try:
        yield
    except PPMLError:
        raise
    except Exception as error:  # noqa: BLE001 - translated below or re-raised unchanged
        translated = _translate(error, redact(url))
        if translated is None:
            raise
        raise translated from None  # the SDK's message may quote request signatures: do not chain it


def _translate(error: BaseException, url: str) -> PPMLError | None:
    from azure.core.exceptions import AzureError, ClientAuthenticationError, ResourceNotFoundError

    if isinstance(error, OSError):  # FileNotFoundError, FileExistsError: callers say what they mean
        return None
    cause = error if isinstance(error, AzureError) else error.__cause__
    if isinstance(error, ValueError) and str(error).startswith("unable to connect to account"):
        return ConfigError(f"{url}: no Azure storage credentials: {_CREDENTIALS_HINT}")
    if not isinstance(cause, AzureError):
        return None
    status = getattr(cause, "status_code", None)
    code = getattr(cause, "error_code", None) or type(cause).__name__
    code = getattr(code, "value", code)  # StorageErrorCode.AUTHORIZATION_FAILURE -> AuthorizationFailure
    where = _request_path(cause)
    detail = f"HTTP {status} {code}" if status else str(code)
    detail += f" on {where}" if where else ""
    if isinstance(cause, ClientAuthenticationError) or status in (401, 403):
        return ConfigError(f"{url}: the storage service refused access ({detail}); check the credentials: "
                           f"{_CREDENTIALS_HINT}")
    if isinstance(cause, ResourceNotFoundError) or status == 404:
        return InputError(f"{url}: not found in storage ({detail})")
    return InputError(f"{url}: storage request failed ({detail})")


def _request_path(error: Any) -> str:  # noqa: ANN401 - an AzureError
    """The path of the request that failed, without its query (which may hold a SAS)."""
    response = getattr(error, "response", None)
    request = getattr(response, "request", None)
    url = getattr(request, "url", None)
    return unquote(urlsplit(str(url)).path) if url else ""


def fresh_fs(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """``url_to_fs`` without stale listings: fsspec caches blob listings per process, but other processes
    (Spark executors, other writers) change the store, so each dataset operation starts from a fresh view."""
    fs, path = fsspec.core.url_to_fs(url)
    if is_blob_fs(fs):
        fs.invalidate_cache()
    return fs, path


def atomic_output(url: str, *, overwrite: bool = False) -> Any:  # noqa: ANN401 - a context manager
    """A writable file that becomes ``url`` only if the block completes: on blob storage, one blob committed
    in place at the end (never a copy); elsewhere, ``ppml._atomic.atomic_output`` (temporary name, rename)."""
    if is_blob_url(url):
        return _blob_output(url, overwrite)
    return _atomic.atomic_output(url, overwrite=overwrite)


@contextmanager
def _blob_output(url: str, overwrite: bool) -> Iterator[BinaryIO]:
    with storage_errors(url):
        fs, path = fresh_fs(url)
        if not overwrite and fs.exists(path):
            raise InputError(f"{redact(url)}: output exists; pass --force to overwrite it")
        ensure_container(fs, path)
        # "xb" commits with If-None-Match: *, so a blob that appeared meanwhile is never clobbered
        handle = fs.open(path, "wb" if overwrite else "xb")
        try:
            yield handle
        except BaseException:
            handle.closed = True  # abandon: the staged blocks are never committed, so nothing appears
            raise
        try:
            handle.close()
        except FileExistsError:
            raise InputError(f"{redact(url)}: output exists; pass --force to overwrite it") from None


def ensure_container(fs: fsspec.AbstractFileSystem, path: str) -> None:
    """Create the container of ``path`` if it is missing (the blob analogue of ``mkdir -p``), once per process."""
    container = path.strip("/").split("/", 1)[0]
    if (id(fs), container) in _created:
        return
    with warnings.catch_warnings():
        # a container SAS may not read container properties: adlfs then warns and assumes it exists, as do we
        warnings.filterwarnings("ignore", "Failed to fetch container properties", UserWarning)
        exists = fs.exists(container)
    if not exists:
        fs.mkdir(container)
    _created.add((id(fs), container))


def atomic_tree(url: str, *, overwrite: bool = False) -> Any:  # noqa: ANN401 - a context manager
    """A directory URL to fill with files: elsewhere staged and renamed into place as a whole
    (``ppml._atomic.atomic_directory``); on blob storage, which cannot rename a directory, filled in place,
    each file whole, and deleted again if the block fails."""
    if is_blob_url(url):
        return _blob_tree(url, overwrite)
    return _atomic.atomic_directory(url, overwrite=overwrite)


@contextmanager
def _blob_tree(url: str, overwrite: bool) -> Iterator[str]:
    with storage_errors(url):
        fs, path = fresh_fs(url)
        path = path.rstrip("/")
        if fs.exists(path):
            if not overwrite:
                raise InputError(f"{redact(url)}: output exists; pass --force to overwrite it")
            fs.rm(path, recursive=True)
        try:
            yield url.rstrip("/")
        except BaseException:
            if fs.exists(path):
                fs.rm(path, recursive=True)
            raise


def open_ranged(url: str) -> Any:  # noqa: ANN401 - an fsspec file
    """Open ``url`` for random access: on blob storage each read is one ranged GET of about the bytes it
    needs (64 KiB read-ahead), instead of adlfs' default 50 MiB blocks. For splits, row groups, headers."""
    return open_ranged_on(*fsspec.core.url_to_fs(url))


def open_ranged_on(fs: fsspec.AbstractFileSystem, path: str) -> Any:  # noqa: ANN401 - an fsspec file
    """``open_ranged`` for a path on a filesystem already resolved."""
    if is_blob_fs(fs):
        return fs.open(path, "rb", block_size=RANGE_BLOCK, cache_type="readahead")
    return fs.open(path, "rb")


def read_range(fs: fsspec.AbstractFileSystem, path: str, start: int, size: int) -> bytes:
    """Bytes ``[start, start + size)`` of a remote file in one positionless ranged GET (safe from any thread)."""
    if isinstance(fs, LocalFileSystem):
        with fs.open(path, "rb") as handle:
            handle.seek(start)
            return bytes(handle.read(size))
    return bytes(fs.cat_file(path, start=start, end=start + size))


__all__ = ["BLOB_PROTOCOLS", "atomic_output", "atomic_tree", "ensure_container", "fresh_fs", "is_blob_fs",
           "is_blob_url", "open_ranged", "open_ranged_on", "read_range", "redact", "storage_errors"]
