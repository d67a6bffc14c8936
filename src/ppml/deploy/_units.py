"""Memory sizes as Spark and Kubernetes spell them, in MiB, so EPC and heap sizes can be compared."""

from __future__ import annotations

import re

from ppml.errors import ConfigError

_SIZE = re.compile(r"^\s*(\d+)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)
_SHIFT = {"k": -10, "": 0, "m": 0, "g": 10, "t": 20}


def parse_mib(text: str, *, what: str) -> int:
    """``"4g"``, ``"512m"``, ``"16Gi"``, ``"2048"`` (MiB, Spark's default unit) -> MiB; at least 1."""
    match = _SIZE.match(str(text))
    if not match:
        raise ConfigError(f"{what}: {text!r} is not a size (e.g. 512m, 4g, 16Gi)")
    number, unit = int(match.group(1)), match.group(2).lower()
    shift = _SHIFT[unit]
    mib = number << shift if shift >= 0 else number >> -shift
    if mib < 1:
        raise ConfigError(f"{what}: {text!r} is less than 1 MiB")
    return mib


def next_power_of_two(mib: int) -> int:
    """Gramine needs a power-of-two enclave size (without EDMM)."""
    return 1 << (mib - 1).bit_length()


def format_mib(mib: int) -> str:
    """MiB -> the shortest exact Gramine/Spark size string (``16G``, ``1536M``)."""
    return f"{mib >> 10}G" if mib % 1024 == 0 else f"{mib}M"
