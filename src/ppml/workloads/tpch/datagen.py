"""Generate TPC-H tables with ``tpchgen-cli``: one file per table, written all at once or not at all.

tpchgen-cli (tpchgen-rs) produces the same data as the TPC-H kit's dbgen, so the official answers apply to
its output. Its Parquet files already carry the types both engines want: DECIMAL(15,2) money, DATE dates,
BIGINT keys and INT sizes and quantities of stock.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from ppml._atomic import atomic_directory
from ppml.errors import ConfigError, PPMLError

# Smallest first, so a progress display moves early; the order is also the one tpchgen-cli documents.
TABLES: tuple[str, ...] = ("region", "nation", "supplier", "customer", "part", "partsupp", "orders", "lineitem")
FORMATS: tuple[str, ...] = ("parquet", "csv", "tbl")

# ZSTD(1) makes SF1 about 30% smaller than the default Snappy for a similar read cost. 16 MB (uncompressed)
# row groups hold about 250,000 lineitem rows: SF1 lineitem gets ~25 row groups, enough for DuckDB threads
# and Spark splits to share the file, without the per-group overhead of tpchgen-cli's 7 MiB default.
PARQUET_OPTIONS: tuple[str, ...] = ("--compression=ZSTD(1)", "--row-group-bytes=16MB")

Progress = Callable[[str, int, int], None]
"""Called as ``progress(table, done, total)`` after each table is written."""


def find_tpchgen() -> Path:
    """The ``tpchgen-cli`` executable: next to the running Python first (a venv's ``bin``), then on PATH.

    Looking next to ``sys.executable`` first finds the venv's copy even when the venv is not activated.
    """
    beside = Path(sys.executable).parent / "tpchgen-cli"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("tpchgen-cli")
    if found is None:
        raise ConfigError(f"tpchgen-cli not found next to {sys.executable} or on PATH; "
                          "install it with `pip install tpchgen-cli`")
    return Path(found)


def generate(output_dir: str | Path, scale: float, *, fmt: str = "parquet", overwrite: bool = False,
             progress: Progress | None = None) -> dict[str, Path]:
    """Write the 8 TPC-H tables at ``scale`` as ``<output_dir>/<table>.<fmt>``; return table → path.

    The tables are generated into a hidden directory next to ``output_dir`` and renamed into place at the
    end, so an error or interruption never leaves a half-generated directory under the final name. An
    existing ``output_dir`` is an ``InputError`` unless ``overwrite`` is set.
    """
    _check_scale(scale)
    if fmt not in FORMATS:
        raise ConfigError(f"TPC-H output format {fmt!r} is not supported; choose one of {', '.join(FORMATS)}")
    executable = find_tpchgen()
    target = Path(output_dir)
    with atomic_directory(str(target), overwrite=overwrite) as staging:
        for done, table in enumerate(TABLES, start=1):
            _run_tpchgen(executable, Path(staging), table, scale, fmt)
            if progress is not None:
                progress(table, done, len(TABLES))
    return {table: target / f"{table}.{fmt}" for table in TABLES}


def _check_scale(scale: float) -> None:
    """Reject scales tpchgen-cli would misread or that make no data (booleans, NaN, zero, negatives)."""
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale <= 0:
        raise ConfigError(f"TPC-H scale factor must be a number greater than 0, not {scale!r}")


def _run_tpchgen(executable: Path, directory: Path, table: str, scale: float, fmt: str) -> None:
    """Generate one table; one process per table lets tpchgen-cli use every core on the big ones."""
    command = [str(executable), fmt, f"--scale-factor={float(scale)!r}", f"--output-dir={directory}",
               f"--tables={table}", "--no-progress", "--quiet"]
    if fmt == "parquet":
        command += PARQUET_OPTIONS
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    produced = directory / f"{table}.{fmt}"
    if completed.returncode != 0 or not produced.is_file():
        detail = (completed.stderr or completed.stdout).strip()[-2000:] or "no output"
        raise PPMLError(f"{executable} failed to generate TPC-H table {table} at scale {scale} "
                        f"(exit code {completed.returncode}): {detail}")
