"""Unwrap (and, for the insecure writer, wrap) BigDL PPML data-key strings, offline.

BigDL stores a *wrapped data-key string* in every file header and in ``<dir>/.meta``. How it unwraps
depends on the key source; the two that need no network are here (checked against the Scala sources
``kms/common/KeyLoader.scala`` and ``kms/client/SimpleKeyManagementService.scala``):

Plaintext primary key (``spark.bigdl.primaryKey.<n>.plainText`` = base64 of a 16/24/32-byte AES key):
    data key = base64 of 16 random bytes (a 24-character string); encrypted data key =
    ``base64(AES/ECB/PKCS5Padding(primary, utf8(data key)))`` (Java's ``Cipher.getInstance("AES")``).
    For ``nativeaescbc`` BigDL uses the primary key string itself as the data key.

SimpleKMS (no secret at all; kept only so old data can be read):
    primary material = the first line of the primary-key file: ``appId`` (12 chars) + 4 random digits.
    BigDL draws 16 random digits ``d`` and "encrypts" them digit-wise, but its Scala
    ``s += '0' + x`` appends the *Int* ``48 + x`` as decimal text, so the stored ciphertext is 32 digits
    (16 two-digit ASCII codes). Unwrapping applies the same quirk to the first 16 characters of that
    ciphertext, so the data key BigDL really encrypts with is a 32-digit string that depends only on the
    ciphertext's first 16 characters (i.e. on ``d[0:8]``) and the primary material. The AES key of the
    ``common`` format (bytes 16..32) then depends on only 4 random digits. Verified by compiling the
    expression with scalac 2.12.17.

Every wrapped string is public (it sits in each file header); only the primary key and the unwrapped
data key are secret. Messages here never contain either.
"""

from __future__ import annotations

import base64
import binascii
import secrets
import warnings

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from ppml.errors import ConfigError, KeyProviderError
from ppml.fileformat.bigdl import BigDLDataKey, InsecureFormatWarning

__all__ = [
    "SIMPLE_KMS_APP_ID_LENGTH",
    "generate_plaintext_primary_data_key",
    "generate_simple_kms_data_key",
    "generate_simple_kms_primary_material",
    "native_data_key_from_primary",
    "read_simple_kms_primary_file",
    "unwrap_plaintext_primary",
    "unwrap_simple_kms",
    "wrap_plaintext_primary",
    "wrap_simple_kms",
]

SIMPLE_KMS_APP_ID_LENGTH = 12
_SIMPLE_DIGITS = 16
_ZERO = ord("0")


# --------------------------------------------------------------------------------------------------
# Plaintext primary key (no KMS)


def unwrap_plaintext_primary(primary_key_b64: str, encrypted_data_key: str) -> BigDLDataKey:
    """Recover the data-key string BigDL wrapped under a plaintext primary key (``common`` format)."""
    cipher = _ecb(primary_key_b64)
    wrapped = _b64decode(encrypted_data_key, what="encrypted data key")
    if not wrapped or len(wrapped) % 16:
        raise KeyProviderError("the BigDL encrypted data key is not AES/ECB ciphertext (bad length)")
    decryptor = cipher.decryptor()
    unpadder = padding.PKCS7(128).unpadder()
    try:
        padded = decryptor.update(wrapped) + decryptor.finalize()
        text = (unpadder.update(padded) + unpadder.finalize()).decode("utf-8")
        return BigDLDataKey(text)
    except (ValueError, UnicodeDecodeError):
        raise KeyProviderError(
            "could not unwrap the BigDL data key: wrong plaintext primary key, or a damaged encryptedDataKey"
        ) from None


def wrap_plaintext_primary(primary_key_b64: str, data_key: BigDLDataKey) -> str:
    """Wrap a data-key string as BigDL's ``KeyLoader`` does: base64(AES/ECB/PKCS5(utf8(string)))."""
    if not isinstance(data_key, BigDLDataKey):
        raise TypeError("data_key must be a BigDLDataKey")
    encryptor = _ecb(primary_key_b64).encryptor()
    padder = padding.PKCS7(128).padder()
    padded = padder.update(data_key.insecure_bytes()) + padder.finalize()
    return base64.b64encode(encryptor.update(padded) + encryptor.finalize()).decode("ascii")


def generate_plaintext_primary_data_key(
    primary_key_b64: str, *, insecure_bigdl_format: bool = False
) -> tuple[BigDLDataKey, str]:
    """A fresh BigDL data key and its wrapped string, for writing files a BigDL cluster will read.

    Insecure by construction: the ``common`` format uses only 4 of the key's 16 random bytes for AES.
    """
    _require_opt_in(insecure_bigdl_format)
    _warn("generating a BigDL data key: the BigDL AES-CBC format uses only 32 bits of it for AES")
    data_key = BigDLDataKey(base64.b64encode(secrets.token_bytes(16)).decode("ascii"))
    return data_key, wrap_plaintext_primary(primary_key_b64, data_key)


def native_data_key_from_primary(primary_key_b64: str) -> BigDLDataKey:
    """The ``nativeaescbc`` data key under a plaintext primary key: the primary key string itself."""
    _decode_primary(primary_key_b64)
    return BigDLDataKey(primary_key_b64)


def _ecb(primary_key_b64: str) -> Cipher[modes.ECB]:
    """Java's ``Cipher.getInstance("AES")`` is AES/ECB/PKCS5Padding; BigDL wraps data keys with it."""
    return Cipher(algorithms.AES(_decode_primary(primary_key_b64)), modes.ECB())


def _decode_primary(primary_key_b64: str) -> bytes:
    key = _b64decode(primary_key_b64, what="plaintext primary key")
    if len(key) not in (16, 24, 32):
        raise KeyProviderError(
            f"the BigDL plaintext primary key decodes to {len(key)} bytes; AES needs 16, 24 or 32"
        )
    return key


def _b64decode(text: str, *, what: str) -> bytes:
    """Java's basic ``Base64.getDecoder()``: standard alphabet, no whitespace, padding optional."""
    if not isinstance(text, str):
        raise KeyProviderError(f"the BigDL {what} must be a string")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise KeyProviderError(f"the BigDL {what} is not valid base64") from None


# --------------------------------------------------------------------------------------------------
# SimpleKMS


def read_simple_kms_primary_file(content: str | bytes) -> str:
    """The primary material of a SimpleKMS key file: its first line, as BigDL's ``KeyReaderWriter`` reads."""
    text = content.decode("utf-8", errors="strict") if isinstance(content, bytes) else content
    lines = text.splitlines()
    if not lines:
        raise KeyProviderError("the BigDL SimpleKMS primary key file is empty")
    return lines[0]


def unwrap_simple_kms(
    primary_material: str, encrypted_data_key: str, *, app_id: str | None = None
) -> BigDLDataKey:
    """The data-key string BigDL's SimpleKMS returns for ``encrypted_data_key`` (32 digits).

    ``app_id``, when given, is checked against the first 12 characters as BigDL does.
    """
    primary = _simple_primary(primary_material, app_id=app_id)
    wrapped = _ascii(encrypted_data_key, what="SimpleKMS encrypted data key")
    if len(wrapped) < _SIMPLE_DIGITS:
        raise KeyProviderError(
            f"the BigDL SimpleKMS encrypted data key has {len(wrapped)} characters; BigDL needs at least 16"
        )
    used = zip(wrapped[:_SIMPLE_DIGITS], primary[:_SIMPLE_DIGITS], strict=True)  # BigDL reads 16 of 32
    pairs = ((ord(c) - _ZERO) - (ord(p) - _ZERO) + 10 for c, p in used)
    return BigDLDataKey("".join(str(_ZERO + _java_rem(x, 10)) for x in pairs))


def wrap_simple_kms(primary_material: str, digits: str, *, app_id: str | None = None) -> str:
    """SimpleKMS's "encryption" of 16 random digits: 16 two-digit codes, exactly as BigDL computes them."""
    primary = _simple_primary(primary_material, app_id=app_id)
    if not (len(digits) == _SIMPLE_DIGITS and digits.isascii() and digits.isdigit()):
        raise KeyProviderError("a BigDL SimpleKMS data key is exactly 16 decimal digits")
    used = zip(primary[:_SIMPLE_DIGITS], digits, strict=True)
    pairs = ((ord(p) - _ZERO) + (ord(d) - _ZERO) for p, d in used)
    return "".join(str(_ZERO + _java_rem(x, 10)) for x in pairs)


def generate_simple_kms_data_key(
    primary_material: str, *, app_id: str | None = None, insecure_bigdl_format: bool = False
) -> tuple[BigDLDataKey, str]:
    """A SimpleKMS data key as BigDL's ``KeyLoader`` makes one: (unwrap(wrap(digits)), wrapped string)."""
    _require_opt_in(insecure_bigdl_format)
    _warn("generating a BigDL SimpleKMS data key: it has no secret and about 13 bits of AES key entropy")
    digits = "".join(str(secrets.randbelow(10)) for _ in range(_SIMPLE_DIGITS))
    wrapped = wrap_simple_kms(primary_material, digits, app_id=app_id)
    return unwrap_simple_kms(primary_material, wrapped, app_id=app_id), wrapped


def generate_simple_kms_primary_material(app_id: str, *, insecure_bigdl_format: bool = False) -> str:
    """SimpleKMS primary material: ``app_id`` + 4 random digits (BigDL writes it plus a newline)."""
    _require_opt_in(insecure_bigdl_format)
    _warn("generating a BigDL SimpleKMS primary key: it protects nothing")
    _check_app_id(app_id)
    return app_id + "".join(str(secrets.randbelow(10)) for _ in range(4))


def _simple_primary(primary_material: str, *, app_id: str | None) -> str:
    primary = _ascii(primary_material, what="SimpleKMS primary key material")
    if len(primary) < _SIMPLE_DIGITS:
        raise KeyProviderError(
            f"the BigDL SimpleKMS primary key material has {len(primary)} characters; BigDL needs at least 16"
        )
    if app_id is not None and primary[:SIMPLE_KMS_APP_ID_LENGTH] != _check_app_id(app_id):
        raise KeyProviderError("the SimpleKMS appId does not match the primary key file")
    return primary


def _check_app_id(app_id: str) -> str:
    if not isinstance(app_id, str) or len(app_id) != SIMPLE_KMS_APP_ID_LENGTH or not app_id.isascii():
        raise ConfigError(
            f"a BigDL SimpleKMS appId must be {SIMPLE_KMS_APP_ID_LENGTH} ASCII characters: BigDL compares "
            "it with the first 12 characters of the primary key file"
        )
    return app_id


def _ascii(text: object, *, what: str) -> str:
    """Java indexes UTF-16 code units and Python code points; both agree only on ASCII."""
    if not isinstance(text, str) or not text.isascii():
        raise KeyProviderError(f"the BigDL {what} must be an ASCII string")
    return text


def _java_rem(a: int, b: int) -> int:
    """Java/Scala ``%``: the remainder takes the dividend's sign (Python's ``%`` takes the divisor's)."""
    r = abs(a) % b
    return -r if a < 0 else r


# --------------------------------------------------------------------------------------------------


def _require_opt_in(flag: bool) -> None:
    if flag is not True:
        raise ConfigError(
            "refusing to create BigDL key material: BigDL's formats are weakly keyed; pass "
            "insecure_bigdl_format=True only to hand data back to a BigDL cluster"
        )


def _warn(message: str) -> None:
    warnings.warn(message, InsecureFormatWarning, stacklevel=3)
