"""TPC-H on encrypted data vs plaintext, same engine, same machine, same run.

    .venv/bin/python bench/tpch.py --scale 1 --engine duckdb [--repeat 3] [--queries 1-22]

The baseline is the engine's own Parquet reader over the plaintext tables; the encrypted side reads the
same tables as ``.ppml``-container datasets through ppml. Queries alternate plain / encrypted and each
time is the best of ``--repeat`` runs. Prints per-query times, ratios and the geometric mean.
Targets (issue 3): DuckDB <= 1.10, Spark <= 1.15.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from ppml.engines.registry import open_engine
from ppml.workloads.tpch import generate, parse_queries, query_text
from ppml.workloads.tpch.pipeline import encrypt_tables, geometric_mean, register_encrypted, register_plain
from ppml.workloads.workspace import Workspace


def prepare(root: Path, scale: float) -> tuple[Workspace, Path, dict[str, str]]:
    work = Workspace.create(root)
    plain = root / "plain"
    if not (plain / "lineitem.parquet").exists():
        print(f"generating TPC-H SF {scale:g} ...", flush=True)
        generate(plain, scale, overwrite=True)
    encrypted = root / "encrypted"
    key_uri = work.ensure_key("bench")
    if not (encrypted / "lineitem").exists():
        print("encrypting ...", flush=True)
        encrypt_tables(plain, encrypted, work.keyring, key_uri=key_uri)
    return work, plain, {t: str(encrypted / t) for t in os.listdir(encrypted)}


def best(engine, sql: str, repeat: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        engine.query(sql)
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--engine", choices=["duckdb", "spark"], default="duckdb")
    parser.add_argument("--queries", default="1-22")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--data", default=None, help="working directory (default .work/tpch-sf<scale>)")
    args = parser.parse_args()
    root = Path(args.data or f".work/tpch-sf{args.scale:g}")
    work, plain_dir, datasets = prepare(root, args.scale)
    plain = open_engine(args.engine, work.keyring)
    register_plain(plain, plain_dir)
    encrypted = plain if args.engine == "spark" else open_engine(args.engine, work.keyring)
    if args.engine == "spark":  # one session: keep both sets of tables under different names
        for table, url in datasets.items():
            encrypted.register(f"enc_{table}", url)
    else:
        register_encrypted(encrypted, datasets)
    rows = []
    for n in parse_queries(args.queries):
        sql = query_text(n)
        encrypted_sql = sql if args.engine == "duckdb" else _rename(sql, datasets)
        best(plain, sql, 1), best(encrypted, encrypted_sql, 1)  # warm-up: the OS page cache, Spark's JIT
        plain_s, encrypted_s = best(plain, sql, args.repeat), best(encrypted, encrypted_sql, args.repeat)
        rows.append((n, plain_s, encrypted_s))
        print(f"Q{n:02d}  plain {plain_s:8.3f} s   encrypted {encrypted_s:8.3f} s   ratio {encrypted_s / plain_s:5.2f}",
              flush=True)
    ratios = [e / p for _, p, e in rows]
    print(f"\n{args.engine}, TPC-H SF {args.scale:g}, best of {args.repeat}: "
          f"total plain {sum(p for _, p, _ in rows):.2f} s, encrypted {sum(e for _, _, e in rows):.2f} s, "
          f"geometric mean ratio {geometric_mean(ratios):.3f}")


def _rename(sql: str, datasets: dict[str, str]) -> str:
    import re

    for table in sorted(datasets, key=len, reverse=True):
        sql = re.sub(rf"\b{table}\b", f"enc_{table}", sql)
    return sql


if __name__ == "__main__":
    main()
