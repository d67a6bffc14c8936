"""Azurite for the whole run, started before the first test, so that the shared Spark session finds it too.

Spark copies the environment of the process that starts its JVM into every Python worker, once, and the
session ``spark`` fixture may start before the first Azure test (``pytest tests/engines tests/azure``). So
Azurite's connection string has to be in ``os.environ`` before any test runs: ``pytest_collection_finish``
starts Azurite as soon as an Azure test is selected, installing it first with ``scripts/ensure-azurite.sh``
(a no-op once installed, so ``make test`` works on a fresh machine), and the ``azurite`` fixture hands it
out. A failure to start is reported by every test that needs Azurite, never skipped.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from contextlib import ExitStack
from pathlib import Path

import pytest

from ppml.testing.azurite import INSTALL_SCRIPT, AzuriteEndpoint, exported, running_azurite

HERE = Path(__file__).parent
_state: dict[str, object] = {}


def pytest_collection_finish(session: pytest.Session) -> None:
    if any(Path(item.path).is_relative_to(HERE) for item in session.items):
        _start(session.config)


def _start(config: pytest.Config) -> None:
    stack = ExitStack()
    config.add_cleanup(stack.close)
    try:
        subprocess.run([str(INSTALL_SCRIPT)], check=True, capture_output=True, text=True, timeout=600)
        workdir = Path(tempfile.mkdtemp(prefix="ppml-azurite-"))
        stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        endpoint = stack.enter_context(running_azurite(workdir))
        stack.enter_context(exported(endpoint.environ()))
        _state["endpoint"] = endpoint
    except subprocess.CalledProcessError as error:
        _state["error"] = f"{INSTALL_SCRIPT} failed ({error.returncode}):\n{error.stdout}{error.stderr}"
    except Exception as error:  # noqa: BLE001 - reported by the fixture, to every test that needs it
        _state["error"] = f"Azurite did not start: {error}"


@pytest.fixture(scope="session")
def azurite(pytestconfig: pytest.Config) -> AzuriteEndpoint:
    """The session's Azurite; its connection string is in ``os.environ`` (``AZURE_STORAGE_CONNECTION_STRING``)."""
    if "endpoint" not in _state and "error" not in _state:
        _start(pytestconfig)
    if "error" in _state:
        pytest.fail(str(_state["error"]), pytrace=False)
    return _state["endpoint"]  # type: ignore[return-value]


@pytest.fixture(scope="module")
def azurite_https(tmp_path_factory: pytest.TempPathFactory, azurite: AzuriteEndpoint):  # type: ignore[no-untyped-def]
    """A second Azurite over HTTPS (self-signed), for adlfs' account-name paths, which always use https://."""
    with running_azurite(tmp_path_factory.mktemp("azurite-https"), https=True) as endpoint:
        yield endpoint
