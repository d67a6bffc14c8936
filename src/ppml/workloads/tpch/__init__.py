"""The TPC-H workload: data generation, the 22 queries, and checks against the official SF1 answers.

Engine-agnostic: nothing here imports DuckDB or Spark (``validate`` does, lazily, when it runs them).

* ``generate(dir, scale)`` writes ``<dir>/<table>.parquet`` for the 8 ``TABLES`` with tpchgen-cli.
* ``query_text(n)`` is the SQL of query ``n``, one text for DuckDB and Spark; ``parse_queries("1,3-5")``.
* ``check_answer(n, table)`` checks a result against the SF1 answer; ``compare_tables(a, b)`` checks two
  results of the same query against each other.
"""

from __future__ import annotations

from ppml.workloads.tpch.answers import CheckResult, check_answer, compare_tables, load_answer, read_answer
from ppml.workloads.tpch.datagen import FORMATS, TABLES, find_tpchgen, generate
from ppml.workloads.tpch.queries import QUERIES, parse_queries, query_text

__all__ = [
    "FORMATS",
    "QUERIES",
    "TABLES",
    "CheckResult",
    "check_answer",
    "compare_tables",
    "find_tpchgen",
    "generate",
    "load_answer",
    "parse_queries",
    "query_text",
    "read_answer",
]
