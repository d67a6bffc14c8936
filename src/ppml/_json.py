"""Strict JSON for security documents: a key given twice, or NaN/Infinity, is an error, never silently resolved.

Python's ``json`` keeps the last of two equal keys; a token or policy read that way could mean one thing to us and
another to the tool that wrote or checked it.
"""

from __future__ import annotations

import json
from typing import Any


class DuplicateKey(ValueError):
    """A JSON object repeats ``key``."""

    def __init__(self, key: str) -> None:
        super().__init__(f"duplicate key {key!r}")
        self.key = key


def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook`` that refuses repeated keys."""
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise DuplicateKey(key)
        result[key] = value
    return result


def _no_constant(name: str) -> Any:  # noqa: ANN401 - the json hook's signature
    raise ValueError(f"{name} is not JSON")


def strict_loads(text: str | bytes) -> Any:  # noqa: ANN401 - any JSON value
    """Parse JSON refusing duplicate keys and NaN/Infinity; every failure is a ``ValueError``."""
    return json.loads(text, object_pairs_hook=unique_keys, parse_constant=_no_constant)


STRICT_DECODER = json.JSONDecoder(object_pairs_hook=unique_keys, parse_constant=_no_constant)
