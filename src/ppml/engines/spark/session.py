"""A Spark session that keeps data encrypted everywhere Spark itself moves or spills it."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any

from pyspark.sql import SparkSession

from ppml.engines.spark.source import PPMLDataSource

# Redact anything key-like from the UI, event logs and error messages; ppml never puts keys in the
# configuration, but users' own settings may.
REDACTION = r"(?i)secret|password|passphrase|token|access[.]?key|credential|private|ppml|bigdl"

TRUSTED_CONF: Mapping[str, str] = {
    "spark.authenticate": "true",  # RPC authentication; the secret is generated per application
    # AES RPC and block-transfer encryption, in Spark's default CTR mode: with AES/GCM/NoPadding, Spark 4.0.1
    # hangs fetching any task result over 1 MiB (reproduced locally; it times out after 120 s x 3 retries).
    "spark.network.crypto.enabled": "true",
    "spark.io.encryption.enabled": "true",  # shuffle files, spills and broadcast blocks on disk
    "spark.io.encryption.keySizeBits": "256",
    "spark.redaction.regex": REDACTION,
    "spark.sql.redaction.string.regex": REDACTION,
    "spark.ui.enabled": "false",
}
DEFAULT_CONF: Mapping[str, str] = {"spark.ui.showConsoleProgress": "false"}


def register(spark: SparkSession) -> SparkSession:
    """Register the ``ppml`` data source with ``spark``."""
    spark.dataSource.register(PPMLDataSource)
    return spark


def trusted_session(app_name: str = "ppml", master: str = "local[*]",
                    conf: Mapping[str, Any] | None = None) -> SparkSession:
    """A session with RPC authentication and encryption and encrypted local I/O, and ``ppml`` registered.

    Settings in ``conf`` may add to these but cannot switch them off.
    """
    # Python workers must run this interpreter, the one with ppml installed (not whatever is on PATH).
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    if master.startswith("local"):
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # a local session listens on loopback only
    builder = SparkSession.builder.appName(app_name).master(master)
    for key, value in (conf or {}).items():
        if key in TRUSTED_CONF and str(value).lower() != TRUSTED_CONF[key].lower() and key != "spark.ui.enabled":
            raise ValueError(f"{key} is fixed to {TRUSTED_CONF[key]} in a trusted session")
        builder = builder.config(key, str(value))
    for key, value in {**DEFAULT_CONF, **TRUSTED_CONF}.items():
        if key not in (conf or {}):
            builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return register(spark)
