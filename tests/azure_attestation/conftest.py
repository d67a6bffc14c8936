"""The loopback MAA stand-in as a fixture."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.azure_attestation.support import FakeMaa, serve


@pytest.fixture
def fake_maa(tmp_path: Path) -> Iterator[FakeMaa]:
    with serve(tmp_path) as fake:
        yield fake
