"""Secret key bytes that refuse to leak through repr, logs, pickling or Spark closures."""

from __future__ import annotations

import hmac
from typing import NoReturn


class SecretKey:
    """Raw symmetric key material.

    ``repr`` shows only the length. Pickling raises, so a key cannot be shipped inside a Spark closure or
    written to disk by accident: executors must fetch keys from the KMS themselves.
    """

    __slots__ = ("_material",)

    def __init__(self, material: bytes) -> None:
        if not isinstance(material, (bytes, bytearray)) or len(material) not in (16, 24, 32):
            raise ValueError("a secret key must be 16, 24 or 32 bytes")
        self._material = bytes(material)

    def __len__(self) -> int:
        return len(self._material)

    def __repr__(self) -> str:
        return f"<SecretKey {len(self._material) * 8}-bit, redacted>"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SecretKey):
            return NotImplemented
        return hmac.compare_digest(self._material, other._material)

    def __hash__(self) -> int:
        return id(self)

    def __reduce__(self) -> NoReturn:
        raise TypeError("SecretKey cannot be pickled: fetch keys from the KMS where they are needed")

    def __getstate__(self) -> NoReturn:
        raise TypeError("SecretKey cannot be pickled: fetch keys from the KMS where they are needed")

    def insecure_bytes(self) -> bytes:
        """Return the raw key bytes. Only crypto primitives may call this; never log the result."""
        return self._material
