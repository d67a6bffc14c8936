"""The ``.ppml`` header: bytes in, ``Header`` out, with every length checked before it is used.

Layout (all integers big-endian; the full specification is ``docs/format.md``)::

    fixed part (the associated data of every segment; never changes after encryption)
      0   4  magic "PPML"
      4   1  format version (1)
      5   1  suite (1 = AES-256-GCM-HKDF-SHA256 streaming, Tink-compatible body)
      6   4  fixed_len: length of the fixed part, including these fields
     10   4  ciphertext segment size S
     14  16  file id (random)
     30  32  key check: HKDF-SHA256(DEK, salt=file id, info="ppml/v1 key-check")
     62   4  metadata length m
     66   m  metadata: canonical JSON object, UTF-8
    key slot (rewritten by key rotation, so it is outside the segments' associated data)
      2 + u  key URI, UTF-8, u16 length prefix
      2 + w  wrapped data key, u16 length prefix
    header MAC
     32      HMAC-SHA256(HKDF(DEK, salt=file id, info="ppml/v1 header-mac"),
                         every header byte before the MAC || the 40-byte body header)
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from ppml.errors import MalformedHeader, NotEncrypted, TruncatedCiphertext
from ppml.fileformat._layout import MAX_SEGMENT_SIZE, MIN_SEGMENT_SIZE

MAGIC = b"PPML"
VERSION = 1
SUITE_AES256_GCM_HKDF_STREAMING = 1
SUITE_NAMES = {SUITE_AES256_GCM_HKDF_STREAMING: "AES-256-GCM-HKDF-SHA256 streaming (Tink-compatible)"}

FILE_ID_SIZE = 16
KEY_CHECK_SIZE = 32
MAC_SIZE = 32
MAX_METADATA_SIZE = 64 * 1024
MAX_KEY_URI_SIZE = 2048
MAX_WRAPPED_KEY_SIZE = 8192

_PREFIX = struct.Struct(">4sBBI")  # magic, version, suite, fixed_len
_FIXED = struct.Struct(">4sBBII16s32sI")  # ... segment size, file id, key check, metadata length
PREFIX_SIZE = _PREFIX.size


@dataclass(frozen=True, slots=True)
class Header:
    """A parsed ``.ppml`` header. Holds no secret: the data key inside is wrapped by the KMS."""

    segment_size: int
    file_id: bytes
    key_check: bytes
    key_uri: str
    wrapped_key: bytes
    metadata: Mapping[str, Any] = field(default_factory=dict)
    header_mac: bytes = b""
    version: int = VERSION
    suite: int = SUITE_AES256_GCM_HKDF_STREAMING
    raw_fixed: bytes = field(default=b"", repr=False, compare=False)

    def fixed_bytes(self) -> bytes:
        """The fixed part: the associated data bound into every segment's key.

        A parsed header returns the bytes exactly as read, so authentication covers what is on disk.
        """
        if self.raw_fixed:
            return self.raw_fixed
        meta = canonical_json(self.metadata)
        fixed_len = _FIXED.size + len(meta)
        return (
            _FIXED.pack(MAGIC, self.version, self.suite, fixed_len, self.segment_size, self.file_id,
                        self.key_check, len(meta))
            + meta
        )

    def slot_bytes(self) -> bytes:
        """The key slot: the key URI and the wrapped data key."""
        uri = self.key_uri.encode("utf-8")
        return struct.pack(">H", len(uri)) + uri + struct.pack(">H", len(self.wrapped_key)) + self.wrapped_key

    def unauthenticated_bytes(self) -> bytes:
        """Every header byte the header MAC covers (the body header is appended by the caller)."""
        return self.fixed_bytes() + self.slot_bytes()

    def to_bytes(self) -> bytes:
        """The full serialized header, MAC included."""
        if len(self.header_mac) != MAC_SIZE:
            raise ValueError("header MAC is not set")
        return self.unauthenticated_bytes() + self.header_mac

    @property
    def size(self) -> int:
        """Length of the serialized header in bytes."""
        return len(self.unauthenticated_bytes()) + MAC_SIZE


def canonical_json(metadata: Mapping[str, Any]) -> bytes:
    """Serialize metadata deterministically, so the same header always has the same bytes."""
    data = json.dumps(dict(metadata), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    if len(data) > MAX_METADATA_SIZE:
        raise ValueError(f"metadata is {len(data)} bytes; the limit is {MAX_METADATA_SIZE}")
    return data


def validate_segment_size(segment_size: int) -> int:
    """Return ``segment_size`` if it lies within the supported bounds, else raise ``ValueError``."""
    if not MIN_SEGMENT_SIZE <= segment_size <= MAX_SEGMENT_SIZE:
        raise ValueError(f"segment size must be between {MIN_SEGMENT_SIZE} and {MAX_SEGMENT_SIZE} bytes")
    return segment_size


def read_header(source: BinaryIO, name: str) -> Header:
    """Read and parse a header from the current position of ``source``; the MAC is not checked here."""
    prefix = read_fully(source, PREFIX_SIZE)
    if len(prefix) < len(MAGIC) or prefix[: len(MAGIC)] != MAGIC:
        raise NotEncrypted(f"{name}: not a ppml encrypted file (no PPML magic at offset 0)")
    if len(prefix) < PREFIX_SIZE:
        raise TruncatedCiphertext(f"{name}: file is truncated inside the header")
    _, version, suite, fixed_len = _PREFIX.unpack(prefix)
    if version != VERSION:
        raise MalformedHeader(f"{name}: unsupported ppml format version {version} (this ppml reads {VERSION})")
    if suite not in SUITE_NAMES:
        raise MalformedHeader(f"{name}: unknown cipher suite {suite}")
    if not _FIXED.size <= fixed_len <= _FIXED.size + MAX_METADATA_SIZE:
        raise MalformedHeader(f"{name}: header length {fixed_len} is out of bounds")
    fixed = prefix + _read_exact(source, fixed_len - PREFIX_SIZE, name)
    *_, segment_size, file_id, key_check, meta_len = _FIXED.unpack_from(fixed)
    if _FIXED.size + meta_len != fixed_len:
        raise MalformedHeader(f"{name}: metadata length {meta_len} does not match the header length")
    if not MIN_SEGMENT_SIZE <= segment_size <= MAX_SEGMENT_SIZE:
        raise MalformedHeader(f"{name}: segment size {segment_size} is out of bounds")
    metadata = _parse_metadata(fixed[_FIXED.size:], name)
    key_uri = _read_prefixed(source, MAX_KEY_URI_SIZE, "key URI", name)
    wrapped = _read_prefixed(source, MAX_WRAPPED_KEY_SIZE, "wrapped key", name)
    mac = _read_exact(source, MAC_SIZE, name)
    try:
        uri = key_uri.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedHeader(f"{name}: the key URI is not valid UTF-8") from None
    return Header(segment_size=segment_size, file_id=file_id, key_check=key_check, key_uri=uri,
                  wrapped_key=wrapped, metadata=metadata, header_mac=mac, version=version, suite=suite,
                  raw_fixed=fixed)


def _parse_metadata(raw: bytes, name: str) -> dict[str, Any]:
    try:
        value = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise MalformedHeader(f"{name}: header metadata is not valid JSON") from None
    if not isinstance(value, dict):
        raise MalformedHeader(f"{name}: header metadata is not a JSON object")
    return value


def _read_prefixed(source: BinaryIO, limit: int, what: str, name: str) -> bytes:
    (length,) = struct.unpack(">H", _read_exact(source, 2, name))
    if not 0 < length <= limit:
        raise MalformedHeader(f"{name}: {what} length {length} is out of bounds")
    return _read_exact(source, length, name)


def _read_exact(source: BinaryIO, size: int, name: str) -> bytes:
    data = read_fully(source, size)
    if len(data) != size:
        raise TruncatedCiphertext(f"{name}: file is truncated inside the header")
    return data


def read_fully(source: BinaryIO, size: int) -> bytes:
    """Read up to ``size`` bytes, looping over short reads; fewer bytes only at end of stream."""
    chunks: list[bytes] = []
    remaining = size
    while remaining > 0:
        chunk = source.read(remaining)
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)
