"""The ``.ppml`` body is a Tink AES-GCM-HKDF streaming ciphertext, in both directions.

A ppml file is ``header || body``, and the body decrypts with ``tink`` under a RAW
``AesGcmHkdfStreamingKey`` holding the data key, with the header's fixed part as associated data.
Conversely, a body that Tink encrypted becomes a valid ppml file once a header is put in front of it.
"""

from __future__ import annotations

import io
import os
from dataclasses import replace

import pytest
import tink
from tink import cleartext_keyset_handle, streaming_aead
from tink.proto import aes_gcm_hkdf_streaming_pb2, common_pb2, tink_pb2

from ppml._secrets import SecretKey
from ppml.fileformat import DecryptingReader, EncryptingWriter, Header, KeyResolver, decrypt_bytes, read_header
from ppml.fileformat._segments import header_mac, key_check

KEY_TYPE_URL = "type.googleapis.com/google.crypto.tink.AesGcmHkdfStreamingKey"
S = 4096
MIB = 1024 * 1024
FIRST, LATER = S - 56, S - 16  # plaintext capacity of segment 0 and of later segments at S = 4096

SMALL_SEGMENT_SIZES = [0, 1, 100, FIRST - 1, FIRST, FIRST + 1, FIRST + LATER, FIRST + LATER + 1,
                       FIRST + 2 * LATER, FIRST + 2 * LATER + 777, FIRST + 5 * LATER - 1]
DEFAULT_SEGMENT_SIZES = [0, 1000, MIB - 56, MIB - 55, MIB + MIB // 2]

streaming_aead.register()


def tink_params(segment_size: int) -> aes_gcm_hkdf_streaming_pb2.AesGcmHkdfStreamingParams:
    """Parameters of a 256-bit AES-GCM-HKDF streaming key; 1 MiB ones come from Tink's own template."""
    if segment_size == MIB:
        template = streaming_aead.streaming_aead_key_templates.AES256_GCM_HKDF_1MB
        assert template.type_url == KEY_TYPE_URL
        assert template.output_prefix_type == tink_pb2.RAW
        key_format = aes_gcm_hkdf_streaming_pb2.AesGcmHkdfStreamingKeyFormat.FromString(template.value)
        assert key_format.key_size == 32
        return key_format.params
    return aes_gcm_hkdf_streaming_pb2.AesGcmHkdfStreamingParams(
        ciphertext_segment_size=segment_size, derived_key_size=32, hkdf_hash_type=common_pb2.SHA256)


def tink_primitive(dek: bytes, segment_size: int) -> streaming_aead.StreamingAead:
    """A Tink streaming AEAD over the raw data key ``dek``."""
    key = aes_gcm_hkdf_streaming_pb2.AesGcmHkdfStreamingKey(version=0, params=tink_params(segment_size),
                                                           key_value=dek)
    keyset = tink_pb2.Keyset(primary_key_id=1, key=[tink_pb2.Keyset.Key(
        key_data=tink_pb2.KeyData(type_url=KEY_TYPE_URL, value=key.SerializeToString(),
                                  key_material_type=tink_pb2.KeyData.SYMMETRIC),
        status=tink_pb2.ENABLED, key_id=1, output_prefix_type=tink_pb2.RAW)])
    handle = cleartext_keyset_handle.from_keyset(keyset)
    return handle.primitive(streaming_aead.StreamingAead)


def tink_decrypt(dek: bytes, segment_size: int, body: bytes, associated_data: bytes) -> bytes:
    primitive = tink_primitive(dek, segment_size)
    with primitive.new_decrypting_stream(io.BytesIO(body), associated_data) as stream:
        return stream.read()


class _KeepOnClose(io.BytesIO):
    """A sink whose contents survive ``close()`` (Tink closes the destination with its stream)."""

    def close(self) -> None:
        self.kept = self.getvalue()
        super().close()


def tink_encrypt(dek: bytes, segment_size: int, plaintext: bytes, associated_data: bytes) -> bytes:
    sink = _KeepOnClose()
    with tink_primitive(dek, segment_size).new_encrypting_stream(sink, associated_data) as stream:
        stream.write(plaintext)
    return sink.kept


def ppml_encrypt(dek: bytes, segment_size: int, plaintext: bytes,
                 metadata: dict[str, object] | None = None) -> tuple[bytes, Header]:
    sink = io.BytesIO()
    with EncryptingWriter(sink, data_key=SecretKey(dek), key_uri="local:interop", wrapped_key=b"\x01" * 65,
                          metadata=metadata or {"content_type": "application/octet-stream"},
                          segment_size=segment_size) as writer:
        writer.write(plaintext)
    return sink.getvalue(), writer.header


def resolver(dek: bytes) -> KeyResolver:
    key = SecretKey(dek)
    return lambda _header: key


def ppml_file_around_tink_body(dek: bytes, segment_size: int, plaintext: bytes) -> bytes:
    """A ppml file whose body Tink encrypted: the header is built by hand around Tink's output."""
    key = SecretKey(dek)
    file_id = os.urandom(16)
    header = Header(segment_size=segment_size, file_id=file_id, key_check=key_check(key, file_id),
                    key_uri="local:from-tink", wrapped_key=b"opaque wrapped key",
                    metadata={"producer": "tink", "size": len(plaintext)})
    body = tink_encrypt(dek, segment_size, plaintext, header.fixed_bytes())
    mac = header_mac(key, file_id, header.unauthenticated_bytes(), body[:40])
    return replace(header, header_mac=mac).to_bytes() + body


# -- ppml -> tink --------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", SMALL_SEGMENT_SIZES)
def test_tink_decrypts_ppml_body_small_segments(size: int) -> None:
    dek, plaintext = os.urandom(32), os.urandom(size)
    ciphertext, header = ppml_encrypt(dek, S, plaintext)
    assert tink_decrypt(dek, S, ciphertext[header.size :], header.fixed_bytes()) == plaintext


@pytest.mark.parametrize("size", DEFAULT_SEGMENT_SIZES)
def test_tink_decrypts_ppml_body_default_1mb_template(size: int) -> None:
    dek, plaintext = os.urandom(32), os.urandom(size)
    ciphertext, header = ppml_encrypt(dek, MIB, plaintext)
    assert tink_decrypt(dek, MIB, ciphertext[header.size :], header.fixed_bytes()) == plaintext


def test_tink_associated_data_is_the_fixed_part_as_stored() -> None:
    dek, plaintext = os.urandom(32), os.urandom(FIRST + 10)
    ciphertext, header = ppml_encrypt(dek, S, plaintext, metadata={"ü": "☃", "n": 3})
    parsed = read_header(io.BytesIO(ciphertext), "interop.ppml")
    assert parsed.fixed_bytes() == header.fixed_bytes() == ciphertext[: len(header.fixed_bytes())]
    assert tink_decrypt(dek, S, ciphertext[parsed.size :], parsed.fixed_bytes()) == plaintext


def test_tink_rejects_ppml_body_under_other_associated_data() -> None:
    dek, plaintext = os.urandom(32), os.urandom(100)
    ciphertext, header = ppml_encrypt(dek, S, plaintext, metadata={"v": 1})
    _, other = ppml_encrypt(dek, S, plaintext, metadata={"v": 2})
    with pytest.raises(tink.TinkError):
        tink_decrypt(dek, S, ciphertext[header.size :], other.fixed_bytes())


def test_tink_rejects_ppml_body_under_other_key() -> None:
    plaintext = os.urandom(100)
    ciphertext, header = ppml_encrypt(os.urandom(32), S, plaintext)
    with pytest.raises(tink.TinkError):
        tink_decrypt(os.urandom(32), S, ciphertext[header.size :], header.fixed_bytes())


# -- tink -> ppml --------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", SMALL_SEGMENT_SIZES)
def test_ppml_decrypts_tink_body_small_segments(size: int) -> None:
    dek, plaintext = os.urandom(32), os.urandom(size)
    data = ppml_file_around_tink_body(dek, S, plaintext)
    assert decrypt_bytes(data, resolver(dek), name="tink.ppml") == plaintext
    with DecryptingReader(io.BytesIO(data), resolver(dek), name="tink.ppml") as reader:
        assert reader.size == size
        assert reader.read() == plaintext
        middle = size // 3
        assert reader.read_range(middle, LATER + 5) == plaintext[middle : middle + LATER + 5]


@pytest.mark.parametrize("size", DEFAULT_SEGMENT_SIZES)
def test_ppml_decrypts_tink_body_default_1mb_template(size: int) -> None:
    dek, plaintext = os.urandom(32), os.urandom(size)
    data = ppml_file_around_tink_body(dek, MIB, plaintext)
    assert decrypt_bytes(data, resolver(dek), name="tink.ppml") == plaintext
    with DecryptingReader(io.BytesIO(data), resolver(dek), name="tink.ppml") as reader:
        assert reader.size == size
        assert reader.read() == plaintext


@pytest.mark.parametrize("size", [0, FIRST, FIRST + 2 * LATER])
def test_tink_and_ppml_bodies_have_the_same_length(size: int) -> None:
    dek, plaintext = os.urandom(32), os.urandom(size)
    ciphertext, header = ppml_encrypt(dek, S, plaintext)
    tink_body = tink_encrypt(dek, S, plaintext, header.fixed_bytes())
    assert len(tink_body) == len(ciphertext) - header.size
