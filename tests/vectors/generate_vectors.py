"""Build the frozen ``.ppml`` v1 test vectors in ``ppml_v1.json``.

The JSON file is committed and FROZEN: it pins the byte format, so an accidental change to the writer
fails ``tests/fileformat/test_vectors.py``. By default this script only checks that the current code
reproduces the file byte for byte::

    python tests/vectors/generate_vectors.py           # check; exit status 1 on any difference
    python tests/vectors/generate_vectors.py --write   # regenerate: ONLY for a deliberate format change

Every random input of the writer is fixed through its private seams (``_file_id``, ``_body_header``);
data keys, salts, nonce prefixes, wrapped keys and plaintext seeds are SHA-256 of fixed labels. Wrapped
keys are arbitrary bytes: the format treats them as opaque.

Before writing, every vector is cross-checked against ``verify_format.py`` (the independent decoder) and
every invalid vector against ppml's own reader.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import io
import json
import struct
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ppml import errors
from ppml._secrets import SecretKey
from ppml.fileformat import DEFAULT_SEGMENT_SIZE, EncryptingWriter, decrypt_bytes

HERE = Path(__file__).resolve().parent
VECTORS_PATH = HERE / "ppml_v1.json"
SMALL_SEGMENT = 4096
HEX_LINE = 64  # ciphertext bytes per hex line in the JSON, for readable diffs


def _sibling(name: str) -> ModuleType:
    """Import a module that sits next to this file (``tests/vectors`` is not a package)."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, HERE / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


verify_format = _sibling("verify_format")


def fixed_bytes(label: str, size: int) -> bytes:
    """Deterministic "random" bytes: a SHA-256 counter stream seeded by a label."""
    return verify_format.sha256_counter(f"ppml v1 test vector: {label}".encode(), size)


DEK_A = fixed_bytes("data key A", 32)
DEK_B = fixed_bytes("data key B", 32)
FIRST = SMALL_SEGMENT - 56  # plaintext capacity of segment 0 at S = 4096
LATER = SMALL_SEGMENT - 16  # plaintext capacity of every later segment


@dataclass(frozen=True)
class Case:
    """One valid vector: a plaintext and every input the writer would otherwise draw at random."""

    name: str
    description: str
    plaintext: Mapping[str, Any]  # {"hex": ...} or {"sha256_counter": {...}}, see verify_format
    dek: bytes = DEK_A
    segment_size: int = SMALL_SEGMENT
    key_uri: str = "local:vectors"
    metadata: Mapping[str, Any] = field(default_factory=dict)


def counter(name: str, length: int) -> dict[str, Any]:
    return {"sha256_counter": {"seed": fixed_bytes(f"{name} plaintext", 16).hex(), "length": length}}


def text(value: str) -> dict[str, Any]:
    return {"hex": value.encode("utf-8").hex()}


CSV = "name,city,amount\nalice,Zürich,12.50\nbob,Lyon,7\n"

CASES = [
    Case("empty", "empty plaintext: a single final segment holding only its tag", {"hex": ""}),
    Case("one-byte", "a single plaintext byte", {"hex": "2a"},
         metadata={"content_type": "application/octet-stream"}),
    Case("segment0-exact", "exactly the capacity of segment 0 (S - 56): one full, final segment",
         counter("segment0-exact", FIRST), metadata={"rows": 0}),
    Case("segment0-plus-one", "segment 0 capacity + 1: a full segment 0 and a 1-byte final segment 1",
         counter("segment0-plus-one", FIRST + 1), key_uri="local:vectors-2"),
    Case("three-segments-exact", "three full segments; the plaintext ends exactly on a segment boundary",
         counter("three-segments-exact", FIRST + 2 * LATER), metadata={"parts": [1, 2, 3], "sealed": True}),
    Case("three-segments-partial", "two full segments and a final segment holding 1000 bytes",
         counter("three-segments-partial", FIRST + LATER + 1000),
         metadata={"content_type": "application/octet-stream", "note": None}),
    Case("unicode-metadata", "non-ASCII metadata keys and values, and a non-ASCII key URI", text(CSV),
         dek=DEK_B, key_uri="local:clé-données",
         metadata={"café": "crème brûlée", "city": "Zürich", "emoji": "🔐", "中文": ["数据", "加密"]}),
    Case("default-segment-size", "the default 1 MiB segment size with a short plaintext", text(CSV),
         dek=DEK_B, segment_size=DEFAULT_SEGMENT_SIZE, key_uri="local:sales",
         metadata={"content_type": "text/csv", "created_by": "ppml"}),
]


def encrypt(case: Case) -> tuple[bytes, int]:
    """Encrypt a case with ppml's writer and its seams; returns the ciphertext and the header size."""
    sink = io.BytesIO()
    salt, nonce_prefix = fixed_bytes(f"{case.name} salt", 32), fixed_bytes(f"{case.name} nonce prefix", 7)
    body_header = bytes([40]) + salt + nonce_prefix
    with EncryptingWriter(sink, data_key=SecretKey(case.dek), key_uri=case.key_uri,
                          wrapped_key=fixed_bytes(f"{case.name} wrapped key", 65), metadata=case.metadata,
                          segment_size=case.segment_size, _file_id=fixed_bytes(f"{case.name} file id", 16),
                          _body_header=body_header) as writer:
        writer.write(verify_format.expand_plaintext(case.plaintext))
    return sink.getvalue(), writer.header.size


def build_vector(case: Case) -> dict[str, Any]:
    ciphertext, header_size = encrypt(case)
    plaintext = verify_format.expand_plaintext(case.plaintext)
    body_header = ciphertext[header_size : header_size + 40]
    fixed_len = struct.unpack_from(">I", ciphertext, 6)[0]
    segment_key = HKDF(algorithm=hashes.SHA256(), length=32, salt=body_header[1:33],
                       info=ciphertext[:fixed_len]).derive(case.dek)
    body_size = len(ciphertext) - header_size
    return {
        "name": case.name,
        "description": case.description,
        "segment_size": case.segment_size,
        "dek": case.dek.hex(),
        "file_id": fixed_bytes(f"{case.name} file id", 16).hex(),
        "salt": body_header[1:33].hex(),
        "nonce_prefix": body_header[33:40].hex(),
        "key_uri": case.key_uri,
        "wrapped_key": fixed_bytes(f"{case.name} wrapped key", 65).hex(),
        "metadata": dict(case.metadata),
        "plaintext": dict(case.plaintext),
        "plaintext_sha256": hashlib.sha256(plaintext).hexdigest(),
        "expected": {
            "header_size": header_size,
            "segment_count": max(1, -(-body_size // case.segment_size)),
            "key_check": ciphertext[30:62].hex(),
            "header_mac": ciphertext[header_size - 32 : header_size].hex(),
            "segment_key": segment_key.hex(),
            "ciphertext_length": len(ciphertext),
            "ciphertext_sha256": hashlib.sha256(ciphertext).hexdigest(),
        },
        "ciphertext": [ciphertext[i : i + HEX_LINE].hex() for i in range(0, len(ciphertext), HEX_LINE)],
    }


# -- invalid vectors ---------------------------------------------------------------------------------


class Geometry:
    """Byte offsets of the fields of one valid vector, read from its ciphertext."""

    def __init__(self, vector: Mapping[str, Any]) -> None:
        self.data = verify_format.ciphertext_of(vector)
        self.size = len(self.data)
        self.segment_size = vector["segment_size"]
        self.header_size = vector["expected"]["header_size"]
        self.count = vector["expected"]["segment_count"]
        self.fixed_len = struct.unpack_from(">I", self.data, 6)[0]
        self.uri_len_at = self.fixed_len
        self.uri_at = self.uri_len_at + 2
        self.wrapped_len_at = self.uri_at + struct.unpack_from(">H", self.data, self.uri_len_at)[0]
        self.wrapped_at = self.wrapped_len_at + 2
        self.mac_at = self.header_size - 32

    def segment(self, index: int) -> tuple[int, int]:
        """File offsets ``[start, end)`` of segment ``index``."""
        start = 40 if index == 0 else index * self.segment_size
        end = min((index + 1) * self.segment_size, self.size - self.header_size)
        return self.header_size + start, self.header_size + end

    def find(self, needle: bytes, start: int = 0) -> int:
        return self.data.index(needle, start)


def flip(offset: int, mask: int = 0x01) -> dict[str, Any]:
    return {"op": "flip", "offset": offset, "mask": mask}


def truncate(length: int) -> dict[str, Any]:
    return {"op": "truncate", "length": length}


def splice(*parts: tuple[int, int]) -> dict[str, Any]:
    return {"op": "splice", "parts": [list(part) for part in parts]}


InvalidSpec = tuple[str, str, str, str, Callable[[Geometry], dict[str, Any]]]

NOT_ENCRYPTED, MALFORMED, WRONG_KEY = "NotEncrypted", "MalformedHeader", "WrongKey"
HEADER_AUTH, SEGMENT_AUTH = "HeaderAuthenticationFailed", "SegmentAuthenticationFailed"
TRUNCATED = "TruncatedCiphertext"

# (name, base vector, expected error class, description, mutation from the base's geometry)
INVALID: list[InvalidSpec] = [
    ("magic-flipped", "one-byte", NOT_ENCRYPTED, "first magic byte 'P' -> 'Q'", lambda g: flip(0)),
    ("version-2", "one-byte", MALFORMED, "version byte 1 -> 2", lambda g: flip(4, 0x03)),
    ("suite-3", "one-byte", MALFORMED, "suite byte 1 -> 3", lambda g: flip(5, 0x02)),
    ("fixed-len-mismatch", "one-byte", MALFORMED, "fixed_len off by one: disagrees with m",
     lambda g: flip(9)),
    ("fixed-len-out-of-bounds", "one-byte", MALFORMED, "fixed_len top bit set", lambda g: flip(6, 0x80)),
    ("segment-size-out-of-bounds", "one-byte", MALFORMED, "segment size 4096 -> 0", lambda g: flip(12, 0x10)),
    ("segment-size-changed", "one-byte", HEADER_AUTH, "segment size 4096 -> 4097 (within bounds)",
     lambda g: flip(13)),
    ("file-id-flipped", "one-byte", WRONG_KEY, "a bit of the file id (the key-check salt)",
     lambda g: flip(20)),
    ("key-check-flipped", "one-byte", WRONG_KEY, "a bit of the key check", lambda g: flip(61)),
    ("metadata-length-mismatch", "one-byte", MALFORMED, "m off by one: disagrees with fixed_len",
     lambda g: flip(65)),
    ("metadata-not-json", "one-byte", MALFORMED, "metadata '{' -> 'z'", lambda g: flip(66, 0x01)),
    ("metadata-value-changed", "one-byte", HEADER_AUTH, "metadata 'octet' -> 'Octet', still valid JSON",
     lambda g: flip(g.find(b"octet"), 0x20)),
    ("key-uri-changed", "one-byte", HEADER_AUTH, "key URI 'local:vectors' -> 'local:Vectors'",
     lambda g: flip(g.find(b"vectors", g.uri_at), 0x20)),
    ("key-uri-length-zero", "one-byte", MALFORMED, "u = 13 -> 0",
     lambda g: flip(g.uri_len_at + 1, g.data[g.uri_len_at + 1])),
    ("key-uri-length-too-long", "one-byte", MALFORMED, "u high bit set (> 2048)",
     lambda g: flip(g.uri_len_at, 0x80)),
    ("wrapped-key-changed", "one-byte", HEADER_AUTH, "a bit of the (opaque) wrapped key",
     lambda g: flip(g.wrapped_at + 7)),
    ("wrapped-key-length-too-long", "one-byte", MALFORMED, "w high bit set (> 8192)",
     lambda g: flip(g.wrapped_len_at, 0x80)),
    ("wrapped-key-length-past-end", "empty", TRUNCATED, "w = 65 -> 4161: the file ends inside the slot",
     lambda g: flip(g.wrapped_len_at, 0x10)),
    ("header-mac-flipped", "one-byte", HEADER_AUTH, "last bit of the header MAC",
     lambda g: flip(g.header_size - 1, 0x80)),
    ("body-header-length-byte", "one-byte", MALFORMED, "body header length byte 0x28 -> 0x29",
     lambda g: flip(g.header_size)),
    ("salt-flipped", "one-byte", HEADER_AUTH, "a bit of the body salt", lambda g: flip(g.header_size + 1)),
    ("nonce-prefix-flipped", "one-byte", HEADER_AUTH, "a bit of the nonce prefix",
     lambda g: flip(g.header_size + 39)),
    ("segment-0-ciphertext-flipped", "three-segments-partial", SEGMENT_AUTH, "a bit inside segment 0",
     lambda g: flip(g.segment(0)[0] + 100)),
    ("segment-1-tag-flipped", "three-segments-partial", SEGMENT_AUTH, "the last bit of segment 1's tag",
     lambda g: flip(g.segment(1)[1] - 1, 0x80)),
    ("final-segment-ciphertext-flipped", "three-segments-partial", SEGMENT_AUTH,
     "the first byte of the final segment 2", lambda g: flip(g.segment(2)[0])),
    ("empty-final-tag-flipped", "empty", SEGMENT_AUTH, "a bit of the only segment's tag",
     lambda g: flip(g.size - 5)),
    ("truncated-in-magic", "one-byte", NOT_ENCRYPTED, "only 'PP' left", lambda g: truncate(2)),
    ("truncated-in-fixed-part", "one-byte", TRUNCATED, "cut inside the key check", lambda g: truncate(40)),
    ("truncated-in-key-slot", "one-byte", TRUNCATED, "cut inside the key URI",
     lambda g: truncate(g.uri_at + 3)),
    ("truncated-in-header-mac", "one-byte", TRUNCATED, "cut inside the header MAC",
     lambda g: truncate(g.mac_at + 10)),
    ("truncated-before-body-header", "one-byte", TRUNCATED, "header only", lambda g: truncate(g.header_size)),
    ("truncated-in-body-header", "one-byte", TRUNCATED, "cut inside the body header",
     lambda g: truncate(g.header_size + 20)),
    ("truncated-empty-body", "one-byte", TRUNCATED, "header and body header, no segment",
     lambda g: truncate(g.header_size + 40)),
    ("truncated-after-segment-0", "three-segments-partial", TRUNCATED, "cut at the end of segment 0",
     lambda g: truncate(g.segment(0)[1])),
    ("truncated-at-segment-boundary", "three-segments-exact", TRUNCATED, "cut at the end of segment 1",
     lambda g: truncate(g.segment(1)[1])),
    ("truncated-in-final-segment", "three-segments-partial", SEGMENT_AUTH,
     "cut 500 bytes into the final segment", lambda g: truncate(g.segment(2)[0] + 500)),
    ("truncated-to-bare-tag", "three-segments-partial", SEGMENT_AUTH,
     "only 16 bytes of the final segment left: a segment with an empty plaintext and a wrong tag",
     lambda g: truncate(g.segment(2)[0] + 16)),
    ("truncated-last-byte", "three-segments-partial", SEGMENT_AUTH, "the last byte removed",
     lambda g: truncate(g.size - 1)),
    ("truncated-to-partial-tag", "three-segments-partial", TRUNCATED,
     "only 10 bytes of the final segment left (less than a tag)", lambda g: truncate(g.segment(2)[0] + 10)),
    ("appended-bytes", "three-segments-partial", SEGMENT_AUTH, "five zero bytes appended",
     lambda g: {"op": "append", "hex": "0000000000"}),
    ("appended-segment", "three-segments-exact", SEGMENT_AUTH, "a copy of the final segment appended",
     lambda g: splice((0, g.size), g.segment(2))),
    ("segments-swapped", "three-segments-exact", SEGMENT_AUTH, "segments 1 and 2 swapped",
     lambda g: splice((0, g.segment(1)[0]), g.segment(2), g.segment(1))),
    ("segment-duplicated", "three-segments-exact", SEGMENT_AUTH, "segment 1 repeated: 0, 1, 1, 2",
     lambda g: splice((0, g.segment(2)[0]), g.segment(1), g.segment(2))),
    ("segment-dropped", "three-segments-exact", SEGMENT_AUTH, "segment 1 removed: 0, 2",
     lambda g: splice((0, g.segment(1)[0]), g.segment(2))),
    ("header-from-other-file-same-key", "empty", HEADER_AUTH,
     "the header of 'one-byte' (same data key) on the body of 'empty'",
     lambda g: {"op": "graft_header", "donor": "one-byte"}),
    ("header-from-other-file-other-key", "empty", WRONG_KEY,
     "the header of 'unicode-metadata' (data key B) on the body of 'empty', decrypted with key A",
     lambda g: {"op": "graft_header", "donor": "unicode-metadata"}),
]

WRONG_KEY_CASE = {"name": "wrong-key", "base": "one-byte", "error": WRONG_KEY,
                  "description": "decrypted with data key B instead of A", "dek": DEK_B.hex()}


def build_invalid(vectors: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    cases = []
    for name, base, error, description, mutation in INVALID:
        cases.append({"name": name, "base": base, "error": error, "description": description,
                      "mutation": mutation(Geometry(vectors[base]))})
    cases.append({**WRONG_KEY_CASE, "mutation": {"op": "none"}})
    for case in cases:
        mutated = verify_format.invalid_ciphertext(case, vectors)
        case["ciphertext_sha256"] = hashlib.sha256(mutated).hexdigest()
    return cases


def build_document() -> dict[str, Any]:
    """The whole vector document, as the current code produces it."""
    valid = [build_vector(case) for case in CASES]
    vectors = {vector["name"]: vector for vector in valid}
    return {
        "format": "ppml container",
        "version": 1,
        "spec": "docs/format.md",
        "frozen": "Do not edit. Regenerate only for a deliberate format change: "
                  "python tests/vectors/generate_vectors.py --write",
        "conventions": {
            "integers": "unsigned big-endian; every byte string is lowercase hex",
            "plaintext": "{'hex': ...} or {'sha256_counter': {'seed': hex, 'length': n}} = "
                         "SHA256(seed || u32be(0)) || SHA256(seed || u32be(1)) || ... cut to n bytes",
            "ciphertext": "the full container, as hex lines of 64 bytes each; join them",
            "expected.segment_key": "HKDF-SHA256(ikm=dek, salt=salt, info=fixed part), for debugging",
            "invalid": "base vector + mutation (none: unchanged; flip: XOR mask at offset; truncate: "
                       "keep length bytes; append: add hex; splice: concatenate the base's [start, end) "
                       "parts; graft_header: donor's header + the base after its header); decrypt with "
                       "'dek' if given, else the base's; must fail with the ppml.errors class named in "
                       "'error'",
        },
        "valid": valid,
        "invalid": build_invalid(vectors),
    }


def render(document: Mapping[str, Any]) -> str:
    return json.dumps(document, indent=1, ensure_ascii=False) + "\n"


def cross_check(document: Mapping[str, Any]) -> list[str]:
    """Problems found by the independent decoder and by ppml's reader; empty when all is well."""
    problems = []
    vectors = {vector["name"]: vector for vector in document["valid"]}
    for vector in document["valid"]:
        try:
            verify_format.check_valid(vector)
        except (AssertionError, verify_format.FormatError) as error:
            problems.append(f"valid {vector['name']}: independent decoder: {error}")
    for case in document["invalid"]:
        try:
            verify_format.check_invalid(case, vectors)
        except AssertionError as error:
            problems.append(f"invalid {case['name']}: independent decoder: {error}")
        key = SecretKey(verify_format.invalid_dek(case, vectors))
        try:
            decrypt_bytes(verify_format.invalid_ciphertext(case, vectors), lambda _header, key=key: key,
                          name=case["name"])
            problems.append(f"invalid {case['name']}: ppml decrypted it")
        except errors.InvalidCiphertext as error:
            if type(error).__name__ != case["error"]:
                problems.append(f"invalid {case['name']}: ppml raised {type(error).__name__}: {error}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true",
                        help="overwrite ppml_v1.json (only for a deliberate format version change)")
    args = parser.parse_args(argv)
    document = build_document()
    problems = cross_check(document)
    for problem in problems:
        print(f"PROBLEM {problem}")
    if problems:
        return 1
    rendered = render(document)
    if args.write:
        VECTORS_PATH.write_text(rendered, encoding="utf-8")
        print(f"wrote {VECTORS_PATH} ({len(document['valid'])} valid, {len(document['invalid'])} invalid)")
        return 0
    if not VECTORS_PATH.exists():
        print(f"{VECTORS_PATH} is missing; run with --write")
        return 1
    frozen = json.loads(VECTORS_PATH.read_text(encoding="utf-8"))
    if frozen == document:
        print(f"{VECTORS_PATH.name}: the current code reproduces every vector")
        return 0
    frozen_valid = {vector["name"]: vector for vector in frozen.get("valid", [])}
    for vector in document["valid"]:
        if frozen_valid.get(vector["name"]) != vector:
            print(f"DIFFERS valid {vector['name']}")
    frozen_invalid = {case["name"]: case for case in frozen.get("invalid", [])}
    for case in document["invalid"]:
        if frozen_invalid.get(case["name"]) != case:
            print(f"DIFFERS invalid {case['name']}")
    print("the current code does NOT reproduce the frozen vectors: the format changed")
    return 1


if __name__ == "__main__":
    sys.exit(main())
