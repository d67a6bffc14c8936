"""The Spark applications the workload image runs under ``ppml submit``: TPC-H and the simple query.

They take the Spark session spark-submit made (master, pod templates, security settings) and the key ring that
``ppml submit`` put in ``spark.ppml.keyring``; executors then attest to the key broker by themselves. Inputs and
outputs are URLs (``abfss://`` on Azure); results are written back encrypted.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from ppml.deploy.submit import KEYRING_CONF
from ppml.errors import ConfigError
from ppml.kms import KeyRing


def session_keyring(spark: Any) -> KeyRing:  # noqa: ANN401 - a SparkSession
    """The key ring described by the session's ``spark.ppml.keyring`` (JSON, no secret)."""
    text = spark.conf.get(KEYRING_CONF, None)
    if not text:
        raise ConfigError(f"{KEYRING_CONF} is not set: submit with ppml submit --kbs-url (or set it to the key "
                          "ring's JSON options)")
    try:
        options = json.loads(text)
    except ValueError:
        raise ConfigError(f"{KEYRING_CONF} is not JSON") from None
    if not isinstance(options, dict) or not all(isinstance(v, dict) for v in options.values()):
        raise ConfigError(f"{KEYRING_CONF} must map KMS schemes to their options")
    return KeyRing(options)


def _session(spark: Any) -> Any:  # noqa: ANN401
    if spark is not None:
        return spark
    from pyspark.sql import SparkSession

    return SparkSession.builder.appName("ppml").getOrCreate()  # spark-submit supplies master and settings


def tpch(argv: Sequence[str], *, spark: Any = None) -> list[dict[str, Any]]:  # noqa: ANN401
    """``tpch.py DATA OUTPUT [--queries 1-22] --key URI``: run TPC-H on encrypted tables, write results encrypted."""
    from ppml.engines.registry import SparkEngine
    from ppml.workloads.tpch.pipeline import join_url, register_encrypted, run_queries, write_results, write_timings
    from ppml.workloads.tpch.queries import parse_queries

    parser = argparse.ArgumentParser(prog="tpch.py", description=tpch.__doc__)
    parser.add_argument("data", help="URL of the encrypted tables (ppml tpch encrypt)")
    parser.add_argument("output", help="URL for the encrypted results")
    parser.add_argument("--queries", default="1-22")
    parser.add_argument("--key", required=True, help="key URI for the results, e.g. kbs:tpch")
    args = parser.parse_args(list(argv))
    session = _session(spark)
    keyring = session_keyring(session)
    engine = SparkEngine(keyring, spark=session)
    try:
        register_encrypted(engine, {t: join_url(args.data, t) for t in _tables()})
        runs = run_queries(engine, parse_queries(args.queries))
    finally:
        engine.close()
    write_results(runs, args.output, keyring, key_uri=args.key)
    rows = [{"query": r.query, "seconds": round(r.seconds, 4), "rows": r.result.num_rows} for r in runs]
    write_timings(join_url(args.output, "timings.csv"), rows)
    return rows


def simple_query(argv: Sequence[str], *, spark: Any = None) -> dict[str, Any]:  # noqa: ANN401
    """``simple_query.py PEOPLE OUTPUT --key URI``: BigDL PPML's simple query on an encrypted people dataset."""
    from ppml.engines.registry import SparkEngine
    from ppml.workloads.simple_query import run_simple_query

    parser = argparse.ArgumentParser(prog="simple_query.py", description=simple_query.__doc__)
    parser.add_argument("people", help="URL of the encrypted people dataset (CSV)")
    parser.add_argument("output", help="URL for the encrypted developers")
    parser.add_argument("--key", required=True, help="key URI for the output")
    args = parser.parse_args(list(argv))
    session = _session(spark)
    engine = SparkEngine(session_keyring(session), spark=session)
    try:
        result = run_simple_query(engine, args.people, args.output, output_mode="ppml", key_uri=args.key,
                                  expected_developers=-1, options={"header": True})
    finally:
        engine.close()
    return {"names": result.names, "developers": result.developers, "output": args.output}


def _tables() -> tuple[str, ...]:
    from ppml.workloads.tpch.datagen import TABLES

    return tuple(TABLES)


def main(job: str) -> None:
    """Entry point of the job files in the image (``/opt/ppml/jobs/<job>.py``)."""
    run = {"tpch": tpch, "simple_query": simple_query}[job]
    print(json.dumps(run(sys.argv[1:]), indent=2))  # noqa: T201 - the job's report, in the driver log
