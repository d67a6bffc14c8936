"""Read BigDL PPML encrypted files; write them only behind an explicit insecure opt-in.

BigDL PPML (``spark.bigdl.encryter.type``) has two byte formats. Both were checked against the Scala
sources of ``com.intel.analytics.bigdl.ppml.crypto`` (``BigDLEncrypt``, ``BigDLAESCBCEncrypt``,
``BigDLEncryptCompressor``, ``CryptoCodec``).

``common`` (the default; ``AES/CBC/PKCS5Padding`` in ``.cbc`` part files)::

    offset 0      int32 big-endian  L = byte length of the encrypted data key (UTF-8)
    offset 4      int32 big-endian  N = IV length, always 16
    offset 8      L bytes           encrypted data key: the KMS-specific wrapped data-key string
    offset 8+L    16 bytes          IV
    then          0x80 bytes        fill up to a fixed 400-byte header
    offset 400    AES-128-CBC / PKCS#5 ciphertext of the whole plaintext (one CBC chain per file)
    last 32 B     HMAC-SHA256 tag

Key derivation (``BigDLEncrypt.init``): ``secret = dataKeyPlaintext.getBytes()`` (the data-key *string*,
never base64-decoded); HMAC key = ``secret[0:16]``, AES-128 key = ``secret[16:32]`` zero-padded to 16
bytes when the string is shorter than 32 bytes. BigDL cannot use a string shorter than 16 bytes
(``Arrays.copyOfRange`` throws), so neither do we.

The tag is HMAC-SHA256 over the ciphertext bytes only (offset 400 up to the tag). It does **not** cover
the header: the IV, the encrypted data key and the 0x80 fill are unauthenticated. A flipped IV bit
flips the same bit of the first plaintext block without detection; BigDL data offers nothing to catch it
with, so this module cannot either. It does check what BigDL always writes (N = 16, the fill bytes).

``nativeaescbc``: a raw 16-byte IV, then AES-CBC/PKCS#5 ciphertext under ``base64decode(dataKey)``
(AES-128/192/256). No MAC at all: reading it warns with ``InsecureFormatWarning``.

BigDL defects this module does **not** reproduce:

* BigDL's reader never verifies the tag (it MACs the plaintext, and its check is inverted); we verify it,
  in constant time, and fail closed.
* BigDL assumes one ``read()`` returns the whole 400-byte header and finds the tag with
  ``InputStream.available()``; we read exactly and hold back the last 32 bytes.
* BigDL's ``nativeaescbc`` reader decrypts in one ``doFinal`` over a fixed buffer; we stream.
* BigDL's writer overflows its 400-byte buffer on a long encrypted data key; we refuse it up front.

Writers exist only to hand data back to a BigDL cluster during a migration. They require
``insecure_bigdl_format=True`` and warn on every use: the format has weak keys (see ``ppml.kms.bigdl``),
an unauthenticated header, and no protection against truncation by whole files.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import hashlib
import hmac
import io
import json
import logging
import os
import struct
import warnings
from dataclasses import dataclass
from typing import BinaryIO, NamedTuple

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes

from ppml._secrets import Secret, SecretKey
from ppml.errors import (
    ConfigError,
    InvalidCiphertext,
    MalformedHeader,
    SegmentAuthenticationFailed,
    TruncatedCiphertext,
    WrongKey,
)

__all__ = [
    "BIGDL_HEADER_SIZE",
    "BIGDL_IV_SIZE",
    "BIGDL_TAG_SIZE",
    "META_FILE_NAME",
    "BigDLCommonKeys",
    "BigDLDataKey",
    "BigDLHeader",
    "InsecureFormatWarning",
    "build_bigdl_header",
    "decrypt_bigdl",
    "decrypt_bigdl_native",
    "decrypt_bigdl_native_stream",
    "decrypt_bigdl_stream",
    "derive_common_keys",
    "derive_native_key",
    "encrypt_bigdl",
    "encrypt_bigdl_native",
    "encrypt_bigdl_native_stream",
    "encrypt_bigdl_stream",
    "format_bigdl_meta",
    "looks_like_bigdl",
    "parse_bigdl_header",
    "parse_bigdl_meta",
    "read_bigdl_header",
]

log = logging.getLogger(__name__)

BIGDL_HEADER_SIZE = 400
BIGDL_IV_SIZE = 16
BIGDL_TAG_SIZE = 32
META_FILE_NAME = ".meta"
_LENGTHS = struct.Struct(">ii")
_FILL = 0x80
_BLOCK = 16
_CHUNK = 1 << 20  # 1 MiB, as BigDL's own stream API
_META_FIELD = "encryptedDataKey"


class InsecureFormatWarning(UserWarning):
    """Data is being read or written in a BigDL format that is unauthenticated or weakly keyed."""


class BigDLDataKey(Secret):
    """A BigDL data-key plaintext *string*: the secret both BigDL formats derive their keys from.

    ``ppml._secrets.SecretKey`` holds raw 16/24/32-byte keys; BigDL's secret is a string of any length
    (24 or 44 base64 characters, or 32 digits from SimpleKMS), so it gets its own redacted holder.
    """

    __slots__ = ("_text",)

    def __init__(self, text: str) -> None:
        if not isinstance(text, str):
            raise TypeError("a BigDL data key must be a str")
        if len(text.encode("utf-8")) < 16:
            raise ValueError("a BigDL data key must be at least 16 bytes: BigDL cannot use a shorter one")
        self._text = text

    def __len__(self) -> int:
        return len(self._text)

    def _describe(self) -> str:
        return f"{len(self._text)} chars"

    def insecure_text(self) -> str:
        """The data-key string. Only key derivation may call this; never log the result."""
        return self._text

    def insecure_bytes(self) -> bytes:
        """The UTF-8 bytes BigDL derives keys from (``String.getBytes()`` on a UTF-8 JVM)."""
        return self._text.encode("utf-8")


class BigDLCommonKeys(NamedTuple):
    """The two AES-128-sized keys of the ``common`` format, both sliced from one data-key string."""

    mac_key: SecretKey
    aes_key: SecretKey


@dataclass(frozen=True, slots=True)
class BigDLHeader:
    """The parsed 400-byte ``common`` header. Neither field is authenticated by BigDL's MAC."""

    encrypted_data_key: str
    iv: bytes


# --------------------------------------------------------------------------------------------------
# Key derivation


def derive_common_keys(data_key: BigDLDataKey) -> BigDLCommonKeys:
    """Slice the HMAC and AES keys out of the data-key string exactly as ``BigDLEncrypt.init`` does."""
    secret = _require_data_key(data_key).insecure_bytes()
    mac_key = secret[0:16]
    aes_key = secret[16:32].ljust(16, b"\x00")
    return BigDLCommonKeys(SecretKey(mac_key), SecretKey(aes_key))


def derive_native_key(data_key: BigDLDataKey) -> SecretKey:
    """Base64-decode the data-key string into the AES key, as ``BigDLAESCBCEncrypt.init`` does."""
    text = _require_data_key(data_key).insecure_text()
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError("the BigDL nativeaescbc data key is not valid base64") from None
    if len(raw) not in (16, 24, 32):
        raise ConfigError(
            f"the BigDL nativeaescbc data key decodes to {len(raw)} bytes; AES needs 16, 24 or 32"
        )
    return SecretKey(raw)


def _require_data_key(data_key: object) -> BigDLDataKey:
    if not isinstance(data_key, BigDLDataKey):
        raise TypeError("data_key must be a BigDLDataKey (wrap the plaintext string, never pass a str)")
    return data_key


# --------------------------------------------------------------------------------------------------
# Header


def build_bigdl_header(encrypted_data_key: str, iv: bytes) -> bytes:
    """Lay out the 400-byte ``common`` header; refuse what would overflow BigDL's fixed buffer."""
    if len(iv) != BIGDL_IV_SIZE:
        raise ValueError("a BigDL IV is 16 bytes")
    edk = encrypted_data_key.encode("utf-8")
    used = _LENGTHS.size + len(edk) + BIGDL_IV_SIZE
    if used > BIGDL_HEADER_SIZE:
        raise ConfigError(
            f"the encrypted data key is {len(edk)} bytes; BigDL's 400-byte header holds at most "
            f"{BIGDL_HEADER_SIZE - _LENGTHS.size - BIGDL_IV_SIZE}"
        )
    head = _LENGTHS.pack(len(edk), BIGDL_IV_SIZE) + edk + iv
    return head + bytes([_FILL]) * (BIGDL_HEADER_SIZE - used)


def parse_bigdl_header(header: bytes, *, name: str) -> BigDLHeader:
    """Parse and bounds-check a 400-byte ``common`` header; raise ``MalformedHeader`` naming the file."""
    if len(header) != BIGDL_HEADER_SIZE:
        raise TruncatedCiphertext(
            f"{name}: the BigDL header is {BIGDL_HEADER_SIZE} bytes but only {len(header)} were read"
        )
    edk_len, iv_len = _LENGTHS.unpack_from(header)
    if iv_len != BIGDL_IV_SIZE:
        raise MalformedHeader(f"{name}: not a BigDL AES-CBC file (IV length field is {iv_len}, not 16)")
    end = _LENGTHS.size + edk_len + BIGDL_IV_SIZE
    if edk_len < 0 or end > BIGDL_HEADER_SIZE:
        raise MalformedHeader(f"{name}: not a BigDL AES-CBC file (encrypted data key length {edk_len})")
    if any(b != _FILL for b in header[end:]):
        raise MalformedHeader(f"{name}: the BigDL header fill after the IV is not all 0x80 bytes")
    try:
        edk = header[_LENGTHS.size : _LENGTHS.size + edk_len].decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedHeader(f"{name}: the encrypted data key in the BigDL header is not UTF-8") from None
    return BigDLHeader(encrypted_data_key=edk, iv=bytes(header[end - BIGDL_IV_SIZE : end]))


def read_bigdl_header(src: BinaryIO, *, name: str) -> BigDLHeader:
    """Read exactly the 400-byte header from ``src`` (left positioned at the ciphertext) and parse it."""
    return parse_bigdl_header(_read_up_to(src, BIGDL_HEADER_SIZE), name=name)


def looks_like_bigdl(first_bytes: bytes) -> bool:
    """Whether ``first_bytes`` could start a BigDL ``common`` file (pass 400 bytes for a firm answer).

    ``nativeaescbc`` files start with a random IV and cannot be recognised.
    """
    if len(first_bytes) < _LENGTHS.size:
        return False
    edk_len, iv_len = _LENGTHS.unpack_from(first_bytes)
    end = _LENGTHS.size + edk_len + BIGDL_IV_SIZE
    if iv_len != BIGDL_IV_SIZE or edk_len < 0 or end > BIGDL_HEADER_SIZE:
        return False
    edk = first_bytes[_LENGTHS.size : _LENGTHS.size + edk_len]
    try:  # a multi-byte character cut off by a short prefix is not evidence against
        codecs.getincrementaldecoder("utf-8")().decode(edk, final=len(edk) == edk_len)
    except UnicodeDecodeError:
        return False
    return all(b == _FILL for b in first_bytes[end:BIGDL_HEADER_SIZE])


# --------------------------------------------------------------------------------------------------
# common format: decryption


def decrypt_bigdl_stream(
    src: BinaryIO,
    dst: BinaryIO,
    data_key: BigDLDataKey,
    *,
    name: str,
    expected_encrypted_data_key: str | None = None,
    allow_empty: bool = False,
) -> int:
    """Decrypt a ``common`` file from ``src`` into ``dst`` in O(1 MiB) memory; return plaintext bytes.

    Plaintext reaches ``dst`` before the tag at the end is checked, so the caller must stage ``dst`` and
    discard it when this raises. ``allow_empty`` accepts a zero-byte file as empty plaintext: BigDL's
    Hadoop codec writes nothing at all for an empty partition, so such a file has nothing to verify.
    """
    first = _read_up_to(src, BIGDL_HEADER_SIZE)
    if not first and allow_empty:
        return 0
    _check_min_length(len(first), name=name, at_least_header=True)
    header = parse_bigdl_header(first, name=name)
    _check_expected_edk(header, expected_encrypted_data_key, name=name)
    keys = derive_common_keys(data_key)
    mac = hmac.new(keys.mac_key.insecure_bytes(), digestmod=hashlib.sha256)
    decryptor = _cbc(keys.aes_key, header.iv).decryptor()
    unpadder = padding.PKCS7(128).unpadder()
    held = b""
    body_len = written = 0
    while chunk := src.read(_CHUNK):
        buf = held + chunk
        body, held = buf[:-BIGDL_TAG_SIZE], buf[-BIGDL_TAG_SIZE:]
        mac.update(body)
        body_len += len(body)
        written += _write(dst, unpadder.update(decryptor.update(body)))
    if len(held) < BIGDL_TAG_SIZE:
        _check_min_length(BIGDL_HEADER_SIZE + len(held), name=name, at_least_header=False)
    _verify_tag(mac.digest(), held, name=name)
    tail = _finish_cbc(decryptor, unpadder, body_len, name=name)
    return written + _write(dst, tail)


def decrypt_bigdl(
    data: bytes,
    data_key: BigDLDataKey,
    *,
    name: str,
    expected_encrypted_data_key: str | None = None,
    allow_empty: bool = False,
) -> bytes:
    """Decrypt a whole in-memory ``common`` file, verifying the tag before decrypting anything."""
    if not data and allow_empty:
        return b""
    _check_min_length(len(data), name=name, at_least_header=True)
    header = parse_bigdl_header(data[:BIGDL_HEADER_SIZE], name=name)
    _check_min_length(len(data), name=name, at_least_header=False)
    _check_expected_edk(header, expected_encrypted_data_key, name=name)
    keys = derive_common_keys(data_key)
    body, tag = data[BIGDL_HEADER_SIZE:-BIGDL_TAG_SIZE], data[-BIGDL_TAG_SIZE:]
    _verify_tag(hmac.digest(keys.mac_key.insecure_bytes(), body, "sha256"), tag, name=name)
    decryptor = _cbc(keys.aes_key, header.iv).decryptor()
    unpadder = padding.PKCS7(128).unpadder()
    head = unpadder.update(decryptor.update(body))
    return head + _finish_cbc(decryptor, unpadder, len(body), name=name)


def _check_min_length(length: int, *, name: str, at_least_header: bool) -> None:
    minimum = BIGDL_HEADER_SIZE + (0 if at_least_header else BIGDL_TAG_SIZE)
    if length < minimum:
        raise TruncatedCiphertext(
            f"{name}: {length} bytes is too short for a BigDL AES-CBC file "
            f"({BIGDL_HEADER_SIZE}-byte header + ciphertext + {BIGDL_TAG_SIZE}-byte HMAC); it was truncated"
        )


def _check_expected_edk(header: BigDLHeader, expected: str | None, *, name: str) -> None:
    if expected is not None and header.encrypted_data_key != expected:
        raise WrongKey(
            f"{name}: the BigDL header names another encrypted data key than the one supplied "
            "(the file belongs to another write, or its .meta was replaced)"
        )


def _verify_tag(computed: bytes, stored: bytes, *, name: str) -> None:
    if not hmac.compare_digest(computed, stored):
        raise SegmentAuthenticationFailed(
            f"{name}: the BigDL HMAC does not match: the file was modified, truncated or extended, "
            "or the data key is wrong"
        )


def _finish_cbc(decryptor: CipherContext, unpadder: padding.PaddingContext, body_len: int, *,
                name: str) -> bytes:
    """Finish CBC and PKCS#5; reached only after the tag verified, so failures mean a broken writer."""
    if body_len == 0 or body_len % _BLOCK:
        raise TruncatedCiphertext(
            f"{name}: the BigDL ciphertext is {body_len} bytes, not a non-zero multiple of 16"
        )
    try:
        return unpadder.update(decryptor.finalize()) + unpadder.finalize()
    except ValueError:
        raise InvalidCiphertext(f"{name}: bad PKCS#5 padding at the end of the BigDL ciphertext") from None


# --------------------------------------------------------------------------------------------------
# common format: encryption (insecure opt-in)


def encrypt_bigdl_stream(
    src: BinaryIO,
    dst: BinaryIO,
    data_key: BigDLDataKey,
    encrypted_data_key: str,
    *,
    insecure_bigdl_format: bool = False,
    name: str,
) -> int:
    """Write ``src`` as a BigDL ``common`` file that BigDL can read; return ciphertext bytes written."""
    _require_opt_in(insecure_bigdl_format, name=name, fmt="common")
    _warn(f"{name}: writing the BigDL AES-CBC format: AES keys of 32 bits or less, header not authenticated")
    return _encrypt_common(src, dst, data_key, encrypted_data_key, os.urandom(BIGDL_IV_SIZE))


def encrypt_bigdl(
    plaintext: bytes,
    data_key: BigDLDataKey,
    encrypted_data_key: str,
    *,
    insecure_bigdl_format: bool = False,
    name: str,
) -> bytes:
    """In-memory form of ``encrypt_bigdl_stream``."""
    sink = io.BytesIO()
    encrypt_bigdl_stream(io.BytesIO(plaintext), sink, data_key, encrypted_data_key,
                         insecure_bigdl_format=insecure_bigdl_format, name=name)
    return sink.getvalue()


def _encrypt_common(src: BinaryIO, dst: BinaryIO, data_key: BigDLDataKey, encrypted_data_key: str,
                    iv: bytes) -> int:
    """The writer proper; ``iv`` is a parameter only so frozen test vectors can be reproduced."""
    keys = derive_common_keys(data_key)
    written = _write(dst, build_bigdl_header(encrypted_data_key, iv))
    mac = hmac.new(keys.mac_key.insecure_bytes(), digestmod=hashlib.sha256)
    encryptor = _cbc(keys.aes_key, iv).encryptor()
    padder = padding.PKCS7(128).padder()
    while chunk := src.read(_CHUNK):
        out = encryptor.update(padder.update(chunk))
        mac.update(out)
        written += _write(dst, out)
    out = encryptor.update(padder.finalize()) + encryptor.finalize()
    mac.update(out)
    return written + _write(dst, out) + _write(dst, mac.digest())


# --------------------------------------------------------------------------------------------------
# nativeaescbc format


def decrypt_bigdl_native_stream(src: BinaryIO, dst: BinaryIO, data_key: BigDLDataKey, *, name: str) -> int:
    """Decrypt an unauthenticated ``nativeaescbc`` file; warns, since tampering cannot be detected."""
    _warn(f"{name}: reading the BigDL nativeaescbc format, which has no MAC: tampering goes undetected")
    key = derive_native_key(data_key)
    iv = _read_up_to(src, BIGDL_IV_SIZE)
    if len(iv) < BIGDL_IV_SIZE:
        raise TruncatedCiphertext(f"{name}: {len(iv)} bytes is too short for a BigDL nativeaescbc file")
    decryptor = _cbc(key, iv).decryptor()
    unpadder = padding.PKCS7(128).unpadder()
    body_len = written = 0
    while chunk := src.read(_CHUNK):
        body_len += len(chunk)
        written += _write(dst, unpadder.update(decryptor.update(chunk)))
    if body_len == 0 or body_len % _BLOCK:
        raise TruncatedCiphertext(
            f"{name}: the BigDL nativeaescbc ciphertext is {body_len} bytes, not a non-zero multiple of 16; "
            "the file was truncated or extended"
        )
    try:
        tail = unpadder.update(decryptor.finalize()) + unpadder.finalize()
    except ValueError:
        raise InvalidCiphertext(
            f"{name}: bad PKCS#5 padding in a BigDL nativeaescbc file: wrong data key, or the file was "
            "modified (this format has no MAC, so a wrong key is not always detected)"
        ) from None
    return written + _write(dst, tail)


def decrypt_bigdl_native(data: bytes, data_key: BigDLDataKey, *, name: str) -> bytes:
    """In-memory form of ``decrypt_bigdl_native_stream`` (still unauthenticated)."""
    sink = io.BytesIO()
    decrypt_bigdl_native_stream(io.BytesIO(data), sink, data_key, name=name)
    return sink.getvalue()


def encrypt_bigdl_native_stream(
    src: BinaryIO, dst: BinaryIO, data_key: BigDLDataKey, *, insecure_bigdl_format: bool = False, name: str
) -> int:
    """Write ``src`` as a BigDL ``nativeaescbc`` file (IV + CBC, no MAC); return bytes written."""
    _require_opt_in(insecure_bigdl_format, name=name, fmt="nativeaescbc")
    _warn(f"{name}: writing the BigDL nativeaescbc format, which has no MAC: tampering goes undetected")
    return _encrypt_native(src, dst, data_key, os.urandom(BIGDL_IV_SIZE))


def encrypt_bigdl_native(
    plaintext: bytes, data_key: BigDLDataKey, *, insecure_bigdl_format: bool = False, name: str
) -> bytes:
    """In-memory form of ``encrypt_bigdl_native_stream``."""
    sink = io.BytesIO()
    encrypt_bigdl_native_stream(io.BytesIO(plaintext), sink, data_key,
                                insecure_bigdl_format=insecure_bigdl_format, name=name)
    return sink.getvalue()


def _encrypt_native(src: BinaryIO, dst: BinaryIO, data_key: BigDLDataKey, iv: bytes) -> int:
    encryptor = _cbc(derive_native_key(data_key), iv).encryptor()
    padder = padding.PKCS7(128).padder()
    written = _write(dst, iv)
    while chunk := src.read(_CHUNK):
        written += _write(dst, encryptor.update(padder.update(chunk)))
    return written + _write(dst, encryptor.update(padder.finalize()) + encryptor.finalize())


# --------------------------------------------------------------------------------------------------
# .meta files


def parse_bigdl_meta(content: str | bytes, *, name: str) -> str:
    """Return ``encryptedDataKey`` from a BigDL ``.meta`` file.

    BigDL reads it with Jackson configured case-insensitive and ignoring unknown fields; so do we.
    """
    try:
        text = content.decode("utf-8") if isinstance(content, bytes) else content
        doc = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise MalformedHeader(f"{name}: the BigDL .meta file is not valid JSON") from None
    if not isinstance(doc, dict):
        raise MalformedHeader(f"{name}: the BigDL .meta file is not a JSON object")
    matches = [v for k, v in doc.items() if k.lower() == _META_FIELD.lower()]
    if len(matches) != 1 or not isinstance(matches[0], str):
        raise MalformedHeader(f"{name}: the BigDL .meta file has no single string field {_META_FIELD!r}")
    return matches[0]


def format_bigdl_meta(encrypted_data_key: str) -> str:
    """Render a ``.meta`` file as BigDL writes it: Jackson ``INDENT_OUTPUT`` plus a final newline."""
    return "{\n  " + json.dumps(_META_FIELD) + " : " + json.dumps(encrypted_data_key) + "\n}\n"


# --------------------------------------------------------------------------------------------------
# helpers


def _cbc(key: SecretKey, iv: bytes) -> Cipher[modes.CBC]:
    return Cipher(algorithms.AES(key.insecure_bytes()), modes.CBC(iv))


def _read_up_to(src: BinaryIO, size: int) -> bytes:
    """Read until ``size`` bytes or end of stream: one ``read()`` may legally return fewer bytes."""
    parts: list[bytes] = []
    remaining = size
    while remaining:
        part = src.read(remaining)
        if not part:
            break
        parts.append(part)
        remaining -= len(part)
    return b"".join(parts)


def _write(dst: BinaryIO, data: bytes) -> int:
    if data:
        dst.write(data)
    return len(data)


def _require_opt_in(flag: bool, *, name: str, fmt: str) -> None:
    if flag is not True:
        raise ConfigError(
            f"{name}: refusing to write the BigDL {fmt} format, which is unauthenticated or weakly keyed; "
            "pass insecure_bigdl_format=True only to hand data back to a BigDL cluster"
        )


def _warn(message: str) -> None:
    log.warning(message)
    warnings.warn(message, InsecureFormatWarning, stacklevel=3)
