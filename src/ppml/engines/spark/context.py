"""A ``PPMLContext`` for BigDL PPML users: ``ctx.read(mode, key).csv(path)``, ``ctx.write(df, mode, key)``.

Key names map to key URIs (``{"defaultKey": "local:sales"}``), as BigDL's
``spark.bigdl.primaryKey.<name>`` settings named primary keys, but no key material is configured.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pyspark.sql import DataFrame, SparkSession

from ppml.data.modes import Mode
from ppml.errors import ConfigError


class _Reader:
    def __init__(self, context: PPMLContext, mode: Mode, key: str | None) -> None:
        self._context, self._mode, self._key = context, mode, key
        self._options: dict[str, str] = {}

    def option(self, name: str, value: Any) -> _Reader:  # noqa: ANN401 - as Spark's
        self._options[name] = str(value).lower() if isinstance(value, bool) else str(value)
        return self

    def _load(self, file_format: str, path: str) -> DataFrame:
        reader = self._context.spark.read.format("ppml").option("format", file_format)
        if self._mode is not Mode.PLAIN_TEXT:
            reader = reader.option("mode", self._mode.value)
        for name, value in {**self._context.options, **self._options}.items():
            reader = reader.option(name, value)
        return reader.load(path)

    def csv(self, path: str) -> DataFrame:
        return self._load("csv", path)

    def json(self, path: str) -> DataFrame:
        return self._load("json", path)

    def parquet(self, path: str) -> DataFrame:
        return self._load("parquet", path)

    def text(self, path: str) -> DataFrame:
        return self._load("text", path)


class _Writer:
    def __init__(self, context: PPMLContext, df: DataFrame, mode: Mode, key: str | None) -> None:
        self._context, self._df, self._mode, self._key = context, df, mode, key
        self._options: dict[str, str] = {}
        self._save_mode = "error"

    def option(self, name: str, value: Any) -> _Writer:  # noqa: ANN401 - as Spark's
        self._options[name] = str(value).lower() if isinstance(value, bool) else str(value)
        return self

    def mode(self, save_mode: str) -> _Writer:
        self._save_mode = {"default": "error", "errorifexists": "error"}.get(save_mode.lower(), save_mode.lower())
        return self

    def _save(self, file_format: str, path: str) -> None:
        if self._save_mode == "ignore":
            from ppml.data.manifest import read_manifest
            from ppml.engines.spark.source import keyring_for

            if read_manifest(path, keyring_for(self._context.options)) is not None:
                return
        if self._save_mode == "error":
            from ppml.data.dataset import _check_target

            _check_target(path, None, "error")
        writer = self._df.write.format("ppml").option("format", file_format).option("mode", self._mode.value)
        if self._key:
            writer = writer.option("key", self._key)
        for name, value in {**self._context.options, **self._options}.items():
            writer = writer.option(name, value)
        writer.mode("overwrite" if self._save_mode in ("overwrite", "error", "ignore") else "append").save(path)

    def csv(self, path: str) -> None:
        self._save("csv", path)

    def json(self, path: str) -> None:
        self._save("json", path)

    def parquet(self, path: str) -> None:
        self._save("parquet", path)

    def text(self, path: str) -> None:
        self._save("text", path)


KEYRING_CONF = "spark.ppml.keyring"


class PPMLContext:
    """BigDL's ``PPMLContext`` API over the ``ppml`` data source."""

    def __init__(self, spark: SparkSession, keys: Mapping[str, str] | None = None,
                 options: Mapping[str, str] | None = None) -> None:
        self.spark = spark
        self.keys = dict(keys or {})
        self.options = dict(options or {})
        # `ppml submit` puts the key ring (broker URL, CA path, attester: no secret) in the Spark conf; data
        # source workers cannot read the conf, so the context passes it on as the `keyring` option.
        session_keyring = spark.conf.get(KEYRING_CONF, None)
        if session_keyring and "keyring" not in self.options:
            self.options["keyring"] = session_keyring

    def _key(self, name: str) -> str | None:
        if not name:
            if len(self.keys) == 1:
                return next(iter(self.keys.values()))
            return None
        if name not in self.keys:
            raise ConfigError(f"no primary key named {name!r}; known: {', '.join(self.keys) or 'none'}")
        return self.keys[name]

    def read(self, crypto_mode: str | Mode, primary_key_name: str = "") -> _Reader:
        """A reader for data encrypted in ``crypto_mode`` (keys are found from the files themselves)."""
        return _Reader(self, Mode.parse(crypto_mode), self._key(primary_key_name))

    def write(self, df: DataFrame, crypto_mode: str | Mode, primary_key_name: str = "") -> _Writer:
        """A writer that encrypts ``df`` in ``crypto_mode`` under the named primary key."""
        return _Writer(self, df, Mode.parse(crypto_mode), self._key(primary_key_name))

    def sql(self, query: str) -> DataFrame:
        """Run SQL on the session."""
        return self.spark.sql(query)
