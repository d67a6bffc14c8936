"""A bounds-checked little-endian cursor over evidence bytes, shared by the DCAP and SEV-SNP parsers.

Every read names its field, so truncated evidence says where it broke, as ``EvidenceInvalid``.
"""

from __future__ import annotations

import struct

from ppml.errors import EvidenceInvalid


class Reader:
    """Reads fields in order from ``data``; ``base`` is ``data``'s offset inside the whole evidence."""

    def __init__(self, data: bytes, what: str, base: int = 0) -> None:
        self._data = data
        self._pos = 0
        self._what = what
        self._base = base

    @property
    def pos(self) -> int:
        return self._pos

    @property
    def remaining(self) -> int:
        return len(self._data) - self._pos

    def take(self, n: int, field: str) -> bytes:
        if n < 0 or n > self.remaining:
            raise EvidenceInvalid(
                f"{self._what} truncated: {field} needs {n} bytes at offset {self._base + self._pos:#x}, "
                f"{self.remaining} left",
                reason="malformed",
            )
        out = self._data[self._pos : self._pos + n]
        self._pos += n
        return out

    def skip_to(self, offset: int, field: str) -> None:
        self.take(offset - self._pos, field)

    def u8(self, field: str) -> int:
        return self.take(1, field)[0]

    def u16(self, field: str) -> int:
        return int(struct.unpack("<H", self.take(2, field))[0])

    def u32(self, field: str) -> int:
        return int(struct.unpack("<I", self.take(4, field))[0])

    def u64(self, field: str) -> int:
        return int(struct.unpack("<Q", self.take(8, field))[0])
