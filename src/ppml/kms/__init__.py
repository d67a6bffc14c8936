"""Key management: one protocol, backends chosen by URI scheme (``local:``; ``azurekv:`` and ``kbs:`` next)."""

from __future__ import annotations

from ppml.kms._base import KeyInfo, KeyManagementService, KeyRef, KeyVersion, validate_key_name
from ppml.kms._registry import KeyRing, backend_class, known_backends, register_backend

__all__ = [
    "KeyInfo",
    "KeyManagementService",
    "KeyRef",
    "KeyRing",
    "KeyVersion",
    "backend_class",
    "known_backends",
    "register_backend",
    "validate_key_name",
]
