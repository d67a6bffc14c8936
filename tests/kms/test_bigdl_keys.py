"""BigDL data-key unwrapping: plaintext primary keys and SimpleKMS, with their weak keys pinned."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from ppml.errors import ConfigError, KeyProviderError
from ppml.fileformat.bigdl import BigDLDataKey, InsecureFormatWarning, derive_common_keys, derive_native_key
from ppml.kms.bigdl import (
    generate_plaintext_primary_data_key,
    generate_simple_kms_data_key,
    generate_simple_kms_primary_material,
    native_data_key_from_primary,
    read_simple_kms_primary_file,
    unwrap_plaintext_primary,
    unwrap_simple_kms,
    wrap_plaintext_primary,
    wrap_simple_kms,
)

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "bigdl" / "vectors.json"
PRIMARY = base64.b64encode(bytes(range(1, 17))).decode()
OTHER_PRIMARY = base64.b64encode(bytes(range(2, 18))).decode()
DATA_KEY = BigDLDataKey(base64.b64encode(bytes(range(50, 66))).decode())


def vector(key_source: str) -> dict[str, str]:
    return next(v for v in json.loads(VECTORS.read_text())["vectors"] if v.get("key_source") == key_source)


# --- plaintext primary key ------------------------------------------------------------------------


def test_plaintext_primary_wrap_is_aes_ecb_pkcs5_over_the_utf8_string() -> None:
    wrapped = wrap_plaintext_primary(PRIMARY, DATA_KEY)
    padder = padding.PKCS7(128).padder()
    padded = padder.update(DATA_KEY.insecure_bytes()) + padder.finalize()
    encryptor = Cipher(algorithms.AES(bytes(range(1, 17))), modes.ECB()).encryptor()
    assert base64.b64decode(wrapped) == encryptor.update(padded) + encryptor.finalize()
    assert len(wrapped) == 44  # 24-char key + 8 bytes of padding = two blocks
    assert unwrap_plaintext_primary(PRIMARY, wrapped) == DATA_KEY


def test_plaintext_primary_frozen_vector() -> None:
    v = vector("plaintext_primary")
    assert unwrap_plaintext_primary(v["primary_key"], v["encrypted_data_key"]) == BigDLDataKey(v["data_key"])
    assert wrap_plaintext_primary(v["primary_key"], BigDLDataKey(v["data_key"])) == v["encrypted_data_key"]


def test_wrong_primary_key_fails_without_leaking_keys() -> None:
    wrapped = wrap_plaintext_primary(PRIMARY, DATA_KEY)
    with pytest.raises(KeyProviderError, match="wrong plaintext primary key") as info:
        unwrap_plaintext_primary(OTHER_PRIMARY, wrapped)
    for secret in (PRIMARY, OTHER_PRIMARY, DATA_KEY.insecure_text()):
        assert secret not in str(info.value)


@pytest.mark.parametrize(("primary", "wrapped", "message"), [
    ("not base64!", "AAAA", "primary key is not valid base64"),
    (base64.b64encode(bytes(20)).decode(), "AAAA", "20 bytes"),
    (PRIMARY, "%%%%", "encrypted data key is not valid base64"),
    (PRIMARY, base64.b64encode(bytes(15)).decode(), "bad length"),
    (PRIMARY, "", "bad length"),
])
def test_plaintext_primary_rejects_malformed_input(primary: str, wrapped: str, message: str) -> None:
    with pytest.raises(KeyProviderError, match=message):
        unwrap_plaintext_primary(primary, wrapped)


@pytest.mark.parametrize("size", [16, 24, 32])
def test_plaintext_primary_accepts_all_aes_sizes(size: int) -> None:
    primary = base64.b64encode(bytes(range(size))).decode()
    assert unwrap_plaintext_primary(primary, wrap_plaintext_primary(primary, DATA_KEY)) == DATA_KEY


def test_generated_plaintext_primary_data_key_has_only_32_bits_of_aes_key() -> None:
    with pytest.warns(InsecureFormatWarning, match="32 bits"):
        data_key, wrapped = generate_plaintext_primary_data_key(PRIMARY, insecure_bigdl_format=True)
    text = data_key.insecure_text()
    assert len(text) == 24 and len(base64.b64decode(text)) == 16
    assert unwrap_plaintext_primary(PRIMARY, wrapped) == data_key
    # The AES key is characters 16..24 of the base64 text ('==' included) and eight zero bytes:
    # 5 full base64 characters + 2 bits of the sixth = the random bytes 12..15 only.
    aes = derive_common_keys(data_key).aes_key.insecure_bytes()
    assert aes[:6] == text[16:22].encode() and aes[6:8] == b"==" and aes[8:] == bytes(8)


def test_generating_key_material_needs_the_opt_in() -> None:
    with pytest.raises(ConfigError, match="insecure_bigdl_format=True"):
        generate_plaintext_primary_data_key(PRIMARY)
    with pytest.raises(ConfigError, match="insecure_bigdl_format=True"):
        generate_simple_kms_data_key("123456789012" + "3456")
    with pytest.raises(ConfigError, match="insecure_bigdl_format=True"):
        generate_simple_kms_primary_material("123456789012")


def test_native_data_key_is_the_primary_key_itself() -> None:
    data_key = native_data_key_from_primary(PRIMARY)
    assert derive_native_key(data_key).insecure_bytes() == bytes(range(1, 17))
    with pytest.raises(KeyProviderError, match="not valid base64"):
        native_data_key_from_primary("???? not a key ????")


# --- SimpleKMS ----------------------------------------------------------------------------------------

# Known answers printed by scalac 2.12.17 running BigDL's expression shape (`s += '0' + x`), including
# negative Java remainders for primary characters below '0'.
SCALAC_ANSWERS = [
    ("1234567890123456", "0000000000000009", "49505152535455565748495051525353",
     "51555054485356525451525050494848"),
    ("-----+++++ab3456", "9876543210987654", "54535251504746454443565648484848",
     "56555654565548544853434549505757"),
]


@pytest.mark.parametrize(("primary", "digits", "wrapped", "data_key"), SCALAC_ANSWERS)
def test_simple_kms_matches_scala_semantics(primary: str, digits: str, wrapped: str, data_key: str) -> None:
    assert wrap_simple_kms(primary, digits) == wrapped
    assert unwrap_simple_kms(primary, wrapped) == BigDLDataKey(data_key)


def test_simple_kms_frozen_vector() -> None:
    v = vector("simple_kms")
    assert wrap_simple_kms(v["primary_material"], v["digits"], app_id=v["app_id"]) == v["encrypted_data_key"]
    unwrapped = unwrap_simple_kms(v["primary_material"], v["encrypted_data_key"], app_id=v["app_id"])
    assert unwrapped == BigDLDataKey(v["data_key"])


def test_simple_kms_data_key_is_32_digits_not_16() -> None:
    # shared/reference/bigdl-ppml.md 1.3 assumes a 16-digit data key (hence an all-zero AES key). The
    # Scala code appends Ints, so the key is 32 digits; its AES key is digits 16..32, not zeros.
    primary, wrapped, data_key = SCALAC_ANSWERS[0][0], SCALAC_ANSWERS[0][2], SCALAC_ANSWERS[0][3]
    key = unwrap_simple_kms(primary, wrapped)
    assert len(key) == 32 and key.insecure_text().isdigit()
    assert derive_common_keys(key).aes_key.insecure_bytes() == data_key[16:].encode()
    assert derive_common_keys(key).aes_key.insecure_bytes() != bytes(16)


def test_simple_kms_aes_key_depends_on_four_random_digits_only() -> None:
    # unwrap reads only the first 16 of the 32 wrapped characters = the codes of digits 0..7; the AES key
    # (data-key bytes 16..32) comes from wrapped characters 8..16 = digits 4..7. 10**4 candidates.
    primary = "123456789012" + "3456"

    def keys(digits: str) -> tuple[bytes, bytes]:
        derived = derive_common_keys(unwrap_simple_kms(primary, wrap_simple_kms(primary, digits)))
        return derived.mac_key.insecure_bytes(), derived.aes_key.insecure_bytes()

    base = keys("1111222233334444")
    assert keys("9999222233334444")[1] == base[1]  # digits 0..3 feed only the HMAC key
    assert keys("1111222200000000")[1] == base[1]  # digits 8..15 are ignored altogether
    assert keys("1111222200000000")[0] == base[0]
    assert keys("1111922233334444")[1] != base[1]  # digit 4 does change the AES key
    assert keys("9999222233334444")[0] != base[0]


def test_simple_kms_app_id_check() -> None:
    primary = "123456789012" + "3456"
    wrapped = wrap_simple_kms(primary, "0123456789012345")
    assert unwrap_simple_kms(primary, wrapped, app_id="123456789012") == unwrap_simple_kms(primary, wrapped)
    with pytest.raises(KeyProviderError, match="appId does not match"):
        unwrap_simple_kms(primary, wrapped, app_id="999999999999")
    with pytest.raises(ConfigError, match="12 ASCII characters"):
        unwrap_simple_kms(primary, wrapped, app_id="simpleAPPID")  # BigDL's 11-char default can never match


@pytest.mark.parametrize(("primary", "wrapped", "message"), [
    ("123456789012345", "4" * 32, "primary key material has 15 characters"),
    ("1234567890123456", "4" * 15, "encrypted data key has 15 characters"),
    ("12345678901234é6", "4" * 32, "must be an ASCII string"),
    ("1234567890123456", "4" * 31 + "é", "must be an ASCII string"),
])
def test_simple_kms_rejects_malformed_input(primary: str, wrapped: str, message: str) -> None:
    with pytest.raises(KeyProviderError, match=message):
        unwrap_simple_kms(primary, wrapped)


def test_simple_kms_wrap_needs_sixteen_digits() -> None:
    with pytest.raises(KeyProviderError, match="16 decimal digits"):
        wrap_simple_kms("1234567890123456", "123")


def test_generated_simple_kms_key_is_what_bigdl_encrypts_with() -> None:
    with pytest.warns(InsecureFormatWarning):
        primary = generate_simple_kms_primary_material("123456789012", insecure_bigdl_format=True)
    assert primary.startswith("123456789012") and len(primary) == 16 and primary[12:].isdigit()
    with pytest.warns(InsecureFormatWarning, match="13 bits"):
        data_key, wrapped = generate_simple_kms_data_key(primary, insecure_bigdl_format=True)
    assert len(wrapped) == 32 and wrapped.isdigit()
    assert unwrap_simple_kms(primary, wrapped) == data_key and len(data_key) == 32


def test_simple_kms_primary_file_is_its_first_line() -> None:
    assert read_simple_kms_primary_file("1234567890123456\n") == "1234567890123456"
    assert read_simple_kms_primary_file(b"1234567890123456\r\nrest\n") == "1234567890123456"
    with pytest.raises(KeyProviderError, match="empty"):
        read_simple_kms_primary_file("")
