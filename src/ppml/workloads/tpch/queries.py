"""The 22 TPC-H query texts (package data) and the ``1,3,5-7`` syntax for choosing some of them.

Each ``queries/qNN.sql`` is one statement with the standard validation parameters, written once for both
DuckDB 2.0 and Spark SQL 4.0, without a trailing semicolon so callers can wrap or embed it.
"""

from __future__ import annotations

from importlib.resources import files

from ppml.errors import ConfigError

QUERIES: tuple[int, ...] = tuple(range(1, 23))


def query_text(n: int) -> str:
    """The SQL of TPC-H query ``n`` (1-22), without trailing whitespace."""
    _check_query_number(n)
    return files("ppml.workloads.tpch").joinpath("queries", f"q{n:02d}.sql").read_text(encoding="utf-8").rstrip()


def parse_queries(spec: str) -> list[int]:
    """Query numbers from a spec such as ``"1-22"``, ``"1,3,5-7"`` or ``"6"``, in the order given.

    Repeated numbers are kept once, at their first place. Anything else (an empty item, a reversed range,
    a number outside 1-22) is a ``ConfigError`` that quotes the spec.
    """
    chosen: list[int] = []
    items = [item.strip() for item in spec.split(",")]
    if not spec.strip():
        raise ConfigError("TPC-H query list is empty; use e.g. '1-22', '1,3,5-7' or '6'")
    for item in items:
        for n in _parse_item(item, spec):
            if n not in chosen:
                chosen.append(n)
    return chosen


def _parse_item(item: str, spec: str) -> range:
    """One comma-separated item: ``N`` or ``N-M`` with N <= M, both within 1-22."""
    low_text, dash, high_text = item.partition("-")
    bounds = (low_text.strip(), high_text.strip()) if dash else (low_text.strip(), low_text.strip())
    if not all(text.isdigit() and text.isascii() for text in bounds):
        raise ConfigError(f"TPC-H query list {spec!r}: {item!r} is not a query number or a range like 5-7")
    low, high = int(bounds[0]), int(bounds[1])
    for n in (low, high):
        if n not in QUERIES:
            raise ConfigError(f"TPC-H query list {spec!r}: there is no query {n}; queries are numbered 1-22")
    if low > high:
        raise ConfigError(f"TPC-H query list {spec!r}: range {item!r} runs backwards")
    return range(low, high + 1)


def _check_query_number(n: int) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n not in QUERIES:
        raise ConfigError(f"there is no TPC-H query {n!r}; queries are numbered 1-22")
