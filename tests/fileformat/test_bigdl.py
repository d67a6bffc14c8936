"""BigDL PPML formats: layout, authentication, key derivation, opt-in writers and frozen vectors."""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import logging
import pickle
import struct
from pathlib import Path

import pytest

from ppml.errors import (
    ConfigError,
    InvalidCiphertext,
    MalformedHeader,
    SegmentAuthenticationFailed,
    TruncatedCiphertext,
    WrongKey,
)
from ppml.fileformat import bigdl
from ppml.fileformat.bigdl import (
    BIGDL_HEADER_SIZE,
    BigDLDataKey,
    InsecureFormatWarning,
    build_bigdl_header,
    decrypt_bigdl,
    decrypt_bigdl_native,
    decrypt_bigdl_native_stream,
    decrypt_bigdl_stream,
    derive_common_keys,
    derive_native_key,
    encrypt_bigdl,
    encrypt_bigdl_native,
    encrypt_bigdl_native_stream,
    encrypt_bigdl_stream,
    format_bigdl_meta,
    looks_like_bigdl,
    parse_bigdl_header,
    parse_bigdl_meta,
    read_bigdl_header,
)

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "bigdl"
NAME = "part-00000.csv.cbc"
DK = BigDLDataKey(base64.b64encode(bytes(range(100, 116))).decode())  # 24 chars, like KeyLoader's
EDK = "k9pRrS6P1wJ2cQm0Zs0t3w1p0tVhX1bW9bqkYl0m0Ww="
NATIVE_DK = BigDLDataKey(base64.b64encode(bytes(range(32))).decode())
SIZES = [0, 1, 15, 16, 17, (1 << 20) - 1, 1 << 20, (1 << 20) + 1]


def payload(n: int) -> bytes:
    return bytes((i * 7 + 3) % 256 for i in range(n)) if n < 4096 else (b"abcdefghij" * (n // 10 + 1))[:n]


def encrypt(plaintext: bytes, data_key: BigDLDataKey = DK, edk: str = EDK) -> bytes:
    with pytest.warns(InsecureFormatWarning):
        return encrypt_bigdl(plaintext, data_key, edk, insecure_bigdl_format=True, name=NAME)


def encrypt_native(plaintext: bytes, data_key: BigDLDataKey = NATIVE_DK) -> bytes:
    with pytest.warns(InsecureFormatWarning):
        return encrypt_bigdl_native(plaintext, data_key, insecure_bigdl_format=True, name=NAME)


def decrypt_native(data: bytes, data_key: BigDLDataKey = NATIVE_DK) -> bytes:
    with pytest.warns(InsecureFormatWarning, match="no MAC"):
        return decrypt_bigdl_native(data, data_key, name=NAME)


def flip(data: bytes, index: int, bit: int = 0) -> bytes:
    out = bytearray(data)
    out[index] ^= 1 << bit
    return bytes(out)


class Dribble(io.RawIOBase):
    """A source that returns at most 7 bytes per read, as sockets and some filesystems may."""

    def __init__(self, data: bytes) -> None:
        self._inner = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        return self._inner.read(7 if size < 0 else min(size, 7))


# --- round trips ---------------------------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
def test_common_round_trip_in_memory_and_stream(size: int) -> None:
    plaintext = payload(size)
    data = encrypt(plaintext)
    assert len(data) == BIGDL_HEADER_SIZE + (size // 16 + 1) * 16 + 32
    assert decrypt_bigdl(data, DK, name=NAME) == plaintext
    sink = io.BytesIO()
    assert decrypt_bigdl_stream(io.BytesIO(data), sink, DK, name=NAME) == size
    assert sink.getvalue() == plaintext


@pytest.mark.parametrize("size", SIZES)
def test_native_round_trip(size: int) -> None:
    plaintext = payload(size)
    data = encrypt_native(plaintext)
    assert len(data) == 16 + (size // 16 + 1) * 16
    assert decrypt_native(data) == plaintext


def test_stream_apis_tolerate_short_reads() -> None:
    plaintext = payload(1000)
    sink = io.BytesIO()
    with pytest.warns(InsecureFormatWarning):
        encrypt_bigdl_stream(Dribble(plaintext), sink, DK, EDK, insecure_bigdl_format=True, name=NAME)
    out = io.BytesIO()
    decrypt_bigdl_stream(Dribble(sink.getvalue()), out, DK, name=NAME)
    assert out.getvalue() == plaintext
    native = io.BytesIO()
    with pytest.warns(InsecureFormatWarning):
        encrypt_bigdl_native_stream(Dribble(plaintext), native, NATIVE_DK, insecure_bigdl_format=True,
                                    name=NAME)
    out = io.BytesIO()
    with pytest.warns(InsecureFormatWarning):
        decrypt_bigdl_native_stream(Dribble(native.getvalue()), out, NATIVE_DK, name=NAME)
    assert out.getvalue() == plaintext


# --- layout ----------------------------------------------------------------------------------------


def test_header_layout_matches_bigdl() -> None:
    data = encrypt(b"name,age,job\n")
    edk_len, iv_len = struct.unpack(">ii", data[:8])
    assert (edk_len, iv_len) == (len(EDK), 16)
    assert data[8 : 8 + edk_len].decode() == EDK
    assert data[8 + edk_len + 16 : BIGDL_HEADER_SIZE] == b"\x80" * (BIGDL_HEADER_SIZE - 8 - edk_len - 16)
    header = read_bigdl_header(io.BytesIO(data), name=NAME)
    assert header.encrypted_data_key == EDK
    assert header.iv == data[8 + edk_len : 8 + edk_len + 16]


def test_tag_is_hmac_sha256_of_ciphertext_only() -> None:
    # BigDLEncrypt feeds mac.update/doFinal with cipher output only: the header is not covered.
    data = encrypt(payload(100))
    mac_key = DK.insecure_bytes()[:16]
    body, tag = data[BIGDL_HEADER_SIZE:-32], data[-32:]
    assert tag == hmac.new(mac_key, body, hashlib.sha256).digest()


def test_longest_encrypted_data_key_fills_header_exactly() -> None:
    edk = "x" * (BIGDL_HEADER_SIZE - 8 - 16)
    header = build_bigdl_header(edk, bytes(16))
    assert len(header) == BIGDL_HEADER_SIZE and header.endswith(bytes(16))
    assert parse_bigdl_header(header, name=NAME).encrypted_data_key == edk
    with pytest.raises(ConfigError, match="400-byte header"):
        build_bigdl_header(edk + "x", bytes(16))


# --- authentication failures ---------------------------------------------------------------------


def both_decrypt_paths(data: bytes, data_key: BigDLDataKey = DK, **kwargs: object) -> list[Exception]:
    """Run the in-memory and the streaming reader; return the two exceptions they raised."""
    errors: list[Exception] = []
    for run in (lambda: decrypt_bigdl(data, data_key, name=NAME, **kwargs),
                lambda: decrypt_bigdl_stream(io.BytesIO(data), io.BytesIO(), data_key, name=NAME, **kwargs)):
        with pytest.raises(InvalidCiphertext) as info:
            run()
        errors.append(info.value)
    return errors


def assert_hmac_mismatch(data: bytes, data_key: BigDLDataKey = DK) -> None:
    for error in both_decrypt_paths(data, data_key):
        assert isinstance(error, SegmentAuthenticationFailed)
        assert NAME in str(error) and "BigDL HMAC does not match" in str(error)


@pytest.mark.parametrize("offset", [BIGDL_HEADER_SIZE, BIGDL_HEADER_SIZE + 40, -33])
def test_ciphertext_bit_flip_is_rejected(offset: int) -> None:
    assert_hmac_mismatch(flip(encrypt(payload(100)), offset))


@pytest.mark.parametrize("offset", [-32, -1])
def test_tag_bit_flip_is_rejected(offset: int) -> None:
    assert_hmac_mismatch(flip(encrypt(payload(100)), offset, bit=7))


@pytest.mark.parametrize("cut", [1, 16, 32, 48])
def test_truncation_is_rejected(cut: int) -> None:
    assert_hmac_mismatch(encrypt(payload(100))[:-cut])


@pytest.mark.parametrize("extra", [b"\x00", b"\x00" * 16, b"A" * 32])
def test_appended_bytes_are_rejected(extra: bytes) -> None:
    assert_hmac_mismatch(encrypt(payload(100)) + extra)


def test_tampered_large_file_is_rejected_by_the_stream_reader() -> None:
    assert_hmac_mismatch(flip(encrypt(payload((1 << 20) + 1)), BIGDL_HEADER_SIZE + (1 << 20)))


def test_wrong_data_key_is_rejected() -> None:
    other = BigDLDataKey(base64.b64encode(bytes(range(200, 216))).decode())
    assert_hmac_mismatch(encrypt(payload(100)), other)


@pytest.mark.parametrize("length", [0, 10, BIGDL_HEADER_SIZE - 1, BIGDL_HEADER_SIZE, BIGDL_HEADER_SIZE + 31])
def test_file_shorter_than_header_and_tag_is_truncated(length: int) -> None:
    data = encrypt(payload(100))[:length]
    for error in both_decrypt_paths(data):
        assert isinstance(error, TruncatedCiphertext)
        assert NAME in str(error) and "truncated" in str(error)


def test_zero_byte_file_only_with_allow_empty() -> None:
    # BigDL's Hadoop codec writes nothing at all for an empty partition: no header, no tag.
    assert decrypt_bigdl(b"", DK, name=NAME, allow_empty=True) == b""
    assert decrypt_bigdl_stream(io.BytesIO(b""), io.BytesIO(), DK, name=NAME, allow_empty=True) == 0
    for error in both_decrypt_paths(b""):
        assert isinstance(error, TruncatedCiphertext)


def test_iv_bit_flip_is_not_detected_documented_limitation() -> None:
    # BigDL's HMAC covers the ciphertext only, not the 400-byte header, so a flipped IV bit flips the same
    # bit of the first plaintext block and nothing can notice: BigDL data carries no value to check it
    # against. This test pins the limitation (documented in the module docstring); it is not a feature.
    plaintext = b"name,age,job\nalice,30,engineer\n"
    data = encrypt(plaintext)
    iv_offset = 8 + len(EDK)
    tampered = decrypt_bigdl(flip(data, iv_offset), DK, name=NAME)
    assert tampered == b"oame,age,job\nalice,30,engineer\n"


def test_header_fill_and_length_fields_are_checked() -> None:
    # These are checks genuine BigDL files always pass: BigDL always writes N = 16 and 0x80 fill.
    data = encrypt(payload(10))
    for bad in (flip(data, BIGDL_HEADER_SIZE - 1), flip(data, 7), flip(data, 1, bit=7)):
        for error in both_decrypt_paths(bad):
            assert isinstance(error, MalformedHeader) and NAME in str(error)


def test_edk_that_is_not_utf8_is_malformed() -> None:
    with pytest.raises(MalformedHeader, match="not UTF-8"):
        parse_bigdl_header(struct.pack(">ii", 2, 16) + b"\xff\xfe" + bytes(16) + b"\x80" * 374, name=NAME)


def test_expected_encrypted_data_key_mismatch_is_wrong_key() -> None:
    data = encrypt(payload(10))
    assert decrypt_bigdl(data, DK, name=NAME, expected_encrypted_data_key=EDK) == payload(10)
    for error in both_decrypt_paths(data, expected_encrypted_data_key="another"):
        assert isinstance(error, WrongKey) and NAME in str(error)


def test_stream_reader_raises_after_staging_output() -> None:
    # The stream API may write unverified plaintext; callers must discard dst when it raises.
    data = flip(encrypt(payload(5000)), -1)
    sink = io.BytesIO()
    with pytest.raises(SegmentAuthenticationFailed):
        decrypt_bigdl_stream(io.BytesIO(data), sink, DK, name=NAME)
    assert sink.getvalue()  # staged, unauthenticated: the caller's job to drop it


# --- nativeaescbc ----------------------------------------------------------------------------------


def test_native_reading_warns_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    data = encrypt_native(b"x")
    with caplog.at_level(logging.WARNING, logger="ppml.fileformat.bigdl"):
        assert decrypt_native(data) == b"x"
    assert "no MAC" in caplog.text and NAME in caplog.text


@pytest.mark.parametrize("length", [0, 15, 16, 17, 31])
def test_native_truncation_names_the_file(length: int) -> None:
    data = encrypt_native(payload(40))[:length]
    with pytest.raises(TruncatedCiphertext, match=NAME), pytest.warns(InsecureFormatWarning):
        decrypt_bigdl_native(data, NATIVE_DK, name=NAME)


def test_native_bad_padding_names_the_file() -> None:
    data = encrypt_native(payload(40))
    forged = data[:-16] + bytes(16)  # last block replaced: decrypts to random bytes, padding fails
    with pytest.raises(InvalidCiphertext, match=f"{NAME}.*padding"), pytest.warns(InsecureFormatWarning):
        decrypt_bigdl_native(forged, NATIVE_DK, name=NAME)


def test_native_key_is_base64_decoded() -> None:
    assert derive_native_key(NATIVE_DK).insecure_bytes() == bytes(range(32))
    unpadded = BigDLDataKey(base64.b64encode(bytes(range(16))).decode().rstrip("="))
    assert derive_native_key(unpadded).insecure_bytes() == bytes(range(16))
    with pytest.raises(ConfigError, match="not valid base64"):
        derive_native_key(BigDLDataKey("not base64 at all!!"))
    with pytest.raises(ConfigError, match="20 bytes"):
        derive_native_key(BigDLDataKey(base64.b64encode(bytes(20)).decode()))


# --- key derivation (weak keys pinned on purpose) -------------------------------------------------


def test_sixteen_byte_data_key_gives_all_zero_aes_key() -> None:
    keys = derive_common_keys(BigDLDataKey("1234567890123456"))
    assert keys.aes_key.insecure_bytes() == bytes(16)
    assert keys.mac_key.insecure_bytes() == b"1234567890123456"


def test_base64_data_key_uses_eight_characters_and_eight_zero_bytes() -> None:
    text = DK.insecure_text()
    assert len(text) == 24 and text.endswith("==")
    keys = derive_common_keys(DK)
    assert keys.aes_key.insecure_bytes() == text[16:24].encode() + bytes(8)
    assert keys.mac_key.insecure_bytes() == text[:16].encode()


def test_long_data_key_is_cut_at_32_bytes() -> None:
    text = base64.b64encode(bytes(range(32))).decode()  # 44 chars, as Azure / EHSM keys
    keys = derive_common_keys(BigDLDataKey(text))
    assert keys.aes_key.insecure_bytes() == text[16:32].encode()


def test_derivation_uses_utf8_bytes_not_characters() -> None:
    text = "é" * 10  # 10 characters, 20 UTF-8 bytes
    keys = derive_common_keys(BigDLDataKey(text))
    assert keys.mac_key.insecure_bytes() == text.encode()[:16]
    assert keys.aes_key.insecure_bytes() == text.encode()[16:] + bytes(12)


def test_data_key_shorter_than_16_bytes_is_refused() -> None:
    # BigDL's Arrays.copyOfRange(secret, 16, 32) throws for such a key, so no BigDL file can use one.
    with pytest.raises(ValueError, match="at least 16 bytes"):
        BigDLDataKey("123456789012345")


def test_data_key_is_redacted_and_unpicklable() -> None:
    assert DK.insecure_text() not in repr(DK) and "redacted" in repr(DK)
    assert DK.insecure_text() not in f"{DK}"
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(DK)
    assert BigDLDataKey(DK.insecure_text()) == DK
    with pytest.raises(TypeError, match="BigDLDataKey"):
        decrypt_bigdl(encrypt(b""), DK.insecure_text(), name=NAME)  # type: ignore[arg-type]


# --- writers need the opt-in ----------------------------------------------------------------------


@pytest.mark.parametrize("flag", [False, None, 1, "yes"])
def test_writers_refuse_without_explicit_opt_in(flag: object) -> None:
    with pytest.raises(ConfigError, match="insecure_bigdl_format=True"):
        encrypt_bigdl(b"x", DK, EDK, insecure_bigdl_format=flag, name=NAME)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="insecure_bigdl_format=True"):
        encrypt_bigdl_native(b"x", NATIVE_DK, insecure_bigdl_format=flag, name=NAME)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        encrypt_bigdl(b"x", DK, EDK, name=NAME)


def test_writers_warn_on_every_use(caplog: pytest.LogCaptureFixture) -> None:
    for _ in range(2):
        with pytest.warns(InsecureFormatWarning, match=NAME):
            encrypt_bigdl(b"x", DK, EDK, insecure_bigdl_format=True, name=NAME)
        with pytest.warns(InsecureFormatWarning, match="no MAC"):
            encrypt_bigdl_native(b"x", NATIVE_DK, insecure_bigdl_format=True, name=NAME)
    assert caplog.text.count("writing the BigDL") == 4
    assert DK.insecure_text() not in caplog.text


def test_writer_uses_a_fresh_iv_each_time() -> None:
    assert encrypt(b"same")[:BIGDL_HEADER_SIZE] != encrypt(b"same")[:BIGDL_HEADER_SIZE]


# --- detection ---------------------------------------------------------------------------------------


def test_looks_like_bigdl() -> None:
    data = encrypt(b"x")
    assert looks_like_bigdl(data[:BIGDL_HEADER_SIZE])
    assert looks_like_bigdl(data[:8])
    assert not looks_like_bigdl(data[:7])
    assert not looks_like_bigdl(flip(data, BIGDL_HEADER_SIZE - 1)[:BIGDL_HEADER_SIZE])
    assert not looks_like_bigdl(b"PAR1" + bytes(396))
    assert not looks_like_bigdl(b"name,age,job\n" * 40)
    assert not looks_like_bigdl(struct.pack(">ii", 377, 16) + bytes(392))
    multibyte = struct.pack(">ii", 4, 16) + "éé".encode()
    assert looks_like_bigdl(multibyte[:9])  # cut inside a character: still plausible
    assert not looks_like_bigdl(struct.pack(">ii", 4, 16) + b"\xff\xfe")


# --- .meta ------------------------------------------------------------------------------------------


def test_meta_round_trip_and_jackson_layout() -> None:
    text = format_bigdl_meta(EDK)
    assert text == '{\n  "encryptedDataKey" : "' + EDK + '"\n}\n'
    assert parse_bigdl_meta(text, name=".meta") == EDK
    assert parse_bigdl_meta(text.encode(), name=".meta") == EDK


def test_meta_parsing_is_lenient_like_jackson() -> None:
    # KmsMetaFormat's mapper: ACCEPT_CASE_INSENSITIVE_PROPERTIES, FAIL_ON_UNKNOWN_PROPERTIES=false.
    assert parse_bigdl_meta('{"ENCRYPTEDDATAKEY": "abc", "other": 1}', name=".meta") == "abc"


@pytest.mark.parametrize("text", ["", "not json", "[]", '{"encryptedDataKey": 5}', '{"other": "x"}',
                                  '{"encryptedDataKey": "a", "encrypteddatakey": "b"}'])
def test_bad_meta_is_malformed(text: str) -> None:
    with pytest.raises(MalformedHeader, match=r"dir/\.meta"):
        parse_bigdl_meta(text, name="dir/.meta")


# --- frozen vectors (see tests/vectors/bigdl/PROVENANCE.md) ---------------------------------------


def load_vectors() -> list[dict[str, str]]:
    return json.loads((VECTORS / "vectors.json").read_text())["vectors"]


def vector_plaintext(vector: dict[str, str]) -> bytes:
    if "plaintext_hex" in vector:
        return bytes.fromhex(vector["plaintext_hex"])
    assert vector["plaintext_pattern"] == "bytes((i * 31 + 7) % 251 for i in range(70001))"
    return bytes((i * 31 + 7) % 251 for i in range(70001))


@pytest.mark.parametrize("vector", load_vectors(), ids=lambda v: v["file"])
def test_frozen_vector_decrypts(vector: dict[str, str]) -> None:
    data = (VECTORS / vector["file"]).read_bytes()
    data_key = BigDLDataKey(vector["data_key"])
    if vector["format"] == "common":
        header = parse_bigdl_header(data[:BIGDL_HEADER_SIZE], name=vector["file"])
        assert header.encrypted_data_key == vector["encrypted_data_key"]
        assert header.iv.hex() == vector["iv_hex"]
        assert decrypt_bigdl(data, data_key, name=vector["file"]) == vector_plaintext(vector)
        assert looks_like_bigdl(data[:BIGDL_HEADER_SIZE])
    else:
        assert decrypt_native(data, data_key) == vector_plaintext(vector)


@pytest.mark.parametrize("vector", load_vectors(), ids=lambda v: v["file"])
def test_writer_reproduces_frozen_vector_byte_for_byte(vector: dict[str, str]) -> None:
    data_key, iv, sink = BigDLDataKey(vector["data_key"]), bytes.fromhex(vector["iv_hex"]), io.BytesIO()
    source = io.BytesIO(vector_plaintext(vector))
    if vector["format"] == "common":
        bigdl._encrypt_common(source, sink, data_key, vector["encrypted_data_key"], iv)
    else:
        bigdl._encrypt_native(source, sink, data_key, iv)
    assert sink.getvalue() == (VECTORS / vector["file"]).read_bytes()


def test_frozen_meta_file() -> None:
    meta = json.loads((VECTORS / "vectors.json").read_text())["meta"]
    text = (VECTORS / meta["file"]).read_text()
    assert format_bigdl_meta(meta["encrypted_data_key"]) == text
    assert parse_bigdl_meta(text, name=meta["file"]) == meta["encrypted_data_key"]
