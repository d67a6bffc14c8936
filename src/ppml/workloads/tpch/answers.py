"""Check query results against the official TPC-H SF1 answers, and engine results against each other.

The answers (``answers/sf1/qNN.csv``, see ``SOURCE.md`` there) are pipe-separated text with a header
row, no quoting and significant leading or trailing spaces, so they are split by hand, never trimmed.

Results are compared by position, one rule per column role, as the answers' README asks:

====  ==========================  ==================================================================
code  role                        rule
====  ==========================  ==================================================================
s     string                      equal exactly, spaces included; the result must hold a string
d     date                        a DATE that prints as the answer's ``YYYY-MM-DD``
i     count, key, year, size      a number equal to the answer's integer exactly
m     money (and quantity) sums   a number within 0.01 of the answer (absolute)
r     average or ratio            a number within 1e-6 of the answer, relative to the answer
====  ==========================  ==================================================================

Roles come from the query text (``COLUMN_ROLES``), not from the result's types, so a key returned as a
float or a sum that lost its cents is caught rather than excused.
"""

from __future__ import annotations

import datetime
import math
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

import pyarrow as pa

from ppml.errors import ConfigError, InputError
from ppml.workloads.tpch.queries import QUERIES

COLUMN_ROLES: dict[int, str] = {
    1: "ssmmmmrrri", 2: "mssissss", 3: "imdi", 4: "si", 5: "sm", 6: "m", 7: "ssim", 8: "ir", 9: "sim",
    10: "ismmssss", 11: "im", 12: "sii", 13: "ii", 14: "r", 15: "isssm", 16: "ssii", 17: "m", 18: "siidmm",
    19: "m", 20: "ss", 21: "si", 22: "sim",
}
MONEY_TOLERANCE = Decimal("0.01")
RATIO_TOLERANCE = Decimal("1e-6")
ENGINE_TOLERANCE = 1e-9
_RULES = {"i": "counts and keys must be equal", "m": "money sums must agree within 0.01",
          "r": "averages and ratios must agree within 1e-6 relative"}


@dataclass(frozen=True)
class CheckResult:
    """The verdict on one query's result: ``message`` describes the first difference, or is None."""

    query: int
    ok: bool
    rows_expected: int
    rows_actual: int
    message: str | None = None
    seconds: float | None = None

    def __str__(self) -> str:
        timing = "" if self.seconds is None else f" in {self.seconds:.2f} s"
        if self.ok:
            return f"q{self.query:02d} ok: {self.rows_actual} rows{timing}"
        return f"q{self.query:02d} FAILED{timing}: {self.message}"


@dataclass(frozen=True)
class Answer:
    """One answer file as text: its header and its rows, every field exactly as written."""

    header: list[str]
    rows: list[list[str]]


def read_answer(n: int, answers_dir: str | Path | None = None) -> Answer:
    """Split ``qNN.csv`` from ``answers_dir`` (default: the shipped SF1 answers) into header and rows."""
    source = _answer_file(n, answers_dir)
    try:
        text = source.read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError):
        raise InputError(f"{source}: no answer file for TPC-H query {n}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"{source}: cannot read the answer to TPC-H query {n}: {error}") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if not lines:
        raise InputError(f"{source}: answer file is empty (expected a header row)")
    header, rows = lines[0].split("|"), [line.split("|") for line in lines[1:]]
    for number, row in enumerate(rows, start=2):
        if len(row) != len(header):
            raise InputError(f"{source}: line {number} has {len(row)} fields, the header has {len(header)}")
    return Answer(header, rows)


def load_answer(n: int, answers_dir: str | Path | None = None) -> pa.Table:
    """The answer as an Arrow table typed by column role (strings, dates, int64, decimals, doubles)."""
    answer = read_answer(n, answers_dir)
    columns = [[row[index] for row in answer.rows] for index in range(len(answer.header))]
    arrays = []
    for name, role, values in zip(answer.header, _roles(n, answer), columns, strict=True):
        try:
            arrays.append(_typed_array(role, values))
        except (ValueError, ArithmeticError, pa.ArrowException) as error:
            raise InputError(f"{_answer_file(n, answers_dir)}: column {name} does not parse: {error}") from None
    return pa.Table.from_arrays(arrays, names=answer.header)


def check_answer(n: int, result: pa.Table, answers_dir: str | Path | None = None) -> CheckResult:
    """Compare ``result`` with the official answer to query ``n`` by the rules in this module's docstring."""
    answer = read_answer(n, answers_dir)
    roles = _roles(n, answer)
    expected, actual = len(answer.rows), result.num_rows

    def verdict(message: str | None) -> CheckResult:
        return CheckResult(n, message is None, expected, actual, None if message is None else f"q{n:02d}: {message}")

    if result.num_columns != len(answer.header):
        return verdict(f"expected {len(answer.header)} columns ({', '.join(answer.header)}), "
                       f"got {result.num_columns} ({', '.join(result.column_names)})")
    if actual != expected:
        return verdict(f"expected {expected} rows, got {actual}")
    rows = _rows(result)
    for index, (want, got) in enumerate(zip(answer.rows, rows, strict=True)):
        for column, (role, text, value) in enumerate(zip(roles, want, got, strict=True)):
            difference = _cell_difference(role, text, value)
            if difference is not None:
                where = f"row {index + 1}, column {column + 1} ({answer.header[column]})"
                return verdict(f"{where}: {difference}{_order_hint(index, got, answer.rows, roles)}")
    return verdict(None)


def compare_tables(a: pa.Table, b: pa.Table) -> str | None:
    """The first difference between two results of the same query, or None if they are the same.

    Meant for one query run two ways (encrypted and plaintext, or two engines): same shape, same rows in
    the same order, strings and dates equal, numbers equal within 1e-9 relative (integers exactly).
    Column names and Arrow types are not compared, only values by position.
    """
    if a.num_columns != b.num_columns:
        return f"{a.num_columns} columns ({', '.join(a.column_names)}) vs {b.num_columns} ({', '.join(b.column_names)})"
    if a.num_rows != b.num_rows:
        return f"{a.num_rows} rows vs {b.num_rows}"
    for index, (left, right) in enumerate(zip(_rows(a), _rows(b), strict=True)):
        for column, (x, y) in enumerate(zip(left, right, strict=True)):
            if not _same_value(x, y):
                return f"row {index + 1}, column {column + 1} ({a.column_names[column]}): {x!r} vs {y!r}"
    return None


def _answer_file(n: int, answers_dir: str | Path | None) -> Traversable | Path:
    if isinstance(n, bool) or n not in QUERIES:
        raise ConfigError(f"there is no TPC-H query {n!r}; queries are numbered 1-22")
    name = f"q{n:02d}.csv"
    if answers_dir is None:
        return files("ppml.workloads.tpch").joinpath("answers", "sf1", name)
    return Path(answers_dir) / name


def _roles(n: int, answer: Answer) -> str:
    roles = COLUMN_ROLES[n]
    if len(roles) != len(answer.header):
        raise InputError(f"answer to TPC-H query {n} has {len(answer.header)} columns "
                         f"({', '.join(answer.header)}); the query returns {len(roles)}")
    return roles


def _rows(table: pa.Table) -> list[tuple[object, ...]]:
    """Rows as Python values, by position (column names may repeat or differ between engines)."""
    return list(zip(*(column.to_pylist() for column in table.columns), strict=True))


def _typed_array(role: str, values: list[str]) -> pa.Array:
    if role == "s":
        return pa.array(values, pa.string())
    if role == "d":
        return pa.array([datetime.date.fromisoformat(value) for value in values], pa.date32())
    if role == "i":
        return pa.array([int(value) for value in values], pa.int64())
    if role == "m":
        return pa.array([Decimal(value) for value in values])
    return pa.array([float(value) for value in values], pa.float64())


def _cell_difference(role: str, expected: str, actual: object) -> str | None:
    """Why ``actual`` fails the ``role`` rule against the answer text ``expected``, or None if it passes."""
    if role == "s":
        return None if isinstance(actual, str) and actual == expected else f"expected {expected!r}, got {actual!r}"
    if role == "d":
        is_date = isinstance(actual, datetime.date) and not isinstance(actual, datetime.datetime)
        if is_date and actual.isoformat() == expected:
            return None
        return f"expected date {expected}, got {actual!r}"
    want, got = _parse_number(expected), _as_decimal(actual)
    if want is None:
        return f"the answer {expected!r} is not a number"
    if got is None:
        return f"expected the number {expected}, got {actual!r}"
    if role == "i":
        ok = got == want
    elif role == "m":
        ok = abs(got - want) <= MONEY_TOLERANCE
    else:
        ok = abs(got - want) <= RATIO_TOLERANCE * abs(want)
    return None if ok else f"expected {expected}, got {got} ({_RULES[role]})"


def _as_decimal(value: object) -> Decimal | None:
    """A result's number as an exact Decimal (floats via their shortest repr), or None.

    NaN, infinities and non-numbers give None; so do booleans and numbers held in strings, which are
    type errors in a result even when their text looks right.
    """
    if not _is_number(value):
        return None
    try:
        number = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def _parse_number(text: str) -> Decimal | None:
    """An answer field as an exact Decimal, or None if it is not a plain finite number."""
    try:
        number = Decimal(text)
    except InvalidOperation:
        return None
    return number if number.is_finite() and text == text.strip() else None


def _order_hint(index: int, row: tuple[object, ...], expected_rows: list[list[str]], roles: str) -> str:
    """Point out when the differing row is an expected row from elsewhere: the order is wrong."""
    for other, want in enumerate(expected_rows):
        if other != index and all(_cell_difference(r, t, v) is None for r, t, v in zip(roles, want, row, strict=True)):
            return f"; this row is expected at row {other + 1} (wrong row order?)"
    return ""


def _same_value(x: object, y: object) -> bool:
    """Equal, except that numbers of any type agree within ``ENGINE_TOLERANCE`` (integers exactly)."""
    if x is None or y is None:
        return x is None and y is None
    if _is_number(x) and _is_number(y):
        if isinstance(x, int) and isinstance(y, int):
            return x == y
        fx, fy = float(x), float(y)
        if math.isnan(fx) or math.isnan(fy):
            return math.isnan(fx) and math.isnan(fy)
        return math.isclose(fx, fy, rel_tol=ENGINE_TOLERANCE, abs_tol=1e-12)
    return type(x) is type(y) and x == y


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float, Decimal)) and not isinstance(value, bool)
