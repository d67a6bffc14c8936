"""DuckDB over encrypted datasets: views that decrypt inside this process, results written back encrypted.

``.ppml``-container datasets are read by DuckDB's own Parquet, CSV and JSON readers through the
``ppml://`` filesystem, so projection and filter pushdown, row-group skipping and parallel scans work as
on plaintext. Parquet modular encryption and BigDL's format are decrypted by pyarrow and registered as
Arrow tables.

    con = ppml.engines.duckdb.connect(keyring)
    con.register_encrypted("lineitem", "warehouse/lineitem")
    con.sql("select count(*) from lineitem").fetchall()
    con.write_encrypted("select * from lineitem where l_quantity > 45", "out/big", key_uri="local:sales")
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import duckdb
import pyarrow as pa

from ppml.data import Manifest, Mode, open_dataset, write_dataset
from ppml.data.dataset import Dataset
from ppml.data.fs import SUFFIX, DecryptedFileSystem
from ppml.errors import ConfigError
from ppml.kms import KeyRing


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


class EncryptedConnection:
    """A DuckDB connection that can register encrypted datasets and write encrypted results."""

    def __init__(self, keyring: KeyRing, connection: duckdb.DuckDBPyConnection, *,
                 cache_bytes: int | None = None) -> None:
        self.keyring = keyring
        self.raw = connection
        options = {} if cache_bytes is None else {"cache_bytes": cache_bytes}
        self.filesystem = DecryptedFileSystem(keyring, **options)
        connection.register_filesystem(self.filesystem)

    def register_encrypted(self, name: str, url: str, *, file_format: str | None = None,
                           mode: str | Mode | None = None, options: Mapping[str, Any] | None = None) -> Dataset:
        """Create view ``name`` over the dataset at ``url``; columns are decrypted only when scanned."""
        dataset = open_dataset(url, self.keyring, file_format=file_format, mode=mode, options=options)
        if dataset.mode in (Mode.PPML, Mode.PLAIN_TEXT) and dataset.sources:
            source = self._native_scan(dataset)
            self.raw.execute(f"CREATE OR REPLACE VIEW {_quote(name)} AS SELECT * FROM {source}")
        else:
            table = dataset.to_table(self.keyring)
            self.raw.register(f"__ppml_{name}", table)
            self.raw.execute(f"CREATE OR REPLACE VIEW {_quote(name)} AS SELECT * FROM {_quote('__ppml_' + name)}")
        return dataset

    def _native_scan(self, dataset: Dataset) -> str:
        # containers, and any remote file (abfs://...: DuckDB reads it through fsspec too), go through ppml://
        files = [("ppml://" + s.url.removesuffix(SUFFIX)) if dataset.mode is Mode.PPML or "://" in s.url else s.url
                 for s in dataset.sources]
        listing = "[" + ", ".join(_literal(f) for f in files) + "]"
        if dataset.file_format == "parquet":
            return f"read_parquet({listing})"
        options = dataset.sources[0].options
        columns = self._columns(dataset.schema)
        if dataset.file_format == "csv":
            header = "true" if options.get("header", True) else "false"
            delimiter = _literal(options.get("delimiter", ","))
            typed = f", columns={columns}" if columns else ""
            # pyarrow writes "" for an empty string and nothing for a null: keep the two apart
            quoting = "quote='\"', escape='\"', allow_quoted_nulls=false"
            return f"read_csv({listing}, header={header}, delim={delimiter}, {quoting}{typed})"
        if dataset.file_format == "json":
            typed = f", columns={columns}" if columns else ""
            return f"read_json({listing}, format='newline_delimited'{typed})"
        return f"read_csv({listing}, header=false, delim='\\0', quote='', columns={{'value': 'VARCHAR'}})"

    def _columns(self, schema: pa.Schema | None) -> str:
        """A DuckDB ``columns={...}`` literal with the exact types DuckDB gives this Arrow schema."""
        if schema is None:
            return ""
        relation = self.raw.from_arrow(schema.empty_table())
        pairs = (f"{_literal(n)}: {_literal(str(t))}" for n, t in zip(relation.columns, relation.dtypes, strict=True))
        return "{" + ", ".join(pairs) + "}"

    def sql(self, query: str) -> duckdb.DuckDBPyRelation:
        """Run SQL over registered datasets."""
        return self.raw.sql(query)

    def execute(self, query: str) -> duckdb.DuckDBPyConnection:
        """Execute a statement."""
        return self.raw.execute(query)

    def write_encrypted(self, query: str | duckdb.DuckDBPyRelation, url: str, *, key_uri: str | None = None,
                        file_format: str = "parquet", mode: str | Mode = Mode.PPML, write_mode: str = "error",
                        options: Mapping[str, Any] | None = None) -> Manifest:
        """Write a query's result as an encrypted dataset, committed atomically."""
        relation = self.raw.sql(query) if isinstance(query, str) else query
        table = relation.to_arrow_table()
        if Mode.parse(mode).encrypted and not key_uri and Mode.parse(mode) is not Mode.BIGDL_CBC:
            raise ConfigError("write_encrypted needs key_uri for an encrypted mode")
        return write_dataset(table, url, self.keyring, file_format=file_format, mode=mode, key_uri=key_uri,
                             write_mode=write_mode, options=options)

    def close(self) -> None:
        """Close the DuckDB connection."""
        self.raw.close()

    def __enter__(self) -> EncryptedConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect(keyring: KeyRing, database: str = ":memory:", *, config: Mapping[str, Any] | None = None,
            cache_bytes: int | None = None) -> EncryptedConnection:
    """A DuckDB connection able to read and write encrypted datasets with keys from ``keyring``.

    Spilling to disk is off (``temp_directory=''``): DuckDB's temporary files are plaintext unless the
    database itself is encrypted, so an operator that outgrows memory fails rather than writing
    decrypted data to disk. Pass ``config={"temp_directory": ...}`` to choose otherwise.
    """
    settings = {"temp_directory": "", **dict(config or {})}
    return EncryptedConnection(keyring, duckdb.connect(database, config=settings), cache_bytes=cache_bytes)
