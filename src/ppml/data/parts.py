"""One part file, written or read in any mode: the only place that knows how each mode protects bytes.

Writers run wherever the data is (a Spark executor, the DuckDB process): they get a ``PartSpec`` that
holds no secret and fetch their own data keys from the KMS.
"""

from __future__ import annotations

import base64
import hashlib
import io
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, BinaryIO

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pyarrow.parquet.encryption as pe

from ppml import files
from ppml.data.formats import ROW_GROUP_SIZE, read_table, write_table
from ppml.data.manifest import Part
from ppml.data.modes import EXTENSIONS, Mode
from ppml.data.objectstore import atomic_output, open_ranged, redact, storage_errors
from ppml.errors import ConfigError, InputError, InvalidCiphertext
from ppml.fileformat import DecryptingReader, EncryptingWriter
from ppml.fileformat.bigdl import BigDLDataKey, decrypt_bigdl_stream, encrypt_bigdl_stream
from ppml.kms import KeyRing
from ppml.kms.arrow import crypto_factory, master_key_id

if TYPE_CHECKING:
    from ppml.bigdl_files import BigDLKeySource

PME_MAGIC = b"PARE"


@dataclass(frozen=True, slots=True)
class PartSpec:
    """Everything needed to write parts of one dataset write: picklable, with no key material."""

    dataset_id: str
    file_format: str
    mode: Mode
    key_uri: str | None
    options: Mapping[str, Any] = field(default_factory=dict)
    column_keys: Mapping[str, list[str]] | None = None
    schema_b64: str = ""

    def part_name(self, write_id: str, index: int | str) -> str:
        """``part-<write>-<index>.<ext>[.ppml]``: unique per write, so appends never collide."""
        suffix = ".ppml" if self.mode is Mode.PPML else ".cbc" if self.mode is Mode.BIGDL_CBC else ""
        label = f"{index:05d}" if isinstance(index, int) else index
        return f"part-{write_id}-{label}{EXTENSIONS[self.file_format]}{suffix}"


def write_part(spec: PartSpec, table: pa.Table, url: str, keyring: KeyRing, *,
               bigdl_data_key: tuple[BigDLDataKey, str] | None = None) -> Part:
    """Write ``table`` as one part at ``url`` (atomically) and return what pins it in the manifest.

    BigDL's format shares one data key across a write (its readers take the key from ``.meta``), so its
    writes pass that key in; they run in one process, since the key must not travel.
    """
    name = url.rstrip("/").rsplit("/", 1)[-1]
    with atomic_output(url, overwrite=True) as sink:
        if spec.mode is Mode.BIGDL_CBC:
            if bigdl_data_key is None:
                raise ConfigError("a BigDL-format write needs its data key")
            pins = _write_bigdl(spec, table, sink, name, bigdl_data_key)
        else:
            pins = _WRITERS[spec.mode](spec, table, sink, name, keyring)
    with storage_errors(url):
        fs, path = fsspec.core.url_to_fs(url)
        size = int(fs.size(path))
    row_group_size = int(spec.options.get("row_group_size", ROW_GROUP_SIZE))
    row_groups = max(1, -(-table.num_rows // row_group_size)) if spec.file_format == "parquet" else 1
    return Part(name=name, rows=table.num_rows, size=size, row_groups=row_groups, **pins)


def import_part(spec: PartSpec, source_url: str, url: str, keyring: KeyRing) -> Part:
    """Make an existing Parquet file a part, byte for byte: encrypted into a container (``ppml``) or
    copied (``plain_text``). Engines then read exactly the file the producer wrote."""
    if spec.file_format != "parquet" or spec.mode not in (Mode.PPML, Mode.PLAIN_TEXT):
        raise ConfigError("only Parquet files can be imported as-is, in mode ppml or plain_text")
    name = url.rstrip("/").rsplit("/", 1)[-1]
    with storage_errors(source_url), open_ranged(source_url) as footer:  # fsspec's credentials, not pyarrow's
        metadata = pq.read_metadata(footer)
    with storage_errors(source_url), fsspec.open(source_url, "rb") as source, \
            atomic_output(url, overwrite=True) as sink:
        if spec.mode is Mode.PLAIN_TEXT:
            shutil.copyfileobj(source, sink, 4 << 20)
            pins: dict[str, str] = {}
        else:
            pins = _encrypt_stream(spec, source, sink, name, keyring)
    with storage_errors(url):
        fs, path = fsspec.core.url_to_fs(url)
        size = int(fs.size(path))
    return Part(name=name, rows=metadata.num_rows, size=size, row_groups=metadata.num_row_groups, **pins)


def _encrypt_stream(spec: PartSpec, source: BinaryIO, sink: BinaryIO, name: str, keyring: KeyRing) -> dict[str, str]:
    return _in_container(spec, sink, name, keyring, lambda out: shutil.copyfileobj(source, out, 4 << 20))


def _in_container(spec: PartSpec, sink: BinaryIO, name: str, keyring: KeyRing,
                  fill: Callable[[BinaryIO], object]) -> dict[str, str]:
    """Write a part's plaintext (produced by ``fill``) into a container under a fresh data key, with the
    dataset id and part name in its authenticated metadata; returns the pins for the manifest."""
    assert spec.key_uri is not None
    backend, key_name = keyring.resolve(spec.key_uri)
    data_key, wrapped = backend.generate_data_key(key_name)
    metadata = {"dataset_id": spec.dataset_id, "part": name, "format": spec.file_format}
    with EncryptingWriter(sink, data_key=data_key, key_uri=backend.key_uri(key_name), wrapped_key=wrapped,
                          metadata=metadata) as writer:
        fill(writer)  # type: ignore[arg-type]
    return {"file_id": writer.header.file_id.hex(), "key_uri": backend.key_uri(key_name)}


def _write_plain(spec: PartSpec, table: pa.Table, sink: BinaryIO, name: str, keyring: KeyRing) -> dict[str, str]:
    write_table(table, sink, spec.file_format, spec.options)
    return {}


def _write_ppml(spec: PartSpec, table: pa.Table, sink: BinaryIO, name: str, keyring: KeyRing) -> dict[str, str]:
    return _in_container(spec, sink, name, keyring, lambda out: write_table(table, out, spec.file_format, spec.options))


def _write_pme(spec: PartSpec, table: pa.Table, sink: BinaryIO, name: str, keyring: KeyRing) -> dict[str, str]:
    assert spec.key_uri is not None
    algorithm = spec.mode.value.upper()
    if spec.column_keys:
        return _write_pme_column_keys(spec, table, sink, keyring, algorithm)
    backend, key_name = keyring.resolve(spec.key_uri)
    data_key, wrapped = backend.generate_data_key(key_name)
    aad_prefix = f"ppml:{spec.dataset_id}/{name}"
    properties = pe.create_encryption_properties(footer_key=data_key.insecure_bytes(),
                                                 aad_prefix=aad_prefix.encode(), store_aad_prefix=False,
                                                 encryption_algorithm=algorithm)
    pq.write_table(table, sink, encryption_properties=properties, compression=spec.options.get("compression", "zstd"),
                   row_group_size=int(spec.options.get("row_group_size", ROW_GROUP_SIZE)))
    return {"aad_prefix": aad_prefix, "wrapped_key": base64.b64encode(wrapped).decode("ascii"),
            "key_uri": backend.key_uri(key_name)}


def _write_pme_column_keys(spec: PartSpec, table: pa.Table, sink: BinaryIO, keyring: KeyRing,
                           algorithm: str) -> dict[str, str]:
    """Per-column keys through pyarrow's KMS key tools: interoperable with parquet-mr (Spark)."""
    column_keys = {master_key_id(uri): list(columns) for uri, columns in (spec.column_keys or {}).items()}
    config = pe.EncryptionConfiguration(footer_key=master_key_id(spec.key_uri or ""), column_keys=column_keys,
                                        encryption_algorithm=algorithm, data_key_length_bits=256,
                                        double_wrapping=True, plaintext_footer=False)
    properties = crypto_factory(keyring).file_encryption_properties(pe.KmsConnectionConfig(), config)
    buffer = io.BytesIO()
    pq.write_table(table, buffer, encryption_properties=properties,
                   row_group_size=int(spec.options.get("row_group_size", ROW_GROUP_SIZE)))
    data = buffer.getvalue()
    sink.write(data)
    return {"footer_sha256": _footer_digest(data), "key_uri": spec.key_uri or ""}


def _footer_digest(data: bytes) -> str:
    """SHA-256 of a PME file's encrypted footer, which embeds the file's unique AAD: it pins the file."""
    if data[-4:] != PME_MAGIC:
        raise InvalidCiphertext("not a Parquet file with an encrypted footer")
    footer_length = int.from_bytes(data[-8:-4], "little")
    return hashlib.sha256(data[-8 - footer_length :]).hexdigest()


def _write_bigdl(spec: PartSpec, table: pa.Table, sink: BinaryIO, name: str,
                 bigdl_data_key: tuple[BigDLDataKey, str]) -> dict[str, str]:
    plaintext = io.BytesIO()
    write_table(table, plaintext, spec.file_format, spec.options)
    plaintext.seek(0)
    data_key, wrapped = bigdl_data_key
    encrypt_bigdl_stream(plaintext, sink, data_key, wrapped,
                         insecure_bigdl_format=bool(spec.options.get("insecure_bigdl_format")), name=name)
    return {}


_WRITERS = {Mode.PLAIN_TEXT: _write_plain, Mode.PPML: _write_ppml, Mode.PARQUET_GCM: _write_pme,
            Mode.PARQUET_GCM_CTR: _write_pme}


def bigdl_keys(options: Mapping[str, Any]) -> BigDLKeySource:
    """The BigDL primary key named in dataset options (``bigdl_key_file``, ``bigdl_kms``)."""
    from ppml.bigdl_files import BigDLKeySource  # imports ppml.files, which imports this package

    if not options.get("bigdl_key_file"):
        raise ConfigError("BigDL's aes/cbc/pkcs5padding mode needs a BigDL primary key file "
                          "(--bigdl-key-file; option bigdl_key_file, or bigdlKeyFile in Spark)")
    return BigDLKeySource(options.get("bigdl_kms", "plaintext"), str(options["bigdl_key_file"]))


# -- reading ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PartSource:
    """What a reader needs to open one part: its URL, mode, and the pins from the manifest (if any)."""

    url: str
    file_format: str
    mode: Mode
    part: Part | None = None
    dataset_id: str | None = None
    schema: pa.Schema | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    byte_range: tuple[int, int] | None = None  # a split of a line-based part: plaintext [start, end)


def read_part(source: PartSource, keyring: KeyRing, columns: list[str] | None = None) -> pa.Table:
    """Decrypt, authenticate and parse one part; any mismatch with the manifest is an error.

    A whole part streams in large reads; a split (``byte_range``) reads only its segments, in ranged reads."""
    try:
        with storage_errors(source.url), \
                (open_ranged(source.url) if source.byte_range else fsspec.open(source.url, "rb")) as raw:
            return _READERS[source.mode](source, raw, keyring, columns)
    except FileNotFoundError:
        raise InputError(f"{redact(source.url)}: part file is missing (the dataset was modified)") from None


def _read_plain(source: PartSource, raw: BinaryIO, keyring: KeyRing, columns: list[str] | None) -> pa.Table:
    return read_table(raw, source.file_format, source.schema, source.options, name=source.url, columns=columns)


def open_ppml_part(source: PartSource, raw: BinaryIO, keyring: KeyRing) -> DecryptingReader:
    """Open a ``.ppml`` part and check that its authenticated header is the one the manifest pinned."""
    reader = DecryptingReader(raw, files.key_resolver(keyring, source.url), name=source.url)
    if source.part is not None:
        metadata = reader.header.metadata
        if (reader.header.file_id.hex() != source.part.file_id or metadata.get("dataset_id") != source.dataset_id
                or metadata.get("part") != source.part.name):
            raise InvalidCiphertext(f"{source.url}: this part is not the one the dataset manifest committed "
                                    "(it was swapped, replaced or replayed)")
    return reader


def _read_ppml(source: PartSource, raw: BinaryIO, keyring: KeyRing, columns: list[str] | None) -> pa.Table:
    reader = open_ppml_part(source, raw, keyring)
    with io.BufferedReader(reader, buffer_size=reader.header.segment_size) as plaintext:  # type: ignore[arg-type]
        if source.byte_range is None:
            return read_table(plaintext, source.file_format, source.schema, source.options,  # type: ignore[arg-type]
                              name=source.url, columns=columns)
        start, end = source.byte_range
        lines = line_range(plaintext, start, end)  # type: ignore[arg-type]
        if not lines and source.schema is not None:
            empty = source.schema.empty_table()
            return empty.select(columns) if columns else empty
        options = {**source.options, "header": source.options.get("header", True) and start == 0}
        return read_table(io.BytesIO(lines), source.file_format, source.schema, options, name=source.url,
                          columns=columns)


def line_range(plaintext: BinaryIO, start: int, end: int) -> bytes:
    """The whole lines that start in ``[start, end)`` of a line-based file (Hadoop's split rule): a split
    skips the line already begun before it and finishes the line that crosses its end. Splits assume
    no newline inside a value, as Spark's own CSV reader does unless ``multiLine`` is set."""
    begin = start
    if start > 0:
        plaintext.seek(start - 1)
        skipped = plaintext.readline()
        begin = start - 1 + len(skipped)
    if begin >= end:
        return b""
    plaintext.seek(begin)
    data = plaintext.read(end - begin)
    if data and not data.endswith(b"\n"):
        data += plaintext.readline()
    return data


def _read_pme(source: PartSource, raw: BinaryIO, keyring: KeyRing, columns: list[str] | None) -> pa.Table:
    data = raw.read()
    part = source.part
    try:
        if part is not None and part.aad_prefix:
            backend, key_name = keyring.resolve(part.key_uri)
            data_key = backend.unwrap_key(base64.b64decode(part.wrapped_key), key_name)
            properties = pe.create_decryption_properties(footer_key=data_key.insecure_bytes(),
                                                         aad_prefix=part.aad_prefix.encode())
        else:
            if part is not None and _footer_digest(data) != part.footer_sha256:
                raise InvalidCiphertext(f"{source.url}: this part is not the one the dataset manifest committed")
            properties = crypto_factory(keyring).file_decryption_properties(pe.KmsConnectionConfig(),
                                                                            pe.DecryptionConfiguration())
        return pq.read_table(io.BytesIO(data), columns=columns, decryption_properties=properties)
    except (OSError, pa.ArrowException) as error:
        raise InvalidCiphertext(f"{source.url}: Parquet decryption failed (tampered, swapped, or wrong key): "
                                f"{error}") from None


def _read_bigdl(source: PartSource, raw: BinaryIO, keyring: KeyRing, columns: list[str] | None) -> pa.Table:
    from ppml.fileformat.bigdl import read_bigdl_header

    keys = bigdl_keys(source.options)
    header = read_bigdl_header(raw, name=source.url)
    raw.seek(0)
    plaintext = io.BytesIO()
    decrypt_bigdl_stream(raw, plaintext, keys.unwrap(header.encrypted_data_key), name=source.url, allow_empty=True)
    plaintext.seek(0)
    return read_table(plaintext, source.file_format, source.schema, source.options, name=source.url,
                      columns=columns)


_READERS = {Mode.PLAIN_TEXT: _read_plain, Mode.PPML: _read_ppml, Mode.PARQUET_GCM: _read_pme,
            Mode.PARQUET_GCM_CTR: _read_pme, Mode.BIGDL_CBC: _read_bigdl}
