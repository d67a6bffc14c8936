"""A small, bounded DER reader for the Intel SGX PCK certificate extension (no general ASN.1 support).

Only definite-length, single-byte-tag encodings are accepted (that is all DER allows for the types used by the
SGX extension). Every length is checked against the bytes present and nesting depth is limited, so a hostile
certificate can make parsing fail but never loop, recurse without bound or read out of range.
"""

from __future__ import annotations

from dataclasses import dataclass

from ppml.attestation.errors import EvidenceInvalid

TAG_INTEGER = 0x02
TAG_OCTET_STRING = 0x04
TAG_OID = 0x06
TAG_ENUMERATED = 0x0A
TAG_SEQUENCE = 0x30
MAX_DEPTH = 8


def _fail(msg: str) -> EvidenceInvalid:
    return EvidenceInvalid(f"PCK SGX extension: {msg}", reason="malformed")


@dataclass(frozen=True)
class Tlv:
    """One DER element: its tag and its content octets."""

    tag: int
    value: bytes


def read_tlvs(data: bytes) -> list[Tlv]:
    """Split ``data`` into consecutive DER elements; the elements must exactly fill ``data``."""
    out: list[Tlv] = []
    pos = 0
    while pos < len(data):
        if len(data) - pos < 2:
            raise _fail("truncated element header")
        tag = data[pos]
        if tag & 0x1F == 0x1F:
            raise _fail("multi-byte tags are not supported")
        first = data[pos + 1]
        pos += 2
        if first < 0x80:
            length = first
        else:
            n = first & 0x7F
            if n == 0 or n > 4:
                raise _fail("indefinite or oversized length")
            if len(data) - pos < n:
                raise _fail("truncated length")
            length = int.from_bytes(data[pos : pos + n], "big")
            if length < 0x80 or data[pos] == 0:
                raise _fail("non-minimal length encoding")
            pos += n
        if length > len(data) - pos:
            raise _fail(f"element of {length} bytes exceeds the {len(data) - pos} bytes left")
        out.append(Tlv(tag, data[pos : pos + length]))
        pos += length
    return out


def read_one(data: bytes, tag: int) -> bytes:
    """Content of the single element ``data`` holds, which must have ``tag``."""
    items = read_tlvs(data)
    if len(items) != 1 or items[0].tag != tag:
        raise _fail(f"expected exactly one element with tag {tag:#x}")
    return items[0].value


def decode_oid(value: bytes) -> str:
    """Dotted form of OBJECT IDENTIFIER content octets."""
    if not value or value[-1] & 0x80:
        raise _fail("bad OBJECT IDENTIFIER")
    arcs: list[int] = []
    acc = 0
    for i, byte in enumerate(value):
        if acc == 0 and byte == 0x80 and (i == 0 or not value[i - 1] & 0x80):
            raise _fail("non-minimal OBJECT IDENTIFIER arc")
        acc = (acc << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(acc)
            acc = 0
    first = min(arcs[0] // 40, 2)
    return ".".join(str(a) for a in [first, arcs[0] - 40 * first, *arcs[1:]])


def decode_uint(value: bytes) -> int:
    """A non-negative INTEGER/ENUMERATED content (SVNs, SGX type); negative values are rejected."""
    if not value or len(value) > 9 or value[0] & 0x80:
        raise _fail("bad or negative INTEGER")
    return int.from_bytes(value, "big")


def oid_pairs(seq_content: bytes, depth: int = 0) -> dict[str, Tlv]:
    """Parse the content of ``SEQUENCE OF SEQUENCE { OID, value }`` into ``{oid: value element}``."""
    if depth > MAX_DEPTH:
        raise _fail("nesting too deep")
    out: dict[str, Tlv] = {}
    for item in read_tlvs(seq_content):
        if item.tag != TAG_SEQUENCE:
            raise _fail("expected a SEQUENCE of (OID, value)")
        parts = read_tlvs(item.value)
        if len(parts) != 2 or parts[0].tag != TAG_OID:
            raise _fail("expected (OID, value)")
        oid = decode_oid(parts[0].value)
        if oid in out:
            raise _fail(f"duplicate OID {oid}")
        out[oid] = parts[1]
    return out
