"""Secrets that refuse to leak through repr, logs, pickling or Spark closures."""

from __future__ import annotations

import hmac
from typing import NoReturn


class Secret:
    """Base of every secret holder: redacted ``repr``, constant-time ``==``, no pickling.

    Pickling raises, so a secret cannot be shipped inside a Spark closure or written to disk by
    accident: executors must fetch keys from the KMS themselves.
    """

    __slots__ = ()

    def insecure_bytes(self) -> bytes:
        """The raw secret bytes. Only crypto primitives may call this; never log the result."""
        raise NotImplementedError

    def _describe(self) -> str:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._describe()}, redacted>"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return hmac.compare_digest(self.insecure_bytes(), other.insecure_bytes())  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return id(self)

    def __reduce__(self) -> NoReturn:
        raise TypeError(f"{type(self).__name__} cannot be pickled: fetch keys from the KMS where they are needed")

    def __getstate__(self) -> NoReturn:
        raise TypeError(f"{type(self).__name__} cannot be pickled: fetch keys from the KMS where they are needed")


class SecretKey(Secret):
    """Raw symmetric key material of 16, 24 or 32 bytes."""

    __slots__ = ("_material",)

    def __init__(self, material: bytes) -> None:
        if not isinstance(material, (bytes, bytearray)) or len(material) not in (16, 24, 32):
            raise ValueError("a secret key must be 16, 24 or 32 bytes")
        self._material = bytes(material)

    def __len__(self) -> int:
        return len(self._material)

    def _describe(self) -> str:
        return f"{len(self._material) * 8}-bit"

    def insecure_bytes(self) -> bytes:
        """Return the raw key bytes. Only crypto primitives may call this; never log the result."""
        return self._material
