"""Where each segment of a ``.ppml`` body lies, computed from the header alone.

The body is a Tink AES-GCM-HKDF streaming ciphertext. In body coordinates (offset 0 is the body's own
40-byte header), segment 0 occupies ``[40, S)`` and segment ``i >= 1`` occupies ``[i*S, (i+1)*S)``,
where ``S`` is the ciphertext segment size. Every segment carries a 16-byte GCM tag, and only the last
segment may be shorter than its slot. So a plaintext byte range maps to a segment range without reading
anything but the header, and one large file can be split across parallel readers.
"""

from __future__ import annotations

from dataclasses import dataclass

from ppml.errors import TruncatedCiphertext

TAG_SIZE = 16
BODY_HEADER_SIZE = 40  # 1 length byte + 32-byte salt + 7-byte nonce prefix
MIN_SEGMENT_SIZE = 4096
MAX_SEGMENT_SIZE = 64 * 1024 * 1024
DEFAULT_SEGMENT_SIZE = 1024 * 1024


@dataclass(frozen=True, slots=True)
class SegmentLayout:
    """Segment geometry of one body: ciphertext segment size ``S`` and body length."""

    segment_size: int
    body_size: int

    @property
    def first_capacity(self) -> int:
        """Plaintext bytes in a full segment 0 (it shares its slot with the body header)."""
        return self.segment_size - BODY_HEADER_SIZE - TAG_SIZE

    @property
    def capacity(self) -> int:
        """Plaintext bytes in a full segment ``i >= 1``."""
        return self.segment_size - TAG_SIZE

    @property
    def segment_count(self) -> int:
        """Number of segments; at least one, since even empty plaintext has a final segment."""
        return max(1, -(-self.body_size // self.segment_size))

    @property
    def plaintext_size(self) -> int:
        """Total plaintext length implied by the body length."""
        return self.body_size - BODY_HEADER_SIZE - TAG_SIZE * self.segment_count

    def check(self, name: str) -> None:
        """Raise if the body is too short to hold its last segment's tag."""
        if self.body_size < BODY_HEADER_SIZE + TAG_SIZE:
            raise TruncatedCiphertext(f"{name}: file is truncated: the body is shorter than one segment")
        last = self.segment_count - 1
        start, end = self.ciphertext_range(last)
        if end - start < TAG_SIZE:
            raise TruncatedCiphertext(
                f"{name}: file is truncated or extended: its last segment {last} is shorter than a tag")

    def ciphertext_range(self, index: int) -> tuple[int, int]:
        """Body offsets ``[start, end)`` of segment ``index``, clipped to the body length."""
        start = BODY_HEADER_SIZE if index == 0 else index * self.segment_size
        return start, min((index + 1) * self.segment_size, self.body_size)

    def plaintext_start(self, index: int) -> int:
        """Plaintext offset of the first byte of segment ``index``."""
        return 0 if index == 0 else self.first_capacity + (index - 1) * self.capacity

    def segment_of(self, offset: int) -> int:
        """Index of the segment holding plaintext byte ``offset``."""
        if offset < self.first_capacity:
            return 0
        return 1 + (offset - self.first_capacity) // self.capacity

    def segment_capacity(self, index: int) -> int:
        """Plaintext bytes a full segment ``index`` holds."""
        return self.first_capacity if index == 0 else self.capacity
