"""The frozen ``.ppml`` v1 vectors: ppml reads them, still writes them byte for byte, and so does the spec.

``tests/vectors/ppml_v1.json`` is committed and frozen. A failure of ``test_writer_reproduces_vector``
means the byte format changed; that is only acceptable together with a new format version (and then
``python tests/vectors/generate_vectors.py --write``).
"""

from __future__ import annotations

import importlib.util
import io
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from ppml import errors
from ppml._secrets import SecretKey
from ppml.fileformat import DecryptingReader, EncryptingWriter, Header, KeyResolver, decrypt_bytes

VECTORS_DIR = Path(__file__).resolve().parents[1] / "vectors"


def _load(name: str) -> ModuleType:
    """Import a script from ``tests/vectors`` (not a package) by path."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, VECTORS_DIR / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


verify_format = _load("verify_format")
DOCUMENT = verify_format.load(VECTORS_DIR / "ppml_v1.json")
VALID: dict[str, dict[str, Any]] = {vector["name"]: vector for vector in DOCUMENT["valid"]}
INVALID: dict[str, dict[str, Any]] = {case["name"]: case for case in DOCUMENT["invalid"]}


def resolver(dek_hex: str) -> KeyResolver:
    key = SecretKey(bytes.fromhex(dek_hex))

    def resolve(_header: Header) -> SecretKey:
        return key

    return resolve


def plaintext_of(vector: dict[str, Any]) -> bytes:
    return verify_format.expand_plaintext(vector["plaintext"])


def ciphertext_of(vector: dict[str, Any]) -> bytes:
    return verify_format.ciphertext_of(vector)


def test_vector_file_covers_the_required_cases() -> None:
    assert DOCUMENT["version"] == 1
    assert {"empty", "one-byte", "segment0-exact", "segment0-plus-one", "three-segments-exact",
            "three-segments-partial", "unicode-metadata", "default-segment-size"} <= set(VALID)
    first = 4096 - 56
    lengths = {name: len(plaintext_of(vector)) for name, vector in VALID.items()}
    assert lengths["empty"] == 0
    assert lengths["one-byte"] == 1
    assert lengths["segment0-exact"] == first
    assert lengths["segment0-plus-one"] == first + 1
    assert lengths["three-segments-exact"] == first + 2 * (4096 - 16)
    assert first + (4096 - 16) < lengths["three-segments-partial"] < first + 2 * (4096 - 16)
    assert VALID["default-segment-size"]["segment_size"] == 1024 * 1024
    assert VALID["three-segments-exact"]["expected"]["segment_count"] == 3
    assert VALID["three-segments-partial"]["expected"]["segment_count"] == 3


@pytest.mark.parametrize("name", sorted(VALID))
def test_ppml_decrypts_vector(name: str) -> None:
    vector = VALID[name]
    assert decrypt_bytes(ciphertext_of(vector), resolver(vector["dek"]), name=name) == plaintext_of(vector)


@pytest.mark.parametrize("name", sorted(VALID))
def test_ppml_random_access_reads_vector(name: str) -> None:
    vector = VALID[name]
    with DecryptingReader(io.BytesIO(ciphertext_of(vector)), resolver(vector["dek"]), name=name) as reader:
        header = reader.header
        assert reader.size == len(plaintext_of(vector))
        assert reader.read() == plaintext_of(vector)
    assert header.segment_size == vector["segment_size"]
    assert header.file_id.hex() == vector["file_id"]
    assert header.key_check.hex() == vector["expected"]["key_check"]
    assert header.header_mac.hex() == vector["expected"]["header_mac"]
    assert header.key_uri == vector["key_uri"]
    assert header.wrapped_key.hex() == vector["wrapped_key"]
    assert dict(header.metadata) == vector["metadata"]
    assert header.size == vector["expected"]["header_size"]


@pytest.mark.parametrize("name", sorted(VALID))
def test_writer_reproduces_vector(name: str) -> None:
    vector = VALID[name]
    sink = io.BytesIO()
    body_header = bytes([40]) + bytes.fromhex(vector["salt"]) + bytes.fromhex(vector["nonce_prefix"])
    with EncryptingWriter(sink, data_key=SecretKey(bytes.fromhex(vector["dek"])), key_uri=vector["key_uri"],
                          wrapped_key=bytes.fromhex(vector["wrapped_key"]), metadata=vector["metadata"],
                          segment_size=vector["segment_size"], _file_id=bytes.fromhex(vector["file_id"]),
                          _body_header=body_header) as writer:
        writer.write(plaintext_of(vector))
    assert sink.getvalue() == ciphertext_of(vector), "the .ppml v1 byte format changed"


@pytest.mark.parametrize("name", sorted(VALID))
def test_independent_decoder_decodes_vector(name: str) -> None:
    decoded = verify_format.check_valid(VALID[name])
    assert decoded.plaintext == plaintext_of(VALID[name])


@pytest.mark.parametrize("name", sorted(INVALID))
def test_ppml_rejects_invalid_vector(name: str) -> None:
    case = INVALID[name]
    data = verify_format.invalid_ciphertext(case, VALID)
    expected = getattr(errors, case["error"])
    with pytest.raises(expected, match=name):
        decrypt_bytes(data, resolver(verify_format.invalid_dek(case, VALID).hex()), name=name)




def read_all_random_access(data: bytes, dek_hex: str, name: str) -> bytes:
    with DecryptingReader(io.BytesIO(data), resolver(dek_hex), name=name) as reader:
        return reader.read()


@pytest.mark.parametrize("name", sorted(INVALID))
def test_ppml_random_access_rejects_invalid_vector(name: str) -> None:
    case = INVALID[name]
    data = verify_format.invalid_ciphertext(case, VALID)
    expected = getattr(errors, case["error"])
    with pytest.raises(expected, match=name):
        read_all_random_access(data, verify_format.invalid_dek(case, VALID).hex(), name)


@pytest.mark.parametrize("name", sorted(INVALID))
def test_independent_decoder_rejects_invalid_vector(name: str) -> None:
    error = verify_format.check_invalid(INVALID[name], VALID)
    assert error.kind == INVALID[name]["error"]


def test_every_invalid_vector_names_a_ppml_error_class() -> None:
    for case in INVALID.values():
        assert issubclass(getattr(errors, case["error"]), errors.InvalidCiphertext), case["name"]
        assert case["base"] in VALID, case["name"]


def test_generator_reproduces_frozen_document() -> None:
    generate_vectors = _load("generate_vectors")
    assert generate_vectors.build_document() == DOCUMENT
