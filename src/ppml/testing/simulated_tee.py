"""Helpers that set up the simulated TEE for development and tests: a persistent simulator key and an attester.

The simulated TEE proves nothing (see :mod:`ppml.attestation.collectors.simulated`); these helpers exist so
that a developer's laptop and CI can run the whole attestation flow without TEE hardware.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ppml._keyfiles import load_or_create_ed25519_key
from ppml.attestation.collectors.simulated import SimulatedAttester, code_measurement

__all__ = ["load_or_create_simulator_key", "simulated_attester"]

log = logging.getLogger(__name__)


def load_or_create_simulator_key(path: str | Path) -> Ed25519PrivateKey:
    """Load the Ed25519 simulator key at ``path`` (PEM, PKCS#8), creating it first if it does not exist.

    A new key is written atomically with mode 0600, so a crash never leaves half a key behind. Two processes
    creating the same file at the same moment each get their own key and the last rename wins: create the key
    once, before starting parallel workers.

    Raises:
        ConfigError: the file exists but is not an unencrypted PEM Ed25519 private key, or other users can read
            it (a leaked simulator key forges evidence that a broker trusting it accepts).
    """
    return load_or_create_ed25519_key(path)


def simulated_attester(key_path: str | Path | None = None, **overrides: Any) -> SimulatedAttester:
    """A :class:`SimulatedAttester` whose MRENCLAVE is :func:`code_measurement` of the installed ``ppml``.

    ``key_path`` names a persistent key (see :func:`load_or_create_simulator_key`); without it the key is
    ephemeral and a verifier must be given ``attester.public_key``. ``overrides`` are passed to
    :class:`SimulatedAttester` (``mr_enclave``, ``mr_signer``, ``isv_prod_id``, ``isv_svn``, ``debug``, ``clock``).
    """
    key = Ed25519PrivateKey.generate() if key_path is None else load_or_create_simulator_key(key_path)
    overrides.setdefault("mr_enclave", code_measurement())
    return SimulatedAttester(key, **overrides)
