"""Helpers that set up the simulated TEE for development and tests: a persistent simulator key and an attester.

The simulated TEE proves nothing (see :mod:`ppml.attestation.collectors.simulated`); these helpers exist so
that a developer's laptop and CI can run the whole attestation flow without TEE hardware.
"""

from __future__ import annotations

import logging
import stat
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)

from ppml._atomic import atomic_write_bytes
from ppml.attestation.collectors.simulated import SimulatedAttester, code_measurement
from ppml.errors import ConfigError

__all__ = ["load_or_create_simulator_key", "simulated_attester"]

log = logging.getLogger(__name__)


def load_or_create_simulator_key(path: str | Path) -> Ed25519PrivateKey:
    """Load the Ed25519 simulator key at ``path`` (PEM, PKCS#8), creating it first if it does not exist.

    A new key is written atomically with mode 0600, so a crash never leaves half a key behind. Two processes
    creating the same file at the same moment each get their own key and the last rename wins: create the key
    once, before starting parallel workers.

    Raises:
        ConfigError: the file exists but is not an unencrypted PEM Ed25519 private key.
    """
    path = Path(path)
    if not path.exists():
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
        atomic_write_bytes(path, pem, mode=0o600)
        log.info("created simulator key %s", path)
        return key
    if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("simulator key %s is accessible by other users; chmod 600 it", path)
    try:
        key = load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{path}: not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{path}: the simulator key must be Ed25519, not {type(key).__name__}")
    return key


def simulated_attester(key_path: str | Path | None = None, **overrides: Any) -> SimulatedAttester:
    """A :class:`SimulatedAttester` whose MRENCLAVE is :func:`code_measurement` of the installed ``ppml``.

    ``key_path`` names a persistent key (see :func:`load_or_create_simulator_key`); without it the key is
    ephemeral and a verifier must be given ``attester.public_key``. ``overrides`` are passed to
    :class:`SimulatedAttester` (``mr_enclave``, ``mr_signer``, ``isv_prod_id``, ``isv_svn``, ``debug``, ``clock``).
    """
    key = Ed25519PrivateKey.generate() if key_path is None else load_or_create_simulator_key(key_path)
    overrides.setdefault("mr_enclave", code_measurement())
    return SimulatedAttester(key, **overrides)
