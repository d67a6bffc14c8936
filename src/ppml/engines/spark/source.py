"""The ``ppml`` Spark data source: ``spark.read.format("ppml")`` and ``df.write.format("ppml")``.

Executors decrypt and encrypt themselves: each rebuilds the key ring from options that hold no secret
(a keystore path, a passphrase *file*, a key broker URL) and fetches data keys from the KMS. No key is
ever put in Spark or Hadoop configuration, in a closure, or in a log.

Options: ``path``; ``format`` (parquet, csv, json, text); ``mode`` (plain_text, ppml, aes_gcm_v1,
aes_gcm_ctr_v1, aes/cbc/pkcs5padding); ``key`` (a key URI, for writes); ``header``, ``delimiter``;
``keystore`` and ``passphraseFile`` (the local KMS); ``keyring`` (JSON: other KMSs' options, e.g.
``{"kbs": {"url": ..., "ca_file": ..., "attester": ...}}``); ``bigdlKeyFile`` and ``bigdlKms`` (BigDL data).
Partitions map to Parquet row groups, or to byte ranges of large row-format parts.

Paths are any fsspec URL, ``abfs://container/path`` included. Storage credentials are never options:
executors find them where the driver does, in their environment (``AZURE_STORAGE_*``, which Python workers
inherit from the process that started Spark in local mode, and from the cluster's executor environment
otherwise) or through the Azure identity chain (a managed identity on the nodes).
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql.datasource import (
    DataSource,
    DataSourceArrowWriter,
    DataSourceReader,
    InputPartition,
    WriterCommitMessage,
)
from pyspark.sql.pandas.types import from_arrow_schema, to_arrow_schema
from pyspark.sql.types import StructType

from ppml.data.dataset import Dataset, DatasetWriter, open_dataset
from ppml.data.modes import Mode
from ppml.data.objectstore import open_ranged, storage_errors
from ppml.data.parts import PartSource, PartSpec, open_ppml_part, read_part, write_part
from ppml.errors import ConfigError
from ppml.kms import KeyRing

_BOOLEAN = {"true": True, "false": False}
SPLIT_BYTES = 64 * 1024 * 1024


def normalize(options: Mapping[str, str]) -> dict[str, str]:
    """Spark option names are case-insensitive: keep them lower-cased."""
    return {str(key).lower(): str(value) for key, value in options.items()}


def keyring_options(options: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """Per-scheme KMS options from data source options (or the executor's environment)."""
    options = normalize(options)
    local: dict[str, Any] = {}
    if options.get("keystore"):
        local["path"] = options["keystore"]
    if options.get("passphrasefile"):
        local["passphrase_file"] = options["passphrasefile"]
    ring: dict[str, dict[str, Any]] = {"local": local}
    if options.get("keyring"):  # other KMSs' options (e.g. kbs: broker URL, CA file, attester), as JSON
        try:
            extra = json.loads(options["keyring"])
        except ValueError:
            raise ConfigError("data source option 'keyring' must be a JSON object of per-scheme options") from None
        if not isinstance(extra, dict) or not all(isinstance(v, dict) for v in extra.values()):
            raise ConfigError("data source option 'keyring' must be a JSON object of per-scheme options")
        ring.update({scheme: values for scheme, values in extra.items() if scheme != "local"})
    return ring


@lru_cache(maxsize=8)
def _keyring(frozen: str) -> KeyRing:
    """One key ring per executor process and configuration: keystores unlock once, not per task."""
    return KeyRing(json.loads(frozen))


def keyring_for(options: Mapping[str, str]) -> KeyRing:
    """The (cached) key ring these options describe."""
    return _keyring(json.dumps(keyring_options(options), sort_keys=True))


def dataset_options(options: Mapping[str, str]) -> dict[str, Any]:
    """Format and BigDL options in the data layer's vocabulary."""
    options = normalize(options)
    result: dict[str, Any] = {}
    for key in ("header",):
        if key in options:
            result[key] = _BOOLEAN.get(str(options[key]).lower(), True)
    if "delimiter" in options or "sep" in options:
        result["delimiter"] = options.get("delimiter", options.get("sep"))
    if options.get("bigdlkeyfile"):
        result["bigdl_key_file"] = options["bigdlkeyfile"]
        result["bigdl_kms"] = options.get("bigdlkms", "plaintext")
    if options.get("insecurebigdlformat", "").lower() == "true":
        result["insecure_bigdl_format"] = True
    if options.get("rowgroupsize"):
        result["row_group_size"] = int(options["rowgroupsize"])
    return result


class PPMLDataSource(DataSource):
    """Encrypted datasets as Spark tables."""

    @classmethod
    def name(cls) -> str:
        return "ppml"

    def _path(self) -> str:
        path = self.options.get("path")
        if not path:
            raise ConfigError("the ppml data source needs a path: .load(path) or .save(path)")
        return str(path)

    def _dataset(self) -> Dataset:
        return open_dataset(self._path(), keyring_for(self.options), file_format=self.options.get("format"),
                            mode=self.options.get("mode"), options=dataset_options(self.options))

    def schema(self) -> StructType:
        dataset = self._dataset()
        schema = dataset.schema
        if schema is None:  # foreign data: take the first part's (inferred) schema
            schema = dataset.read_part(dataset.sources[0], keyring_for(self.options)).schema
        return from_arrow_schema(schema, prefer_timestamp_ntz=True)

    def reader(self, schema: StructType) -> DataSourceReader:
        return PPMLReader(self._dataset(), normalize(self.options), schema)

    def writer(self, schema: StructType, overwrite: bool) -> PPMLWriter:
        options = normalize(self.options)
        arrow_schema = to_arrow_schema(schema)
        begun = DatasetWriter.begin(self._path(), arrow_schema, keyring_for(options),
                                    file_format=options.get("format", "parquet"),
                                    mode=options.get("mode", Mode.PPML.value), key_uri=options.get("key"),
                                    write_mode="overwrite" if overwrite else "append",
                                    options=dataset_options(options))
        if begun.spec.mode is Mode.BIGDL_CBC:
            raise ConfigError("Spark writes BigDL's format nowhere: its one data key per write would have to "
                              "travel to executors; write mode ppml, or use `ppml encrypt --insecure-bigdl-format`")
        return PPMLWriter(begun.url, begun.spec, begun.write_mode, begun.write_id, options)


@dataclass(frozen=True)
class _Split(InputPartition):  # type: ignore[misc]
    source: PartSource
    row_group: int | None


class PPMLReader(DataSourceReader):
    """Reads one row group (Parquet) or one file (row formats) per partition, as Arrow batches."""

    def __init__(self, dataset: Dataset, options: dict[str, str], schema: StructType) -> None:
        self.sources = dataset.sources
        self.options = options
        self.arrow_schema = to_arrow_schema(schema)

    def partitions(self) -> list[InputPartition]:
        splits: list[InputPartition] = []
        split_bytes = int(self.options.get("splitsize", SPLIT_BYTES))
        for source in self.sources:
            groups = source.part.row_groups if source.part and source.file_format == "parquet" else 0
            if groups > 1 and source.mode in (Mode.PPML, Mode.PLAIN_TEXT):
                splits += [_Split(source, group) for group in range(groups)]
            elif _splittable(source) and source.part is not None and source.part.size > split_bytes:
                splits += [_Split(replace(source, byte_range=(start, start + split_bytes)), None)
                           for start in range(0, source.part.size, split_bytes)]
            else:
                splits.append(_Split(source, None))
        return splits or [_Split(PartSource(url="", file_format="parquet", mode=Mode.PLAIN_TEXT), -1)]

    def read(self, partition: InputPartition) -> Iterator[pa.RecordBatch]:
        split: _Split = partition
        if split.row_group == -1:  # an empty dataset
            return iter(())
        keyring = keyring_for(self.options)
        columns = self.arrow_schema.names  # a schema given to the reader may name fewer columns: prune
        if split.row_group is None:
            table = read_part(split.source, keyring, columns)
        else:
            table = _read_row_group(split.source, split.row_group, keyring, columns)
        return iter(table.cast(self.arrow_schema).to_batches())


def _splittable(source: PartSource) -> bool:
    """Line-based parts in containers split by plaintext byte ranges (decrypting only those segments)."""
    return source.mode is Mode.PPML and source.file_format in ("csv", "json", "text") and source.schema is not None


def _read_row_group(source: PartSource, group: int, keyring: KeyRing, columns: list[str]) -> pa.Table:
    """Some columns of one row group of a Parquet part, decrypting only the segments they span (on blob
    storage, fetched in ranged GETs)."""
    with storage_errors(source.url), open_ranged(source.url) as raw:
        if source.mode is not Mode.PPML:
            return _row_group(pq.ParquetFile(raw), group, columns)
        reader = open_ppml_part(source, raw, keyring)
        with io.BufferedReader(reader, buffer_size=reader.header.segment_size) as plaintext:  # type: ignore[arg-type]
            return _row_group(pq.ParquetFile(plaintext), group, columns)


def _row_group(parquet: pq.ParquetFile, group: int, columns: list[str]) -> pa.Table:
    if group >= parquet.num_row_groups:
        return parquet.schema_arrow.empty_table().select(columns)
    return parquet.read_row_group(group, columns=columns)


@dataclass
class _Written(WriterCommitMessage):  # type: ignore[misc]
    part: Any


class PPMLWriter(DataSourceArrowWriter):
    """Executors write staged parts; the driver commits them with one atomic manifest update."""

    def __init__(self, url: str, spec: PartSpec, write_mode: str, write_id: str, options: dict[str, str]) -> None:
        self.url, self.spec, self.write_mode, self.write_id, self.options = url, spec, write_mode, write_id, options

    def _writer(self) -> DatasetWriter:
        return DatasetWriter(url=self.url, spec=self.spec, keyring=keyring_for(self.options),
                             write_mode=self.write_mode, write_id=self.write_id)

    def write(self, iterator: Iterator[pa.RecordBatch]) -> WriterCommitMessage:
        from pyspark import TaskContext

        batches = list(iterator)
        schema = batches[0].schema if batches else None
        table = pa.Table.from_batches(batches, schema=schema) if batches else None
        if table is None or table.num_rows == 0:
            return _Written(None)
        context = TaskContext.get()
        label = f"{context.partitionId():05d}-{context.attemptNumber()}" if context else f"{os.getpid()}"
        writer = self._writer()
        part = write_part(self.spec, table, writer.part_url(label), writer.keyring)
        return _Written(part)

    def commit(self, messages: list[WriterCommitMessage | None]) -> None:
        parts = [m.part for m in messages if isinstance(m, _Written) and m.part is not None]
        self._writer().commit(parts)

    def abort(self, messages: list[WriterCommitMessage | None]) -> None:
        self._writer().abort()
