"""Generate TPC-H tables with ``tpchgen-cli``: one file per table, written all at once or not at all.

tpchgen-cli (tpchgen-rs) produces the same data as the TPC-H kit's dbgen, so the official answers apply to
its output. Its Parquet files already carry the types both engines want: DECIMAL(15,2) money and
quantities, DATE dates, BIGINT keys and INT small counts (p_size, ps_availqty, l_linenumber).
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import sys
from collections import deque
from collections.abc import Callable
from pathlib import Path

from ppml._atomic import atomic_directory
from ppml.errors import ConfigError, PPMLError

# In the order tpchgen-cli's documentation lists them, smallest first.
TABLES: tuple[str, ...] = ("region", "nation", "supplier", "customer", "part", "partsupp", "orders", "lineitem")
FORMATS: tuple[str, ...] = ("parquet", "csv", "tbl")

# ZSTD(1) makes SF1 about a quarter smaller than the default Snappy (256 vs 347 MB). 16 MB (uncompressed)
# row groups hold about 250,000 lineitem rows: SF1 lineitem gets ~25 row groups, enough for DuckDB threads
# and Spark splits to share the file, without the per-group overhead of tpchgen-cli's 7 MiB default.
PARQUET_OPTIONS: tuple[str, ...] = ("--compression=ZSTD(1)", "--row-group-bytes=16MB")

_GENERATED = re.compile(r"Generated table (\w+) ")

Progress = Callable[[str, int, int], None]
"""Called as ``progress(table, done, total)`` as each table is written, in tpchgen-cli's order."""


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
        _run_tpchgen(executable, Path(staging), scale, fmt, progress)
    return {table: target / f"{table}.{fmt}" for table in TABLES}


def _check_scale(scale: float) -> None:
    """Reject scales tpchgen-cli would misread or that make no data (booleans, NaN, zero, negatives)."""
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale <= 0:
        raise ConfigError(f"TPC-H scale factor must be a number greater than 0, not {scale!r}")


def _run_tpchgen(executable: Path, directory: Path, scale: float, fmt: str, progress: Progress | None) -> None:
    """Generate all tables in one process (each start builds ~1 s of text pools), reporting each table.

    Progress comes from the ``Generated table X`` lines of tpchgen-cli's ``--verbose`` log; should their
    wording change, the tables are still reported, all at the end.
    """
    command = [str(executable), fmt, f"--scale-factor={float(scale)!r}", f"--output-dir={directory}",
               "--no-progress", "--verbose", *(PARQUET_OPTIONS if fmt == "parquet" else ())]
    reported: list[str] = []
    log: deque[str] = deque(maxlen=20)

    def report(table: str) -> None:
        if table in TABLES and table not in reported:
            reported.append(table)
            if progress is not None:
                progress(table, len(reported), len(TABLES))

    with subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True) as process:
        assert process.stderr is not None
        try:
            for line in process.stderr:
                log.append(line.rstrip())
                match = _GENERATED.search(line)
                if match:
                    report(match.group(1))
        except BaseException:  # a failing progress callback or Ctrl-C: do not leave tpchgen-cli writing
            process.kill()
            raise
    missing = [table for table in TABLES if not (directory / f"{table}.{fmt}").is_file()]
    if process.returncode != 0 or missing:
        detail = "\n".join(line for line in log if " INFO " not in line) or "no error output"
        raise PPMLError(f"{executable} failed to generate TPC-H tables at scale {scale} (exit code "
                        f"{process.returncode}; missing {', '.join(missing) or 'nothing'}): {detail}")
    for table in TABLES:
        report(table)
