"""``ppml://``: an fsspec filesystem whose files are the decrypted views of ``.ppml`` containers.

Engines read through it with their own native readers (DuckDB's Parquet and CSV readers through
``register_filesystem``; pyarrow, pandas and Polars through fsspec), and decrypt only the segments a
ranged read touches. Three things keep it close to plaintext speed:

* each container is opened once (header, key unwrap, key check, header MAC, final segment) and then
  shared by every handle;
* decrypted segments live in one byte-bounded LRU cache (1 GiB by default) shared by all handles, so
  the Parquet footer or
  a row group that several threads read is decrypted once;
* a read spanning several segments fetches their ciphertext in one ranged read and decrypts the segments
  in parallel threads (AES-GCM releases the GIL).

Paths name plaintext views: ``ppml:///data/t/part-0.parquet`` is the container
``/data/t/part-0.parquet.ppml`` on the inner filesystem (local by default, or any fsspec filesystem), and
``ppml://abfs://c/t/part-0.parquet`` is ``abfs://c/t/part-0.parquet.ppml`` on the filesystem that URL
names (credentials from the environment, as fsspec finds them). Remote ciphertext is fetched in exact
ranged GETs, from any thread. Files without the suffix are passed through unchanged, so a dataset
directory lists naturally.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import fsspec
from fsspec import AbstractFileSystem
from fsspec.implementations.local import LocalFileSystem

from ppml import files
from ppml.data.objectstore import open_ranged_on, read_range, storage_errors
from ppml.errors import TruncatedCiphertext
from ppml.fileformat import SegmentLayout
from ppml.fileformat._streams import AuthenticatedHeader, SeekableView, _decrypt_segment
from ppml.kms import KeyRing

SUFFIX = ".ppml"
def _default_cache_bytes() -> int:
    """1 GiB, or an eighth of physical memory on smaller machines (TEE memory is precious)."""
    try:
        physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        physical = 8 << 30
    return min(1 << 30, physical // 8)


DEFAULT_CACHE_BYTES = _default_cache_bytes()


@dataclass(frozen=True)
class _Container:
    """An authenticated container: shared by every handle on the same inner file version."""

    fs: AbstractFileSystem
    inner_path: str
    name: str  # the container's URL (the inner path on the default inner filesystem)
    opened: AuthenticatedHeader
    layout: SegmentLayout
    body_start: int


class _SegmentCache:
    """A thread-safe LRU of decrypted segments, bounded in bytes."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._size = 0
        self._items: OrderedDict[tuple[str, int], bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, int]) -> bytes | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: tuple[str, int], value: bytes) -> None:
        with self._lock:
            if key in self._items:
                return
            self._items[key] = value
            self._size += len(value)
            while self._size > self._capacity and len(self._items) > 1:
                _, evicted = self._items.popitem(last=False)
                self._size -= len(evicted)


class DecryptedFileSystem(AbstractFileSystem):  # type: ignore[misc]
    """Presents ``.ppml`` containers on an inner filesystem as their plaintext."""

    protocol = ("ppml",)
    root_marker = "/"
    cachable = False  # holds a key ring: never share instances through fsspec's instance cache

    def __init__(self, keyring: KeyRing, fs: AbstractFileSystem | None = None, *,
                 cache_bytes: int = DEFAULT_CACHE_BYTES, threads: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.keyring = keyring
        self.inner = fs or fsspec.filesystem("file")
        self._cache = _SegmentCache(cache_bytes)
        self._containers: dict[tuple[str, int, Any], _Container] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=threads or min(8, os.cpu_count() or 2),
                                        thread_name_prefix="ppml-decrypt")

    @classmethod
    def _strip_protocol(cls, path: str) -> str:  # type: ignore[override]
        path = str(path)
        for prefix in ("ppml://", "ppml::"):
            if path.startswith(prefix):
                path = path[len(prefix) :]
        return path.rstrip("/") or "/"

    # -- names -------------------------------------------------------------------------------------------

    def _resolve(self, path: str) -> tuple[AbstractFileSystem, str]:
        """The filesystem and path behind a plaintext path: a path on the inner filesystem, or a URL
        (``abfs://c/d/x``) on the filesystem it names."""
        path = self._strip_protocol(path)
        if "://" in path:
            return fsspec.core.url_to_fs(path)  # type: ignore[no-any-return]
        return self.inner, path

    def _name(self, fs: AbstractFileSystem, path: str) -> str:
        return path if fs is self.inner else fs.unstrip_protocol(path)

    def _inner_path(self, path: str) -> tuple[AbstractFileSystem, str, bool]:
        """The filesystem and inner path behind a plaintext path, and whether it is a container."""
        fs, path = self._resolve(path)
        if path.endswith(SUFFIX):
            return fs, path, True
        if fs.exists(path + SUFFIX):
            return fs, path + SUFFIX, True
        return fs, path, False

    def _outer_entry(self, fs: AbstractFileSystem, entry: dict[str, Any]) -> dict[str, Any]:
        name = self._name(fs, entry["name"])
        if entry.get("type") == "file" and name.endswith(SUFFIX):
            container = self._container(entry["name"], fs)
            return {**entry, "name": name[: -len(SUFFIX)], "size": container.layout.plaintext_size}
        return {**entry, "name": name}

    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[Any]:
        fs, inner = self._resolve(path)
        with storage_errors(self._name(fs, inner)):
            entries = [self._outer_entry(fs, e) for e in fs.ls(inner, detail=True)]
        return entries if detail else [e["name"] for e in entries]

    def glob(self, path: str, **kwargs: Any) -> Any:  # noqa: ANN401 - as fsspec's
        """DuckDB globs every file path it is given; a path without wildcards needs no listing."""
        if not any(char in path for char in "*?["):
            return [self._strip_protocol(path)] if self.exists(path) else []
        return super().glob(path, **kwargs)

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        fs, inner, is_container = self._inner_path(path)
        entry = fs.info(inner)
        return self._outer_entry(fs, entry) if is_container else entry

    def modified(self, path: str) -> Any:  # noqa: ANN401 - whatever the inner filesystem returns
        fs, inner, _ = self._inner_path(path)
        return fs.modified(inner)

    def created(self, path: str) -> Any:  # noqa: ANN401
        fs, inner, _ = self._inner_path(path)
        return fs.created(inner)

    def exists(self, path: str, **kwargs: Any) -> bool:
        fs, inner, _ = self._inner_path(path)
        return bool(fs.exists(inner))

    # -- containers and segments ---------------------------------------------------------------------------

    def _container(self, inner_path: str, fs: AbstractFileSystem | None = None) -> _Container:
        """Open (or reuse) the authenticated container at ``inner_path`` on ``fs`` (the inner filesystem)."""
        fs = fs or self.inner
        name = self._name(fs, inner_path)
        info = fs.info(inner_path)
        key = (name, int(info["size"]), info.get("mtime") or info.get("LastModified") or info.get("etag"))
        with self._lock:
            if key in self._containers:
                return self._containers[key]
        with open_ranged_on(fs, inner_path) as source:
            opened = AuthenticatedHeader(source, files.key_resolver(self.keyring, name), name)
        layout = SegmentLayout(opened.header.segment_size, int(info["size"]) - opened.header.size)
        layout.check(name)
        container = _Container(fs, inner_path, name, opened, layout, opened.header.size)
        with _RangeReader(fs, inner_path) as source:
            self.segments(container, source, layout.segment_count - 1, layout.segment_count - 1)
        with self._lock:
            self._containers[key] = container
        return container

    def segments(self, container: _Container, source: _RangeReader, first: int, last: int) -> list[bytes]:
        """Plaintext of segments ``first..last``: cached ones from the cache, the rest fetched in one
        ranged read and decrypted in parallel."""
        ident = f"{container.name}#{container.opened.header.file_id.hex()}"
        found = {i: self._cache.get((ident, i)) for i in range(first, last + 1)}
        missing = [i for i, value in found.items() if value is None]
        if missing:
            lo, hi = container.layout.ciphertext_range(missing[0])[0], container.layout.ciphertext_range(missing[-1])[1]
            data = source.read_range(container.body_start + lo, hi - lo)
            if len(data) != hi - lo:
                raise TruncatedCiphertext(f"{container.name}: file shrank while it was being read")
            jobs = {i: self._pool.submit(self._decrypt, container, data, lo, i) for i in missing}
            for i, job in jobs.items():
                found[i] = job.result()
                self._cache.put((ident, i), found[i])  # type: ignore[arg-type]
        return [found[i] for i in range(first, last + 1)]  # type: ignore[misc]

    @staticmethod
    def _decrypt(container: _Container, data: bytes, base: int, index: int) -> bytes:
        start, end = container.layout.ciphertext_range(index)
        view = memoryview(data)[start - base : end - base]
        out = bytearray(len(view))
        final = index == container.layout.segment_count - 1
        size = _decrypt_segment(container.opened, index, view, final, out, container.layout.segment_count)
        del out[size:]  # shrinking in place does not copy
        return out  # type: ignore[return-value]  # treated as immutable from here on

    # -- files ---------------------------------------------------------------------------------------------

    def _open(self, path: str, mode: str = "rb", **kwargs: Any) -> Any:  # noqa: ANN401
        if "r" not in mode:
            raise NotImplementedError("ppml:// is read-only; write datasets with ppml.data.write_dataset")
        fs, inner, is_container = self._inner_path(path)
        with storage_errors(self._name(fs, inner)):
            if not is_container:
                return PlainFile(fs, inner)
            return DecryptedFile(self, self._container(inner, fs))

    def __del__(self) -> None:
        self._pool.shutdown(wait=False)


class _RangeReader:
    """Positionless ranged reads of an inner file, safe from many threads at once (pread locally, one
    ranged GET per read on remote stores)."""

    def __init__(self, fs: AbstractFileSystem, path: str) -> None:
        self._fd: int | None = None
        self._fs, self._path = fs, path
        if isinstance(fs, LocalFileSystem):
            self._fd = os.open(fs._strip_protocol(path), os.O_RDONLY)

    def read_range(self, start: int, size: int) -> bytes:
        if self._fd is not None:
            chunks, done = [], 0
            while done < size:
                chunk = os.pread(self._fd, size - done, start + done)
                if not chunk:
                    break
                chunks.append(chunk)
                done += len(chunk)
            return b"".join(chunks)
        with storage_errors(self._fs.unstrip_protocol(self._path)):
            return read_range(self._fs, self._path, start, size)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> _RangeReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _PositionedFile(SeekableView):
    """A read-only file whose position is kept per thread.

    DuckDB shares one handle among its I/O threads and calls ``seek`` then ``read`` as two steps, so a
    shared position would let threads move each other's reads. Subclasses implement ``_read_at``.
    """

    def __init__(self, size: int, name: str) -> None:
        super().__init__()
        self._local = threading.local()
        self.size = size
        self.name = name

    @property
    def _position(self) -> int:
        return getattr(self._local, "position", 0)

    @_position.setter
    def _position(self, value: int) -> None:
        self._local.position = value

    def read(self, size: int | None = -1) -> bytes:
        position = self._position
        end = self.size if size is None or size < 0 else min(self.size, position + size)
        if end <= position:
            return b""
        data = self._read_at(position, end)
        self._position = end
        return data

    def readinto(self, buffer: Any) -> int:  # noqa: ANN401 - any writable buffer
        target = memoryview(buffer).cast("B")
        data = self.read(len(target))
        target[: len(data)] = data
        return len(data)

    def readall(self) -> bytes:
        return self.read(-1)

    def _read_at(self, start: int, end: int) -> bytes:
        raise NotImplementedError


class PlainFile(_PositionedFile):
    """A file that is not a container, read through the same thread-safe handle."""

    def __init__(self, fs: AbstractFileSystem, path: str) -> None:
        super().__init__(int(fs.info(path)["size"]), path)
        self._source = _RangeReader(fs, path)

    def _read_at(self, start: int, end: int) -> bytes:
        return self._source.read_range(start, end - start)

    def close(self) -> None:
        if not self.closed:
            self._source.close()
        super().close()


class DecryptedFile(_PositionedFile):
    """A plaintext handle over one container; segments come from the filesystem's shared cache."""

    def __init__(self, fs: DecryptedFileSystem, container: _Container) -> None:
        super().__init__(container.layout.plaintext_size, container.name[: -len(SUFFIX)])
        self._fs = fs
        self._container = container
        self._source = _RangeReader(container.fs, container.inner_path)

    def _read_at(self, position: int, end: int) -> bytes:
        layout = self._container.layout
        first, last = layout.segment_of(position), layout.segment_of(end - 1)
        pieces = self._fs.segments(self._container, self._source, first, last)
        start = layout.plaintext_start(first)
        views = []
        for index, piece in zip(range(first, last + 1), pieces, strict=True):
            begin = max(position, start) - start
            views.append(memoryview(piece)[begin : min(end - start, len(piece))])
            start = layout.plaintext_start(index + 1)
        return views[0].tobytes() if len(views) == 1 else b"".join(views)  # exactly one copy

    def close(self) -> None:
        if not self.closed:
            self._source.close()
        super().close()
