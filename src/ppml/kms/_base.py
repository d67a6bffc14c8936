"""The one protocol every key management backend implements.

The public methods validate arguments and turn any backend failure into ``KeyProviderError``; backends
override only the narrow ``_wrap`` / ``_unwrap`` (and, where they manage keys, ``_create`` and friends).
The ``wrap_key`` / ``unwrap_key`` pair mirrors pyarrow's ``KmsClient``, so one backend serves both
``.ppml`` files and Parquet modular encryption.
"""

from __future__ import annotations

import os
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

from ppml._secrets import SecretKey
from ppml.errors import ConfigError, KeyProviderError, PPMLError

DATA_KEY_SIZE = 32
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_URI = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*):(?P<name>.+)")


@dataclass(frozen=True, slots=True)
class KeyRef:
    """A primary key's URI, split into the backend scheme and the backend-specific key name."""

    scheme: str
    name: str

    @classmethod
    def parse(cls, uri: str) -> KeyRef:
        """Parse ``scheme:name``, e.g. ``local:sales``; raise ``ConfigError`` naming the bad URI."""
        match = _URI.fullmatch(uri.strip()) if isinstance(uri, str) else None
        if match is None:
            raise ConfigError(f"invalid key URI {uri!r}: expected 'scheme:name', for example 'local:sales'")
        return cls(match["scheme"], match["name"])

    def __str__(self) -> str:
        return f"{self.scheme}:{self.name}"


@dataclass(frozen=True, slots=True)
class KeyVersion:
    """One version of a primary key; key material never appears here."""

    version: int
    created: str
    enabled: bool


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """What a KMS reports about a primary key: its URI, versions and which version wraps new keys."""

    uri: str
    primary_version: int
    versions: tuple[KeyVersion, ...]

    @property
    def enabled(self) -> bool:
        """Whether the primary version can wrap new data keys."""
        return any(v.enabled for v in self.versions if v.version == self.primary_version)


def validate_key_name(name: str) -> str:
    """Return ``name`` if it is a safe key name, else raise ``ConfigError``."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigError(f"invalid key name {name!r}: use letters, digits, '.', '_' or '-' (max 128)")
    return name


class KeyManagementService(ABC):
    """A KMS holding primary keys (KEKs) that wrap and unwrap data keys (DEKs)."""

    scheme: ClassVar[str]

    def key_uri(self, name: str) -> str:
        """The URI recorded in file headers for key ``name``."""
        return f"{self.scheme}:{name}"

    def generate_data_key(self, name: str) -> tuple[SecretKey, bytes]:
        """A fresh random 256-bit data key and its wrapping under primary key ``name``."""
        data_key = SecretKey(os.urandom(DATA_KEY_SIZE))
        return data_key, self.wrap_key(data_key, name)

    def wrap_key(self, data_key: SecretKey, name: str) -> bytes:
        """Wrap ``data_key`` under the current version of primary key ``name``."""
        validate_key_name(name)
        return self._guard(f"wrap a data key with {self.key_uri(name)}", lambda: self._wrap(data_key, name))

    def unwrap_key(self, wrapped: bytes, name: str) -> SecretKey:
        """Unwrap a data key wrapped by primary key ``name`` (any enabled version)."""
        validate_key_name(name)
        if not wrapped:
            raise KeyProviderError(f"cannot unwrap with {self.key_uri(name)}: the wrapped key is empty")
        return self._guard(f"unwrap a data key with {self.key_uri(name)}", lambda: self._unwrap(wrapped, name))

    def create_key(self, name: str) -> KeyInfo:
        """Create primary key ``name``; fails if it exists."""
        validate_key_name(name)
        return self._guard(f"create key {self.key_uri(name)}", lambda: self._create(name))

    def rotate_key(self, name: str) -> KeyInfo:
        """Add a new version of ``name`` and make it the one that wraps new data keys."""
        validate_key_name(name)
        return self._guard(f"rotate key {self.key_uri(name)}", lambda: self._rotate(name))

    def disable_key(self, name: str, version: int | None = None) -> KeyInfo:
        """Disable one version of ``name`` (all versions when ``version`` is None)."""
        validate_key_name(name)
        return self._guard(f"disable key {self.key_uri(name)}", lambda: self._disable(name, version))

    def list_keys(self) -> list[KeyInfo]:
        """Every primary key this KMS holds, without key material."""
        return self._guard("list keys", self._list)

    def _guard(self, action: str, call):  # type: ignore[no-untyped-def]
        try:
            return call()
        except PPMLError:
            raise
        except Exception as error:  # a backend's own error type; keep it as the cause
            raise KeyProviderError(f"{self.scheme}: cannot {action}: {error}") from error

    @abstractmethod
    def _wrap(self, data_key: SecretKey, name: str) -> bytes: ...

    @abstractmethod
    def _unwrap(self, wrapped: bytes, name: str) -> SecretKey: ...

    def _create(self, name: str) -> KeyInfo:
        raise KeyProviderError(f"the {self.scheme} backend cannot create keys")

    def _rotate(self, name: str) -> KeyInfo:
        raise KeyProviderError(f"the {self.scheme} backend cannot rotate keys")

    def _disable(self, name: str, version: int | None) -> KeyInfo:
        raise KeyProviderError(f"the {self.scheme} backend cannot disable keys")

    def _list(self) -> list[KeyInfo]:
        raise KeyProviderError(f"the {self.scheme} backend cannot list keys")
