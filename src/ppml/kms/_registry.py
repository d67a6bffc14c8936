"""Backends chosen by URI scheme through a sorted, lazy registry (the fsspec model).

A backend's module is imported on first use, so ``import ppml`` never pulls in an Azure SDK; a missing
optional dependency fails with the extra to install.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from ppml.errors import ConfigError
from ppml.kms._base import KeyManagementService, KeyRef

_KNOWN: dict[str, tuple[str, str]] = {
    "azurekv": ("ppml.kms.azurekv:AzureKeyVault", ""),
    "kbs": ("ppml.kms.kbs:KbsKeyManagement", ""),
    "local": ("ppml.kms.local:LocalKeystore", ""),
}
assert list(_KNOWN) == sorted(_KNOWN), "keep the registry sorted"

known_backends: Mapping[str, tuple[str, str]] = MappingProxyType(_KNOWN)


def register_backend(scheme: str, target: str, *, extra: str = "", clobber: bool = False) -> None:
    """Register ``target`` (``"module:Class"``) for URIs ``scheme:...``."""
    if scheme in _KNOWN and not clobber:
        raise ConfigError(f"a KMS backend is already registered for scheme {scheme!r}")
    _KNOWN[scheme] = (target, extra)


def backend_class(scheme: str) -> type[KeyManagementService]:
    """Import and return the backend class registered for ``scheme``."""
    if scheme not in _KNOWN:
        choices = ", ".join(f"{s}:" for s in sorted(_KNOWN))
        raise ConfigError(f"unknown KMS scheme {scheme!r}; known schemes: {choices}")
    target, extra = _KNOWN[scheme]
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        hint = f"; install it with: pip install 'ppml[{extra}]'" if extra else ""
        raise ConfigError(f"the {scheme}: KMS backend is not available ({error}){hint}") from error
    cls: type[KeyManagementService] = getattr(module, class_name)
    return cls


class KeyRing:
    """Routes key URIs to backend instances, built once each from per-scheme options.

    One job may use keys of several KMSs at once (one per data owner); each is opened on first use.
    """

    def __init__(self, options: Mapping[str, Mapping[str, Any]] | None = None, *,
                 backends: tuple[KeyManagementService, ...] = ()) -> None:
        self._options = {scheme: dict(values) for scheme, values in (options or {}).items()}
        self._backends: dict[str, KeyManagementService] = {b.scheme: b for b in backends}

    @property
    def options(self) -> dict[str, dict[str, Any]]:
        """The per-scheme options this ring was built from: picklable, holding no secret, so a Spark
        executor can rebuild the same ring and fetch keys itself."""
        return {scheme: dict(values) for scheme, values in self._options.items()}

    def backend(self, scheme: str) -> KeyManagementService:
        """The backend instance for ``scheme``, created on first use."""
        if scheme not in self._backends:
            self._backends[scheme] = backend_class(scheme)(**self._options.get(scheme, {}))
        return self._backends[scheme]

    def resolve(self, uri: str) -> tuple[KeyManagementService, str]:
        """The backend and key name that a key URI designates."""
        ref = KeyRef.parse(uri)
        return self.backend(ref.scheme), ref.name
