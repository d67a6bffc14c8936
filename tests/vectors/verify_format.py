"""An independent decoder for the ``.ppml`` v1 container, written from ``docs/format.md`` alone.

It deliberately does not import ``ppml``: it re-implements the byte layout with plain ``struct`` and the
``cryptography`` primitives (HKDF-SHA256, HMAC-SHA256, AES-256-GCM), so that the frozen vectors in
``ppml_v1.json`` are checked by a second implementation of the specification, not only by the code that
wrote them.

It also defines the two conventions the vector file uses beyond the format itself:

* ``plaintext``: either ``{"hex": ...}`` or ``{"sha256_counter": {"seed": hex, "length": n}}``, meaning
  ``SHA256(seed || u32be(0)) || SHA256(seed || u32be(1)) || ...`` cut to ``n`` bytes;
* invalid vectors: a base vector, a ``mutation`` (see ``apply_mutation``), optionally another ``dek``
  to decrypt with, and the name of the error class the specification's "Errors" section assigns.

Run ``python tests/vectors/verify_format.py [ppml_v1.json]`` to check every vector.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import struct
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

VECTORS_PATH = Path(__file__).with_name("ppml_v1.json")

MAGIC = b"PPML"
VERSION = 1
SUITE = 1
FIXED_BASE = 66  # fixed part without metadata
MAX_METADATA = 65536
MIN_S, MAX_S = 4096, 67108864
MAX_URI, MAX_WRAPPED = 2048, 8192
MAC_LEN = 32
BODY_HEADER_LEN = 40
TAG_LEN = 16
MAX_SEGMENTS = 2**32

# The error classes of the specification's "Errors" section.
NOT_ENCRYPTED = "NotEncrypted"
MALFORMED_HEADER = "MalformedHeader"
WRONG_KEY = "WrongKey"
HEADER_AUTHENTICATION_FAILED = "HeaderAuthenticationFailed"
SEGMENT_AUTHENTICATION_FAILED = "SegmentAuthenticationFailed"
TRUNCATED_CIPHERTEXT = "TruncatedCiphertext"


class FormatError(Exception):
    """A container that does not decode; ``kind`` is the error class the specification names."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind


@dataclass(frozen=True)
class Decoded:
    """Everything a decoder learns from one container."""

    plaintext: bytes
    segment_size: int
    file_id: bytes
    key_check: bytes
    metadata: dict[str, Any]
    key_uri: str
    wrapped_key: bytes
    header_mac: bytes
    header_size: int
    salt: bytes
    nonce_prefix: bytes
    segment_key: bytes
    segment_count: int


def hkdf(ikm: bytes, salt: bytes, info: bytes) -> bytes:
    """HKDF-SHA256 with a 32-byte output (RFC 5869)."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(ikm)


class _Cursor:
    """Reads a byte string front to back; running off the end means the file was truncated."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, size: int, where: str) -> bytes:
        if self.pos + size > len(self.data):
            raise FormatError(TRUNCATED_CIPHERTEXT, f"the file ends inside {where}")
        chunk = self.data[self.pos : self.pos + size]
        self.pos += size
        return chunk

    def u8(self, where: str) -> int:
        return self.take(1, where)[0]

    def u16(self, where: str) -> int:
        return struct.unpack(">H", self.take(2, where))[0]

    def u32(self, where: str) -> int:
        return struct.unpack(">I", self.take(4, where))[0]


def decode(data: bytes, dek: bytes) -> Decoded:
    """Decrypt and authenticate a whole container, following "Decryption, in order" of the spec."""
    # Step 1: magic, version, suite; every length bounds-checked before it is used.
    if data[:4] != MAGIC:  # includes files shorter than the magic: they carry no magic at all
        raise FormatError(NOT_ENCRYPTED, "no PPML magic at offset 0")
    cur = _Cursor(data)
    cur.take(4, "the magic")
    version = cur.u8("the version")
    if version != VERSION:
        raise FormatError(MALFORMED_HEADER, f"unsupported version {version}")
    suite = cur.u8("the suite")
    if suite != SUITE:
        raise FormatError(MALFORMED_HEADER, f"unknown suite {suite}")
    fixed_len = cur.u32("fixed_len")
    if not FIXED_BASE <= fixed_len <= FIXED_BASE + MAX_METADATA:
        raise FormatError(MALFORMED_HEADER, f"fixed_len {fixed_len} out of bounds")
    segment_size = cur.u32("the segment size")
    file_id = cur.take(16, "the file id")
    stored_check = cur.take(32, "the key check")
    meta_len = cur.u32("the metadata length")
    if meta_len > MAX_METADATA or FIXED_BASE + meta_len != fixed_len:
        raise FormatError(MALFORMED_HEADER, f"metadata length {meta_len} disagrees with fixed_len {fixed_len}")
    if not MIN_S <= segment_size <= MAX_S:
        raise FormatError(MALFORMED_HEADER, f"segment size {segment_size} out of bounds")
    raw_metadata = cur.take(meta_len, "the metadata")
    fixed = data[:fixed_len]
    uri_len = cur.u16("the key URI length")
    if not 1 <= uri_len <= MAX_URI:
        raise FormatError(MALFORMED_HEADER, f"key URI length {uri_len} out of bounds")
    raw_uri = cur.take(uri_len, "the key URI")
    wrapped_len = cur.u16("the wrapped key length")
    if not 1 <= wrapped_len <= MAX_WRAPPED:
        raise FormatError(MALFORMED_HEADER, f"wrapped key length {wrapped_len} out of bounds")
    wrapped_key = cur.take(wrapped_len, "the wrapped key")
    slot_end = cur.pos
    stored_mac = cur.take(MAC_LEN, "the header MAC")
    header_size = cur.pos
    body_header = cur.take(BODY_HEADER_LEN, "the body header")
    if body_header[0] != BODY_HEADER_LEN:
        raise FormatError(MALFORMED_HEADER, f"body header length byte {body_header[0]}")

    # Step 2: metadata is a UTF-8 JSON object (the key URI must be UTF-8 too).
    try:
        metadata = json.loads(raw_metadata.decode("utf-8"))
        key_uri = raw_uri.decode("utf-8")
    except (UnicodeDecodeError, ValueError):
        raise FormatError(MALFORMED_HEADER, "metadata or key URI does not decode") from None
    if not isinstance(metadata, dict):
        raise FormatError(MALFORMED_HEADER, "metadata is not a JSON object")

    # Step 3 (unwrapping) is the caller's: ``dek`` is the unwrapped data key.
    # Step 4: key commitment.
    if not hmac.compare_digest(hkdf(dek, file_id, b"ppml/v1 key-check"), stored_check):
        raise FormatError(WRONG_KEY, "the key check does not match the data key")
    # Step 5: header MAC over fixed || key_slot || body_header.
    mac_key = hkdf(dek, file_id, b"ppml/v1 header-mac")
    expected_mac = hmac.new(mac_key, data[:slot_end] + body_header, hashlib.sha256).digest()
    if not hmac.compare_digest(expected_mac, stored_mac):
        raise FormatError(HEADER_AUTHENTICATION_FAILED, "the header MAC does not verify")

    # Step 6: the Tink AES-GCM-HKDF streaming body, with associated data A = fixed.
    salt, nonce_prefix = body_header[1:33], body_header[33:40]
    segment_key = hkdf(dek, salt, fixed)
    aead = AESGCM(segment_key)
    body = data[header_size:]
    count = max(1, -(-len(body) // segment_size))
    if count > MAX_SEGMENTS:
        raise FormatError(MALFORMED_HEADER, "too many segments")
    last_start = BODY_HEADER_LEN if count == 1 else (count - 1) * segment_size
    if len(body) - last_start < TAG_LEN:
        raise FormatError(TRUNCATED_CIPHERTEXT, f"the last segment {count - 1} is shorter than a tag")

    def open_segment(index: int, segment: bytes, last: bool) -> bytes | None:
        nonce = nonce_prefix + struct.pack(">IB", index, 1 if last else 0)
        try:
            return aead.decrypt(nonce, segment, None)
        except InvalidTag:
            return None

    plaintext = bytearray()
    for index in range(count):
        start = BODY_HEADER_LEN if index == 0 else index * segment_size
        segment = body[start : (index + 1) * segment_size]
        last = index == count - 1
        opened = open_segment(index, segment, last)
        if opened is None:
            if last and open_segment(index, segment, False) is not None:
                raise FormatError(TRUNCATED_CIPHERTEXT, f"segment {index} is not the final segment")
            if not last and open_segment(index, segment, True) is not None:
                raise FormatError(SEGMENT_AUTHENTICATION_FAILED, f"bytes follow the final segment {index}")
            raise FormatError(SEGMENT_AUTHENTICATION_FAILED, f"segment {index} does not authenticate")
        plaintext += opened

    expected_len = len(body) - BODY_HEADER_LEN - TAG_LEN * count
    assert len(plaintext) == expected_len, "plaintext length disagrees with the random-access formula"
    return Decoded(plaintext=bytes(plaintext), segment_size=segment_size, file_id=file_id,
                   key_check=stored_check, metadata=metadata, key_uri=key_uri, wrapped_key=wrapped_key,
                   header_mac=stored_mac, header_size=header_size, salt=salt, nonce_prefix=nonce_prefix,
                   segment_key=segment_key, segment_count=count)


# -- the vector file's own conventions ---------------------------------------------------------------


def sha256_counter(seed: bytes, length: int) -> bytes:
    """``SHA256(seed || u32be(0)) || SHA256(seed || u32be(1)) || ...`` cut to ``length`` bytes."""
    blocks = (hashlib.sha256(seed + struct.pack(">I", i)).digest() for i in range(-(-length // 32)))
    return b"".join(blocks)[:length]


def expand_plaintext(spec: Mapping[str, Any]) -> bytes:
    """The plaintext a vector describes."""
    if "hex" in spec:
        return bytes.fromhex(spec["hex"])
    recipe = spec["sha256_counter"]
    return sha256_counter(bytes.fromhex(recipe["seed"]), recipe["length"])


def ciphertext_of(vector: Mapping[str, Any]) -> bytes:
    """The full ciphertext of a valid vector (stored as hex lines)."""
    return bytes.fromhex("".join(vector["ciphertext"]))


def apply_mutation(base: bytes, mutation: Mapping[str, Any], vectors: Mapping[str, Mapping[str, Any]],
                   base_vector: Mapping[str, Any]) -> bytes:
    """Apply an invalid vector's mutation to its base ciphertext.

    ``none``: the base unchanged (the case decrypts with another key). ``flip``: XOR ``mask`` into
    the byte at ``offset``. ``truncate``: keep the first ``length`` bytes.
    ``append``: add the bytes ``hex``. ``splice``: concatenate the base's byte ranges ``parts``
    (``[start, end)`` pairs). ``graft_header``: the header of vector ``donor`` (its first
    ``header_size`` bytes) followed by everything of the base after the base's header.
    """
    op = mutation["op"]
    if op == "none":
        return base
    if op == "flip":
        out = bytearray(base)
        out[mutation["offset"]] ^= mutation["mask"]
        return bytes(out)
    if op == "truncate":
        return base[: mutation["length"]]
    if op == "append":
        return base + bytes.fromhex(mutation["hex"])
    if op == "splice":
        return b"".join(base[start:end] for start, end in mutation["parts"])
    if op == "graft_header":
        donor = vectors[mutation["donor"]]
        donor_header = ciphertext_of(donor)[: donor["expected"]["header_size"]]
        return donor_header + base[base_vector["expected"]["header_size"] :]
    raise ValueError(f"unknown mutation {op!r}")


def invalid_ciphertext(case: Mapping[str, Any], vectors: Mapping[str, Mapping[str, Any]]) -> bytes:
    """The mutated bytes of an invalid vector."""
    base_vector = vectors[case["base"]]
    return apply_mutation(ciphertext_of(base_vector), case["mutation"], vectors, base_vector)


def invalid_dek(case: Mapping[str, Any], vectors: Mapping[str, Mapping[str, Any]]) -> bytes:
    """The data key an invalid vector is decrypted with (the base's, unless the case names another)."""
    return bytes.fromhex(case.get("dek") or vectors[case["base"]]["dek"])


def check_valid(vector: Mapping[str, Any]) -> Decoded:
    """Decode one valid vector and compare every recorded field; raises ``AssertionError`` on mismatch."""
    data = ciphertext_of(vector)
    expected = vector["expected"]
    assert len(data) == expected["ciphertext_length"], "ciphertext length"
    assert hashlib.sha256(data).hexdigest() == expected["ciphertext_sha256"], "ciphertext SHA-256"
    decoded = decode(data, bytes.fromhex(vector["dek"]))
    plaintext = expand_plaintext(vector["plaintext"])
    assert hashlib.sha256(plaintext).hexdigest() == vector["plaintext_sha256"], "plaintext recipe"
    assert decoded.plaintext == plaintext, "plaintext"
    observed = {
        "segment_size": decoded.segment_size,
        "file_id": decoded.file_id.hex(),
        "salt": decoded.salt.hex(),
        "nonce_prefix": decoded.nonce_prefix.hex(),
        "key_uri": decoded.key_uri,
        "wrapped_key": decoded.wrapped_key.hex(),
        "metadata": decoded.metadata,
    }
    for field, value in observed.items():
        assert value == vector[field], field
    derived = {
        "header_size": decoded.header_size,
        "segment_count": decoded.segment_count,
        "key_check": decoded.key_check.hex(),
        "header_mac": decoded.header_mac.hex(),
        "segment_key": decoded.segment_key.hex(),
    }
    for field, value in derived.items():
        assert value == expected[field], field
    return decoded


def check_invalid(case: Mapping[str, Any], vectors: Mapping[str, Mapping[str, Any]]) -> FormatError:
    """Decode one invalid vector; it must fail with the recorded error class."""
    data = invalid_ciphertext(case, vectors)
    assert hashlib.sha256(data).hexdigest() == case["ciphertext_sha256"], "mutated ciphertext SHA-256"
    try:
        decode(data, invalid_dek(case, vectors))
    except FormatError as error:
        assert error.kind == case["error"], f"expected {case['error']}, got {error}"
        return error
    raise AssertionError(f"{case['name']} decoded, but should fail with {case['error']}")


def load(path: Path = VECTORS_PATH) -> dict[str, Any]:
    """The vector document."""
    return json.loads(path.read_text(encoding="utf-8"))


def main(argv: list[str]) -> int:
    path = Path(argv[0]) if argv else VECTORS_PATH
    document = load(path)
    vectors = {vector["name"]: vector for vector in document["valid"]}
    failures = 0
    for vector in document["valid"]:
        try:
            check_valid(vector)
        except (AssertionError, FormatError) as error:
            failures += 1
            print(f"FAIL valid {vector['name']}: {error}")
    for case in document["invalid"]:
        try:
            check_invalid(case, vectors)
        except AssertionError as error:
            failures += 1
            print(f"FAIL invalid {case['name']}: {error}")
    total = len(document["valid"]) + len(document["invalid"])
    print(f"{total - failures}/{total} vectors OK ({path})")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
