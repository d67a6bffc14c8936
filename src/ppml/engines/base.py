"""One small protocol both engines implement, so workloads are written once."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import pyarrow as pa

from ppml.data import Manifest


class QueryEngine(Protocol):
    """Register encrypted datasets as tables, run SQL, write results encrypted."""

    name: str

    def register(self, table: str, url: str, *, file_format: str | None = None, mode: str | None = None,
                 options: Mapping[str, Any] | None = None) -> None:
        """Make the dataset at ``url`` queryable as ``table``."""

    def register_plain_parquet(self, table: str, paths: list[str]) -> None:
        """Make plaintext Parquet files queryable with the engine's own native reader (the baseline)."""

    def query(self, sql: str) -> pa.Table:
        """Run ``sql`` and return its result."""

    def write(self, sql: str, url: str, *, key_uri: str | None, file_format: str = "parquet", mode: str = "ppml",
              write_mode: str = "overwrite", options: Mapping[str, Any] | None = None) -> Manifest | None:
        """Write the result of ``sql`` as a dataset at ``url``."""

    def close(self) -> None:
        """Release the engine."""
