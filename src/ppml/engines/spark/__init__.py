"""Spark over encrypted datasets: the ``ppml`` Python data source, a trusted session, a BigDL-style context."""

from __future__ import annotations

from ppml.engines.spark.context import PPMLContext
from ppml.engines.spark.session import register, trusted_session
from ppml.engines.spark.source import PPMLDataSource

__all__ = ["PPMLContext", "PPMLDataSource", "register", "trusted_session"]
