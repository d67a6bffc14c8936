"""``open_engine("duckdb" | "spark", keyring)``: the two engines behind one protocol."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import pyarrow as pa

from ppml.data import Manifest
from ppml.engines.base import QueryEngine
from ppml.errors import ConfigError
from ppml.kms import KeyRing

ENGINES = ("duckdb", "spark")


class DuckDBEngine:
    """The embedded default."""

    name = "duckdb"

    def __init__(self, keyring: KeyRing, **settings: Any) -> None:
        from ppml.engines import duckdb as ppml_duckdb

        self.connection = ppml_duckdb.connect(keyring, **settings)

    def register(self, table: str, url: str, *, file_format: str | None = None, mode: str | None = None,
                 options: Mapping[str, Any] | None = None) -> None:
        self.connection.register_encrypted(table, url, file_format=file_format, mode=mode, options=options)

    def register_plain_parquet(self, table: str, paths: list[str]) -> None:
        listing = ", ".join("'" + p.replace("'", "''") + "'" for p in paths)
        self.connection.execute(f'CREATE OR REPLACE VIEW "{table}" AS SELECT * FROM read_parquet([{listing}])')

    def query(self, sql: str) -> pa.Table:
        return self.connection.sql(sql).to_arrow_table()

    def write(self, sql: str, url: str, *, key_uri: str | None, file_format: str = "parquet", mode: str = "ppml",
              write_mode: str = "overwrite", options: Mapping[str, Any] | None = None) -> Manifest | None:
        return self.connection.write_encrypted(sql, url, key_uri=key_uri, file_format=file_format, mode=mode,
                                               write_mode=write_mode, options=options)

    def close(self) -> None:
        self.connection.close()


class SparkEngine:
    """Spark (local by default); executors fetch their own keys, configured by ``source_options``."""

    name = "spark"

    def __init__(self, keyring: KeyRing, *, spark: Any = None, master: str = "local[*]",  # noqa: ANN401
                 conf: Mapping[str, Any] | None = None) -> None:
        from pyspark.sql import SparkSession

        from ppml.engines.spark import register, trusted_session

        active = spark or SparkSession.getActiveSession()  # reuse a running session; never stop it
        self.spark = register(active) if active is not None else trusted_session("ppml", master, conf=conf)
        self._owned = active is None
        self._tables: dict[str, tuple[Any, Any]] = {}
        local = keyring.options.get("local", {})
        self.source_options = {key: str(value) for key, value in
                               (("keystore", local.get("path")), ("passphraseFile", local.get("passphrase_file")))
                               if value}
        others = {scheme: values for scheme, values in keyring.options.items() if scheme != "local"}
        if others:  # e.g. kbs: executors attest to the broker themselves, from these options
            self.source_options["keyring"] = json.dumps(others, sort_keys=True)

    def _with_options(self, builder: Any, options: Mapping[str, Any] | None) -> Any:  # noqa: ANN401
        for key, value in {**self.source_options, **_spark_options(options)}.items():
            builder = builder.option(key, value)
        return builder

    def register(self, table: str, url: str, *, file_format: str | None = None, mode: str | None = None,
                 options: Mapping[str, Any] | None = None) -> None:
        reader = self._with_options(self.spark.read.format("ppml"), options).option("path", url)
        if file_format:
            reader = reader.option("format", file_format)
        if mode:
            reader = reader.option("mode", mode)
        frame = reader.load()
        frame.createOrReplaceTempView(table)
        self._tables[table] = (reader, frame.schema)

    def _prune(self, sql: str) -> None:
        """Python data sources get no column pruning from Spark, so give each table's view only the
        columns ``sql`` mentions: the reader then decodes just those."""
        from pyspark.sql.types import StructType

        for table, (reader, schema) in self._tables.items():
            if not re.search(rf"\b{re.escape(table)}\b", sql, re.IGNORECASE):
                continue
            used = [f for f in schema.fields if re.search(rf"\b{re.escape(f.name)}\b", sql, re.IGNORECASE)]
            reader.schema(StructType(used or schema.fields[:1])).load().createOrReplaceTempView(table)

    def register_plain_parquet(self, table: str, paths: list[str]) -> None:
        self.spark.read.parquet(*paths).createOrReplaceTempView(table)

    def query(self, sql: str) -> pa.Table:
        self._prune(sql)
        return self.spark.sql(sql).toArrow()

    def write(self, sql: str, url: str, *, key_uri: str | None, file_format: str = "parquet", mode: str = "ppml",
              write_mode: str = "overwrite", options: Mapping[str, Any] | None = None) -> Manifest | None:
        self._prune(sql)  # the views may be narrowed to an earlier query's columns
        writer = self._with_options(self.spark.sql(sql).write.format("ppml"), options)
        writer = writer.option("format", file_format).option("mode", mode)
        if key_uri:
            writer = writer.option("key", key_uri)
        writer.mode("append" if write_mode == "append" else "overwrite").save(url)
        return None

    def close(self) -> None:
        if self._owned:
            self.spark.stop()


def _spark_options(options: Mapping[str, Any] | None) -> dict[str, str]:
    names = {"bigdl_key_file": "bigdlKeyFile", "bigdl_kms": "bigdlKms", "row_group_size": "rowGroupSize"}
    return {names.get(key, key): str(value).lower() if isinstance(value, bool) else str(value)
            for key, value in (options or {}).items()}


def open_engine(name: str, keyring: KeyRing, **settings: Any) -> QueryEngine:
    """The named engine, ready to register datasets."""
    if name == "duckdb":
        return DuckDBEngine(keyring, **settings)
    if name == "spark":
        return SparkEngine(keyring, **settings)
    raise ConfigError(f"unknown engine {name!r}; choose one of: {', '.join(ENGINES)}")
