"""Encrypted datasets on any fsspec URL, in and out of Arrow, with atomic commits.

Writing: parts are staged in a hidden directory, moved into the dataset, and made visible by one
atomic manifest replacement (``error``, ``overwrite`` or ``append``). Blob storage cannot rename, so
there parts are written in place under names unique to the write and only the manifest replacement
commits them (see ``ppml.data.objectstore``). Reading: only the parts the manifest lists are read, each
checked against the pins the manifest recorded. Directories without a manifest (plain files, ``.ppml``
files, BigDL PPML output) are read too, by listing their data files.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from ppml.data.formats import portable
from ppml.data.manifest import (
    ENCRYPTED_NAME,
    PLAIN_NAME,
    Manifest,
    Part,
    decode_schema,
    encode_schema,
    read_manifest,
    write_manifest,
)
from ppml.data.modes import EXTENSIONS, Mode, check_format
from ppml.data.objectstore import fresh_fs, is_blob_url, open_ranged, redact, storage_errors
from ppml.data.parts import PartSource, PartSpec, bigdl_keys, import_part, read_part, write_part
from ppml.errors import ConfigError, InputError
from ppml.fileformat.bigdl import META_FILE_NAME, format_bigdl_meta
from ppml.kms import KeyRing

WRITE_MODES = ("error", "overwrite", "append")
DEFAULT_ROWS_PER_PART = 2_000_000
_HIDDEN = (".", "_")


def _fs(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    fs, path = fresh_fs(url)
    return fs, path.rstrip("/")


def _join(url: str, name: str) -> str:
    return f"{url.rstrip('/')}/{name}"


@dataclass
class DatasetWriter:
    """One write into a dataset: ``begin`` → parts (anywhere) → ``commit`` (once), or ``abort``.

    Its state is the picklable ``spec`` plus names, so a Spark driver can commit what executors wrote.
    The commit re-reads the manifest, so an append never drops parts committed meanwhile.
    """

    url: str
    spec: PartSpec
    keyring: KeyRing
    write_mode: str = "error"
    write_id: str = field(default_factory=lambda: secrets.token_hex(4))
    _parts: list[Part] = field(default_factory=list)
    _bigdl_key: Any = None

    @classmethod
    def begin(cls, url: str, schema: pa.Schema, keyring: KeyRing, *, file_format: str = "parquet",
              mode: str | Mode = Mode.PPML, key_uri: str | None = None, write_mode: str = "error",
              options: Mapping[str, Any] | None = None,
              column_keys: Mapping[str, list[str]] | None = None) -> DatasetWriter:
        """Validate the write against what is already there and prepare an empty staging area."""
        mode = Mode.parse(mode)
        check_format(file_format, mode)
        if write_mode not in WRITE_MODES:
            raise ConfigError(f"unknown write mode {write_mode!r}; choose one of: {', '.join(WRITE_MODES)}")
        if mode.encrypted and mode is not Mode.BIGDL_CBC and not key_uri:
            raise ConfigError(f"mode {mode.value} needs a key URI (e.g. local:sales)")
        previous = read_manifest(url, keyring)
        with storage_errors(url):
            _check_target(url, previous, write_mode)
        if previous is not None and write_mode == "append":
            _check_compatible(url, previous, file_format, mode, schema)
        dataset_id = previous.dataset_id if previous is not None and write_mode == "append" else secrets.token_hex(16)
        spec = PartSpec(dataset_id=dataset_id, file_format=file_format, mode=mode,
                        key_uri=key_uri if mode.encrypted else None, options=dict(options or {}),
                        column_keys=dict(column_keys) if column_keys else None, schema_b64=encode_schema(schema))
        writer = cls(url=url, spec=spec, keyring=keyring, write_mode=write_mode)
        if mode is Mode.BIGDL_CBC:
            writer._bigdl_key = bigdl_keys(spec.options).generate(
                insecure_bigdl_format=bool(spec.options.get("insecure_bigdl_format")))
        return writer

    @property
    def staging(self) -> str:
        """Hidden directory that holds this write's parts until the commit."""
        return _join(self.url, f".staging-{self.write_id}")

    @property
    def in_place(self) -> bool:
        """Blob storage has no rename (a move is a copy): parts are written where they stay, under names
        unique to this write, and only the manifest commits them."""
        return is_blob_url(self.url)

    def part_url(self, index: int | str) -> str:
        """Where part ``index`` of this write is written: the staging directory, or in place on blob storage."""
        return _join(self.url if self.in_place else self.staging, self.spec.part_name(self.write_id, index))

    def write(self, table: pa.Table, index: int | None = None) -> Part:
        """Write one part from this process (Spark executors call ``write_part`` with the spec)."""
        index = len(self._parts) if index is None else index
        part = write_part(self.spec, table, self.part_url(index), self.keyring, bigdl_data_key=self._bigdl_key)
        self._parts.append(part)
        return part

    def import_file(self, source_url: str) -> Part:
        """Add an existing Parquet file as a part, byte for byte (encrypted in mode ``ppml``)."""
        part = import_part(self.spec, source_url, self.part_url(len(self._parts)), self.keyring)
        self._parts.append(part)
        return part

    def commit(self, parts: Iterable[Part] | None = None) -> Manifest:
        """Move staged parts into the dataset (on blob storage they are already in place) and atomically
        publish the new manifest, the one step that makes them part of the dataset."""
        parts = sorted(self._parts if parts is None else parts, key=lambda part: part.name)
        previous = read_manifest(self.url, self.keyring)
        if previous is not None and self.write_mode == "append":
            if previous.dataset_id != self.spec.dataset_id:
                raise InputError(f"{self.url}: the dataset was replaced while this append ran; retry it")
            base = previous
        else:
            base = Manifest.new(self.spec.file_format, self.spec.mode.value, self.spec.key_uri,
                                decode_schema(self.spec.schema_b64), self.spec.options, dataset_id=self.spec.dataset_id)
        with storage_errors(self.url):
            fs, root = _fs(self.url)
            if not self.in_place:
                for part in parts:
                    fs.mv(f"{_fs(self.staging)[1]}/{part.name}", f"{root}/{part.name}")
            manifest = base.with_parts(parts, write_id=self.write_id, write_mode=self.write_mode)
            if self.spec.mode is Mode.BIGDL_CBC:
                with fsspec.open(_join(self.url, META_FILE_NAME), "wb") as meta:
                    meta.write(format_bigdl_meta(self._bigdl_key[1]).encode("utf-8"))
            write_manifest(self.url, manifest, self.keyring)
            self._cleanup(fs, root, previous, manifest)
        return manifest

    def abort(self) -> None:
        """Remove everything this write staged; the dataset stays as it was."""
        with storage_errors(self.url):
            self._discard(committed=frozenset())

    def _discard(self, committed: frozenset[str]) -> None:
        """Delete this write's parts that are not committed: the staging directory, or, written in place,
        every ``part-<write id>-*`` the manifest does not list (e.g. from failed task attempts)."""
        if not self.in_place:
            fs, path = _fs(self.staging)
            if fs.exists(path):
                fs.rm(path, recursive=True)
            return
        fs, root = _fs(self.url)
        prefix = f"part-{self.write_id}-"
        if not fs.exists(root):
            return
        for path in fs.ls(root, detail=False):
            name = path.rstrip("/").rsplit("/", 1)[-1]
            if name.startswith(prefix) and name not in committed:
                fs.rm(path)

    def _cleanup(self, fs: fsspec.AbstractFileSystem, root: str, previous: Manifest | None,
                 manifest: Manifest) -> None:
        self._discard(committed=frozenset(part.name for part in manifest.parts))
        if previous is None:
            return
        if self.write_mode == "overwrite":
            current = {part.name for part in manifest.parts}
            for part in previous.parts:
                if part.name not in current and fs.exists(f"{root}/{part.name}"):
                    fs.rm(f"{root}/{part.name}")
        if previous.key_uri != manifest.key_uri:
            # the manifest moved between plain and encrypted: drop the stale one
            stale = ENCRYPTED_NAME if manifest.key_uri is None else PLAIN_NAME
            if fs.exists(f"{root}/{stale}"):
                fs.rm(f"{root}/{stale}")


def _check_target(url: str, previous: Manifest | None, write_mode: str) -> None:
    fs, root = _fs(url)
    if write_mode != "error" or not fs.exists(root):
        return
    if previous is not None or fs.isfile(root) or any(
            not p.rsplit("/", 1)[-1].startswith(".staging-") for p in fs.ls(root, detail=False)):
        raise InputError(f"{url}: dataset exists; choose write mode overwrite or append")


def _check_compatible(url: str, previous: Manifest, file_format: str, mode: Mode, schema: pa.Schema) -> None:
    if previous.file_format != file_format or previous.mode != mode.value:
        raise ConfigError(f"{url}: cannot append {file_format}/{mode.value} parts to a "
                          f"{previous.file_format}/{previous.mode} dataset")
    if not previous.schema.equals(schema):
        raise ConfigError(f"{url}: cannot append: the schema differs from the dataset's\n"
                          f"dataset: {previous.schema}\nappended: {schema}")


def write_dataset(data: pa.Table | pa.RecordBatchReader, url: str, keyring: KeyRing, *,
                  file_format: str = "parquet", mode: str | Mode = Mode.PPML, key_uri: str | None = None,
                  write_mode: str = "error", options: Mapping[str, Any] | None = None,
                  rows_per_part: int = DEFAULT_ROWS_PER_PART,
                  column_keys: Mapping[str, list[str]] | None = None) -> Manifest:
    """Write Arrow data as an encrypted dataset and commit it atomically."""
    table = portable(data.read_all() if isinstance(data, pa.RecordBatchReader) else data)
    writer = DatasetWriter.begin(url, table.schema, keyring, file_format=file_format, mode=mode, key_uri=key_uri,
                                 write_mode=write_mode, options=options, column_keys=column_keys)
    try:
        for start in range(0, max(table.num_rows, 1), rows_per_part):
            writer.write(table.slice(start, rows_per_part))
        return writer.commit()
    except BaseException:
        writer.abort()
        raise


def import_files(sources: list[str], url: str, keyring: KeyRing, *, mode: str | Mode = Mode.PPML,
                 key_uri: str | None = None, write_mode: str = "error") -> Manifest:
    """Make existing Parquet files (one schema) a dataset without re-encoding them."""
    if not sources:
        raise InputError(f"{url}: no files to import")
    with storage_errors(sources[0]), open_ranged(sources[0]) as first:  # fsspec's credentials, not pyarrow's
        schema = portable(pq.read_schema(first).empty_table()).schema.remove_metadata()
    writer = DatasetWriter.begin(url, schema, keyring, mode=mode, key_uri=key_uri, write_mode=write_mode)
    try:
        for source in sources:
            writer.import_file(source)
        return writer.commit()
    except BaseException:
        writer.abort()
        raise


@dataclass(frozen=True)
class Dataset:
    """A readable dataset: its parts, format, mode and (when known) schema."""

    url: str
    file_format: str
    mode: Mode
    sources: tuple[PartSource, ...]
    manifest: Manifest | None = None

    @property
    def schema(self) -> pa.Schema | None:
        """The recorded schema, or None for foreign data whose types are inferred."""
        return self.manifest.schema if self.manifest else None

    def read_part(self, source: PartSource, keyring: KeyRing, columns: list[str] | None = None) -> pa.Table:
        """One part as an Arrow table."""
        return read_part(source, keyring, columns)

    def batches(self, keyring: KeyRing, columns: list[str] | None = None) -> Iterator[pa.RecordBatch]:
        """Every row, part by part, in memory one part at a time."""
        for source in self.sources:
            yield from self.read_part(source, keyring, columns).to_batches()

    def to_table(self, keyring: KeyRing, columns: list[str] | None = None) -> pa.Table:
        """The whole dataset as one table (the schema of an empty dataset is kept)."""
        tables = [self.read_part(source, keyring, columns) for source in self.sources]
        if not tables:
            schema = self.schema or pa.schema([])
            return (schema if columns is None else pa.schema([schema.field(c) for c in columns])).empty_table()
        return pa.concat_tables(tables, promote_options="default") if len(tables) > 1 else tables[0]


def open_dataset(url: str, keyring: KeyRing, *, file_format: str | None = None, mode: str | Mode | None = None,
                 options: Mapping[str, Any] | None = None) -> Dataset:
    """Open a dataset directory (with or without a manifest) or a single data file."""
    with storage_errors(url):
        fs, root = _fs(url)
        if not fs.exists(root):
            raise InputError(f"{redact(url)}: no such dataset or file")
        is_dir = fs.isdir(root)
    manifest = read_manifest(url, keyring) if is_dir else None
    if manifest is not None:
        merged = {**manifest.options, **(options or {})}
        sources = tuple(PartSource(url=_join(url, part.name), file_format=manifest.file_format,
                                   mode=Mode.parse(manifest.mode), part=part, dataset_id=manifest.dataset_id,
                                   schema=manifest.schema, options=merged) for part in manifest.parts)
        return Dataset(url, manifest.file_format, Mode.parse(manifest.mode), sources, manifest)
    with storage_errors(url):
        return _open_foreign(url, fs, root, file_format, mode, dict(options or {}))


def _open_foreign(url: str, fs: fsspec.AbstractFileSystem, root: str, file_format: str | None,
                  mode: str | Mode | None, options: dict[str, Any]) -> Dataset:
    """Files written by other tools: infer mode and format from names unless they are given."""
    if fs.isdir(root):
        names = sorted(p.rsplit("/", 1)[-1] for p in fs.ls(root, detail=False))
        is_bigdl = META_FILE_NAME in names
        files = [n for n in names if not n.startswith(_HIDDEN) and n != "_SUCCESS"]
        urls = [_join(url, n) for n in files]
    else:
        is_bigdl, files, urls = False, [root.rsplit("/", 1)[-1]], [url]
    if not files:
        raise InputError(f"{url}: no data files")
    chosen = Mode.parse(mode) if mode else (Mode.BIGDL_CBC if is_bigdl or files[0].endswith(".cbc") else
                                            Mode.PPML if files[0].endswith(".ppml") else Mode.PLAIN_TEXT)
    fmt = file_format or _format_from_name(files[0])
    check_format(fmt, chosen)
    sources = tuple(PartSource(url=u, file_format=fmt, mode=chosen, options=options) for u in urls)
    return Dataset(url, fmt, chosen, sources)


def _format_from_name(name: str) -> str:
    stem = name.removesuffix(".ppml").removesuffix(".cbc")
    for fmt, extension in EXTENSIONS.items():
        if stem.endswith(extension) or f"{extension}." in stem:
            return fmt
    raise ConfigError(f"cannot tell the file format of {name!r}; pass the format explicitly")


def read_dataset(url: str, keyring: KeyRing, *, columns: list[str] | None = None, **kwargs: Any) -> pa.Table:
    """Read a whole dataset into an Arrow table."""
    return open_dataset(url, keyring, **kwargs).to_table(keyring, columns)


__all__ = ["Dataset", "DatasetWriter", "import_files", "open_dataset", "read_dataset", "write_dataset"]
