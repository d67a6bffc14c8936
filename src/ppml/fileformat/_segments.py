"""Per-file keys and segment encryption: the only code in ``fileformat`` that touches key bytes.

Three values are derived from the data key (DEK):

* the key check, HKDF-SHA256(DEK, salt=file id, info="ppml/v1 key-check"), stored in the header. A wrong
  key fails here, at once, with a clear message; it also makes the file key-committing, which AES-GCM
  alone is not;
* the header MAC key, HKDF-SHA256(DEK, salt=file id, info="ppml/v1 header-mac");
* the segment key, HKDF-SHA256(DEK, salt=body salt, info=fixed header part), exactly as Tink's
  AES-GCM-HKDF streaming AEAD derives it, so ``tink`` can decrypt our bodies.

Segment ``i`` is AES-256-GCM with nonce ``prefix(7) || i (u32 BE) || last (1 byte)`` (the STREAM
construction) and no per-segment associated data.
"""

from __future__ import annotations

import hmac
import os
import struct
from hashlib import sha256

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ppml._secrets import SecretKey
from ppml.fileformat._layout import BODY_HEADER_SIZE, TAG_SIZE

SALT_SIZE = 32
NONCE_PREFIX_SIZE = 7
_KEY_CHECK_INFO = b"ppml/v1 key-check"
_HEADER_MAC_INFO = b"ppml/v1 header-mac"
MAX_SEGMENTS = 2**32


def _hkdf(key: bytes, salt: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(key)


def key_check(dek: SecretKey, file_id: bytes) -> bytes:
    """The key-commitment value stored in the header."""
    return _hkdf(dek.insecure_bytes(), file_id, _KEY_CHECK_INFO)


def key_check_matches(dek: SecretKey, file_id: bytes, stored: bytes) -> bool:
    """Compare a key check in constant time."""
    return hmac.compare_digest(key_check(dek, file_id), stored)


def header_mac(dek: SecretKey, file_id: bytes, header_bytes: bytes, body_header: bytes) -> bytes:
    """MAC over the whole header and the body header, so a header moved onto another body is caught."""
    mac_key = _hkdf(dek.insecure_bytes(), file_id, _HEADER_MAC_INFO)
    return hmac.new(mac_key, header_bytes + body_header, sha256).digest()


def new_body_header(salt: bytes | None = None, nonce_prefix: bytes | None = None) -> bytes:
    """A fresh Tink body header: length byte, random salt, random nonce prefix."""
    salt = os.urandom(SALT_SIZE) if salt is None else salt
    nonce_prefix = os.urandom(NONCE_PREFIX_SIZE) if nonce_prefix is None else nonce_prefix
    if len(salt) != SALT_SIZE or len(nonce_prefix) != NONCE_PREFIX_SIZE:
        raise ValueError("salt must be 32 bytes and nonce prefix 7 bytes")
    return bytes([BODY_HEADER_SIZE]) + salt + nonce_prefix


class SegmentCipher:
    """Encrypts and decrypts the segments of one file under its derived segment key."""

    __slots__ = ("_aead", "_prefix")

    def __init__(self, dek: SecretKey, body_header: bytes, associated_data: bytes) -> None:
        if len(body_header) != BODY_HEADER_SIZE or body_header[0] != BODY_HEADER_SIZE:
            raise ValueError("malformed body header")
        salt = body_header[1 : 1 + SALT_SIZE]
        self._prefix = body_header[1 + SALT_SIZE :]
        self._aead = AESGCM(_hkdf(dek.insecure_bytes(), salt, associated_data))

    def __reduce__(self) -> None:  # type: ignore[override]
        raise TypeError("SegmentCipher holds key material and cannot be pickled")

    def nonce(self, index: int, last: bool) -> bytes:
        """STREAM nonce for segment ``index``."""
        if not 0 <= index < MAX_SEGMENTS:
            raise OverflowError("too many segments for one file")
        return self._prefix + struct.pack(">IB", index, 1 if last else 0)

    def encrypt_into(self, index: int, last: bool, plaintext: memoryview | bytes, out: bytearray) -> int:
        """Encrypt one segment into ``out``; returns the ciphertext length (plaintext + tag)."""
        size = len(plaintext) + TAG_SIZE
        self._aead.encrypt_into(self.nonce(index, last), plaintext, None, memoryview(out)[:size])
        return size

    def decrypt_into(self, index: int, last: bool, ciphertext: memoryview | bytes, out: bytearray) -> int | None:
        """Decrypt one segment into ``out``; returns the plaintext length, or ``None`` if it does not verify."""
        size = len(ciphertext) - TAG_SIZE
        try:
            self._aead.decrypt_into(self.nonce(index, last), ciphertext, None, memoryview(out)[:size])
        except InvalidTag:
            return None
        return size
