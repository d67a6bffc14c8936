"""Test doubles shipped as product code, so users' tests (and ours) run without TEE hardware or cloud services.

Everything here is insecure by design; nothing in this package may be used to protect real data.
"""

from __future__ import annotations

from ppml.testing.simulated_tee import load_or_create_simulator_key, simulated_attester

__all__ = ["load_or_create_simulator_key", "simulated_attester"]
