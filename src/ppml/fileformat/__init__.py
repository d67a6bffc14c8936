"""The ``.ppml`` container: bytes and streams only, no KMS and no network.

Callers hand in a data key (or a function that resolves one from a header); ``ppml.files`` joins this
layer to the KMS. The byte layout is specified in ``docs/format.md``.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

from ppml._secrets import SecretKey
from ppml.fileformat._header import MAGIC, SUITE_NAMES, VERSION, Header, read_header
from ppml.fileformat._layout import DEFAULT_SEGMENT_SIZE, SegmentLayout
from ppml.fileformat._streams import DecryptingReader, EncryptingWriter, KeyResolver, decrypt_stream

__all__ = [
    "DEFAULT_SEGMENT_SIZE",
    "MAGIC",
    "SUITE_NAMES",
    "VERSION",
    "DecryptingReader",
    "EncryptingWriter",
    "Header",
    "KeyResolver",
    "SegmentLayout",
    "decrypt_bytes",
    "decrypt_stream",
    "encrypt_bytes",
    "is_container",
    "read_header",
]


def encrypt_bytes(plaintext: bytes, *, data_key: SecretKey, key_uri: str, wrapped_key: bytes,
                  metadata: Mapping[str, Any] | None = None, segment_size: int = DEFAULT_SEGMENT_SIZE) -> bytes:
    """Encrypt an in-memory buffer into a complete container."""
    sink = io.BytesIO()
    with EncryptingWriter(sink, data_key=data_key, key_uri=key_uri, wrapped_key=wrapped_key,
                          metadata=metadata, segment_size=segment_size) as writer:
        writer.write(plaintext)
    return sink.getvalue()


def decrypt_bytes(ciphertext: bytes, resolve_key: KeyResolver, *, name: str = "<bytes>") -> bytes:
    """Decrypt and authenticate a complete in-memory container."""
    sink = io.BytesIO()
    decrypt_stream(ciphertext, sink, resolve_key, name=name)
    return sink.getvalue()


def is_container(prefix: bytes) -> bool:
    """Whether ``prefix`` (the first bytes of a file) starts with the ppml magic."""
    return prefix[: len(MAGIC)] == MAGIC
