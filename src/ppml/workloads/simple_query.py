"""BigDL PPML's simple query on encrypted ``people.csv``, on either engine.

Steps, as in the reference: count the names; show ``age + 1``; count the Developers aged 20 to 40; write
that selection encrypted.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.csv as pa_csv

from ppml.data import write_dataset
from ppml.engines.base import QueryEngine
from ppml.kms import KeyRing
from ppml.workloads.people import people_csv

DEVELOPERS = "select * from people where job = 'Developer' and age between 20 and 40"


@dataclass(frozen=True)
class SimpleQueryResult:
    """What the simple query found and where it wrote."""

    names: int
    age_plus_one: pa.Table
    developers: int
    expected_developers: int
    output: str


def prepare_people(url: str, keyring: KeyRing, *, rows: int, mode: str, key_uri: str | None,
                   options: dict[str, Any] | None = None, seed: int = 0) -> int:
    """Generate ``people.csv`` and store it encrypted (CSV with a header) at ``url``; returns the expected
    number of Developers aged 20 to 40."""
    data, developers = people_csv(rows, seed=seed)
    table = pa_csv.read_csv(io.BytesIO(data), convert_options=pa_csv.ConvertOptions(
        column_types={"name": pa.string(), "age": pa.int32(), "job": pa.string()}))
    write_dataset(table, url, keyring, file_format="csv", mode=mode, key_uri=key_uri, write_mode="overwrite",
                  options={"header": True, **(options or {})})
    return developers


def run_simple_query(engine: QueryEngine, input_url: str, output_url: str, *, output_mode: str,
                     key_uri: str | None, expected_developers: int, input_mode: str | None = None,
                     options: dict[str, Any] | None = None) -> SimpleQueryResult:
    """Run the four steps on ``engine``."""
    engine.register("people", input_url, mode=input_mode, options=options)
    names = engine.query("select count(name) as names from people").column(0)[0].as_py()
    sample = engine.query("select name, age + 1 as age_plus_1 from people order by name, age limit 20")
    developers = engine.query(f"select count(*) from ({DEVELOPERS}) as d").column(0)[0].as_py()
    engine.write(DEVELOPERS, output_url, key_uri=key_uri, file_format="csv", mode=output_mode,
                 write_mode="overwrite", options={"header": True, **(options or {})})
    return SimpleQueryResult(names, sample, developers, expected_developers, output_url)
