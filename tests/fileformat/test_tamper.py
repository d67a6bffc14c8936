"""Tamper matrix: every modification of a ``.ppml`` file fails with a specific error naming the file.

Each case checks the exact ``InvalidCiphertext`` subclass, that the message names the file passed as
``name``, and a phrase saying what went wrong. Segment-level cases run through both the streaming
decoder (``decrypt_bytes`` / ``decrypt_stream``) and the random-access ``DecryptingReader``; the
streaming decoder must also never release plaintext of a segment that failed.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from ppml._secrets import SecretKey
from ppml.errors import (
    HeaderAuthenticationFailed,
    InvalidCiphertext,
    MalformedHeader,
    NotEncrypted,
    SegmentAuthenticationFailed,
    TruncatedCiphertext,
    WrongKey,
)
from ppml.fileformat import DecryptingReader, EncryptingWriter, Header, SegmentLayout, decrypt_bytes, decrypt_stream

NAME = "q3-sales.ppml"
S = 4096
FIRST, LATER = S - 56, S - 16
DEK = SecretKey(bytes(range(32)))
OTHER_DEK = SecretKey(bytes(range(32, 64)))

Resolver = Callable[[Header], SecretKey]
Decoder = Callable[[bytes, Resolver], bytes]


def same_key(_header: Header) -> SecretKey:
    """A resolver that ignores the key slot and always returns ``DEK``."""
    return DEK


def by_key_uri(header: Header) -> SecretKey:
    """A resolver that, like a KMS, picks the key named in the header's slot."""
    return {"local:sales": DEK, "local:other": OTHER_DEK}[header.key_uri]


@dataclass(frozen=True)
class Sample:
    """An encrypted file with the offsets of its header fields and segments."""

    data: bytes
    plaintext: bytes
    header: Header

    @property
    def header_size(self) -> int:
        return self.header.size

    @property
    def fixed_len(self) -> int:
        return len(self.header.fixed_bytes())

    @property
    def uri_len_at(self) -> int:
        return self.fixed_len

    @property
    def uri_at(self) -> int:
        return self.fixed_len + 2

    @property
    def wrapped_len_at(self) -> int:
        return self.uri_at + len(self.header.key_uri.encode())

    @property
    def wrapped_at(self) -> int:
        return self.wrapped_len_at + 2

    @property
    def layout(self) -> SegmentLayout:
        return SegmentLayout(S, len(self.data) - self.header_size)

    @property
    def count(self) -> int:
        return self.layout.segment_count

    def segment(self, index: int) -> tuple[int, int]:
        """File offsets ``[start, end)`` of segment ``index``."""
        start, end = self.layout.ciphertext_range(index)
        return self.header_size + start, self.header_size + end

    def segment_bytes(self, index: int) -> bytes:
        start, end = self.segment(index)
        return self.data[start:end]

    def plaintext_before(self, index: int) -> bytes:
        """Plaintext of the segments before ``index``: all a streaming decoder may release."""
        return self.plaintext[: self.layout.plaintext_start(index)]


def make_sample(size: int, *, dek: SecretKey = DEK, key_uri: str = "local:sales", tag: int = 0) -> Sample:
    plaintext = bytes((i * 7 + tag) % 251 for i in range(size))
    sink = io.BytesIO()
    with EncryptingWriter(sink, data_key=dek, key_uri=key_uri, wrapped_key=b"\x01" + bytes(range(64)),
                          metadata={"content_type": "text/csv", "owner": "analytics"},
                          segment_size=S) as writer:
        writer.write(plaintext)
    return Sample(sink.getvalue(), plaintext, writer.header)


SMALL = make_sample(100)  # one segment
EXACT = make_sample(FIRST + 2 * LATER)  # three full segments: ends exactly on a boundary
PARTIAL = make_sample(FIRST + LATER + 1000)  # two full segments and a 1016-byte final segment
assert (SMALL.count, EXACT.count, PARTIAL.count) == (1, 3, 3)
assert len(EXACT.segment_bytes(2)) == S and len(PARTIAL.segment_bytes(2)) == 1016


def flipped(data: bytes, offset: int, mask: int = 0x01) -> bytes:
    out = bytearray(data)
    out[offset] ^= mask
    return bytes(out)


def via_decrypt_bytes(data: bytes, resolve: Resolver) -> bytes:
    return decrypt_bytes(data, resolve, name=NAME)


def via_reader(data: bytes, resolve: Resolver) -> bytes:
    with DecryptingReader(io.BytesIO(data), resolve, name=NAME) as reader:
        return reader.read()


DECODERS = {"decrypt_bytes": via_decrypt_bytes, "DecryptingReader": via_reader}
both_decoders = pytest.mark.parametrize("decoder", list(DECODERS))


def assert_rejected(data: bytes, error: type[InvalidCiphertext], phrase: str, *, decoder: str = "decrypt_bytes",
                    resolve: Resolver = same_key) -> str:
    """``data`` fails with exactly ``error``; the message names the file and matches ``phrase``."""
    with pytest.raises(InvalidCiphertext) as info:
        DECODERS[decoder](data, resolve)
    message = str(info.value)
    assert type(info.value) is error, f"{type(info.value).__name__}: {message}"
    assert NAME in message
    assert re.search(phrase, message), message
    return message


def stream_until_failure(data: bytes, resolve: Resolver = same_key) -> tuple[InvalidCiphertext, bytes]:
    """Run ``decrypt_stream`` into a sink; return the error and what the sink received before it."""
    sink = io.BytesIO()
    with pytest.raises(InvalidCiphertext) as info:
        decrypt_stream(io.BytesIO(data), sink, resolve, name=NAME)
    return info.value, sink.getvalue()


# The random-access reader authenticates the final segment when it opens (it alone proves the file is
# neither cut nor extended), so damage that moves or replaces the final segment is reported there first.
READER_FINAL = r"final segment \d+ failed authentication"


def segment_phrase(index: int) -> str:
    return rf"\bsegment {index}\b"


# -- header fields -------------------------------------------------------------------------------------

HEADER_FLIPS = [
    # (case, sample, offset of the flipped byte, mask, error, phrase)
    ("magic", SMALL, lambda s: 0, 0x01, NotEncrypted, "not a ppml encrypted file"),
    ("version", SMALL, lambda s: 4, 0x02, MalformedHeader, "unsupported ppml format version 3"),
    ("suite", SMALL, lambda s: 5, 0x04, MalformedHeader, "unknown cipher suite 5"),
    ("fixed_len-low-bit", SMALL, lambda s: 9, 0x01, MalformedHeader, "does not match the header length"),
    ("fixed_len-high-bit", SMALL, lambda s: 6, 0x80, MalformedHeader, "header length .* out of bounds"),
    ("segment_size-out-of-bounds", SMALL, lambda s: 12, 0x10, MalformedHeader, "segment size 0 is out of bounds"),
    ("segment_size-in-bounds", SMALL, lambda s: 13, 0x01, HeaderAuthenticationFailed,
     "header authentication failed"),
    ("file_id", SMALL, lambda s: 14, 0x01, WrongKey, "wrong key"),
    ("file_id-last-byte", PARTIAL, lambda s: 29, 0x80, WrongKey, "wrong key"),
    ("key_check", SMALL, lambda s: 30, 0x01, WrongKey, "wrong key"),
    ("key_check-last-byte", PARTIAL, lambda s: 61, 0x80, WrongKey, "wrong key"),
    ("metadata_length", SMALL, lambda s: 65, 0x01, MalformedHeader, "metadata length .* does not match"),
    ("metadata-value", SMALL, lambda s: s.data.index(b"analytics"), 0x20, HeaderAuthenticationFailed,
     "header authentication failed"),
    ("metadata-value-multi-segment", PARTIAL, lambda s: s.data.index(b"text/csv"), 0x20,
     HeaderAuthenticationFailed, "header authentication failed"),
    ("metadata-not-json", SMALL, lambda s: 66, 0x01, MalformedHeader, "not valid JSON"),
    ("key_uri-length-zero", SMALL, lambda s: s.uri_len_at + 1, len("local:sales"), MalformedHeader,
     "key URI length 0 is out of bounds"),
    ("key_uri-length-too-long", SMALL, lambda s: s.uri_len_at, 0x80, MalformedHeader,
     "key URI length .* out of bounds"),
    ("key_uri-length-past-end", SMALL, lambda s: s.uri_len_at, 0x04, TruncatedCiphertext,
     "truncated inside the header"),
    ("key_uri", SMALL, lambda s: s.uri_at + 6, 0x20, HeaderAuthenticationFailed, "header authentication failed"),
    ("key_uri-not-utf8", SMALL, lambda s: s.uri_at, 0x80, MalformedHeader, "not valid UTF-8"),
    ("wrapped_key-length-zero", SMALL, lambda s: s.wrapped_len_at + 1, 65, MalformedHeader,
     "wrapped key length 0 is out of bounds"),
    ("wrapped_key-length-too-long", SMALL, lambda s: s.wrapped_len_at, 0x80, MalformedHeader,
     "wrapped key length .* out of bounds"),
    ("wrapped_key-length-past-end", SMALL, lambda s: s.wrapped_len_at, 0x10, TruncatedCiphertext,
     "truncated inside the header"),
    ("wrapped_key", SMALL, lambda s: s.wrapped_at + 10, 0x01, HeaderAuthenticationFailed,
     "header authentication failed"),
    ("header_mac-first-byte", SMALL, lambda s: s.header_size - 32, 0x01, HeaderAuthenticationFailed,
     "header authentication failed"),
    ("header_mac-last-byte", PARTIAL, lambda s: s.header_size - 1, 0x80, HeaderAuthenticationFailed,
     "header authentication failed"),
    ("body-header-length-byte", SMALL, lambda s: s.header_size, 0x01, MalformedHeader,
     "body header length byte is 41"),
    ("body-salt-first-byte", SMALL, lambda s: s.header_size + 1, 0x01, HeaderAuthenticationFailed,
     "header authentication failed"),
    ("body-salt-last-byte", PARTIAL, lambda s: s.header_size + 32, 0x80, HeaderAuthenticationFailed,
     "header authentication failed"),
    ("body-nonce-prefix-first-byte", SMALL, lambda s: s.header_size + 33, 0x01, HeaderAuthenticationFailed,
     "header authentication failed"),
    ("body-nonce-prefix-last-byte", PARTIAL, lambda s: s.header_size + 39, 0x80, HeaderAuthenticationFailed,
     "header authentication failed"),
]


@both_decoders
@pytest.mark.parametrize(("sample", "where", "mask", "error", "phrase"),
                         [pytest.param(*case[1:], id=case[0]) for case in HEADER_FLIPS])
def test_header_bit_flip(decoder: str, sample: Sample, where: Callable[[Sample], int], mask: int,
                         error: type[InvalidCiphertext], phrase: str) -> None:
    assert_rejected(flipped(sample.data, where(sample), mask), error, phrase, decoder=decoder)


def test_header_flip_writes_nothing_to_the_sink() -> None:
    _, released = stream_until_failure(flipped(PARTIAL.data, PARTIAL.header_size - 1))
    assert released == b""


def test_wrong_key() -> None:
    message = assert_rejected(SMALL.data, WrongKey, "wrong key", resolve=lambda _header: OTHER_DEK)
    assert "local:sales" in message


@both_decoders
def test_wrong_key_multi_segment(decoder: str) -> None:
    assert_rejected(PARTIAL.data, WrongKey, "key commitment", decoder=decoder, resolve=lambda _header: OTHER_DEK)


# -- headers moved between files -----------------------------------------------------------------------


def graft(header_from: Sample, body_from: Sample) -> bytes:
    """The header of one file in front of the body (body header and segments) of another."""
    return header_from.data[: header_from.header_size] + body_from.data[body_from.header_size :]


@both_decoders
def test_header_from_another_file_same_key(decoder: str) -> None:
    other = make_sample(len(PARTIAL.plaintext), tag=1)
    assert_rejected(graft(other, PARTIAL), HeaderAuthenticationFailed, "belongs to another file", decoder=decoder)


@both_decoders
def test_header_from_another_file_other_key_resolved_from_its_slot(decoder: str) -> None:
    other = make_sample(len(PARTIAL.plaintext), dek=OTHER_DEK, key_uri="local:other")
    assert_rejected(graft(other, PARTIAL), HeaderAuthenticationFailed, "header authentication failed",
                    decoder=decoder, resolve=by_key_uri)


@both_decoders
def test_header_from_another_file_other_key_checked_against_body_key(decoder: str) -> None:
    other = make_sample(len(PARTIAL.plaintext), dek=OTHER_DEK, key_uri="local:other")
    assert_rejected(graft(other, PARTIAL), WrongKey, "wrong key", decoder=decoder, resolve=same_key)


# -- segments ------------------------------------------------------------------------------------------

SEGMENT_CASES = [(sample_id, index) for sample_id in ("EXACT", "PARTIAL") for index in range(3)]
SAMPLES = {"SMALL": SMALL, "EXACT": EXACT, "PARTIAL": PARTIAL}


def segment_flips(sample: Sample, index: int) -> dict[str, int]:
    """Offsets inside segment ``index``: its first, middle and last ciphertext byte and its tag."""
    start, end = sample.segment(index)
    tag = end - 16
    return {"ciphertext-first": start, "ciphertext-middle": (start + tag) // 2, "ciphertext-last": tag - 1,
            "tag-first": tag, "tag-last": end - 1}


@both_decoders
@pytest.mark.parametrize(("sample_id", "index"), SEGMENT_CASES)
@pytest.mark.parametrize("part", ["ciphertext-first", "ciphertext-middle", "ciphertext-last", "tag-first",
                                  "tag-last"])
def test_segment_bit_flip(decoder: str, sample_id: str, index: int, part: str) -> None:
    sample = SAMPLES[sample_id]
    data = flipped(sample.data, segment_flips(sample, index)[part], 0x04)
    message = assert_rejected(data, SegmentAuthenticationFailed, segment_phrase(index), decoder=decoder)
    assert "failed authentication" in message


@pytest.mark.parametrize(("sample_id", "index"), SEGMENT_CASES)
def test_stream_releases_only_segments_before_a_flipped_one(sample_id: str, index: int) -> None:
    sample = SAMPLES[sample_id]
    for offset in segment_flips(sample, index).values():
        error, released = stream_until_failure(flipped(sample.data, offset))
        assert isinstance(error, SegmentAuthenticationFailed)
        assert released == sample.plaintext_before(index)


@both_decoders
def test_single_segment_file_flip(decoder: str) -> None:
    for offset in segment_flips(SMALL, 0).values():
        assert_rejected(flipped(SMALL.data, offset), SegmentAuthenticationFailed, "final segment 0", decoder=decoder)


def test_reader_reads_intact_segments_around_a_tampered_one() -> None:
    data = flipped(PARTIAL.data, segment_flips(PARTIAL, 1)["ciphertext-middle"])
    with DecryptingReader(io.BytesIO(data), same_key, name=NAME) as reader:
        assert reader.read_range(0, FIRST) == PARTIAL.plaintext[:FIRST]
        assert reader.read_range(FIRST + LATER, 1000) == PARTIAL.plaintext[FIRST + LATER :]
        with pytest.raises(SegmentAuthenticationFailed, match=rf"{re.escape(NAME)}: segment 1 of 3"):
            reader.read_range(FIRST, 1)


# -- truncation ----------------------------------------------------------------------------------------


@both_decoders
@pytest.mark.parametrize("sample_id", ["EXACT", "PARTIAL"])
@pytest.mark.parametrize("boundary", [0, 1])
def test_truncation_at_segment_boundary(decoder: str, sample_id: str, boundary: int) -> None:
    sample = SAMPLES[sample_id]
    cut = sample.data[: sample.segment(boundary)[1]]
    assert_rejected(cut, TruncatedCiphertext, "truncated", decoder=decoder)


@pytest.mark.parametrize("sample_id", ["EXACT", "PARTIAL"])
@pytest.mark.parametrize("boundary", [0, 1])
def test_stream_truncated_at_boundary_releases_only_earlier_segments(sample_id: str, boundary: int) -> None:
    sample = SAMPLES[sample_id]
    error, released = stream_until_failure(sample.data[: sample.segment(boundary)[1]])
    assert isinstance(error, TruncatedCiphertext)
    assert f"ends after segment {boundary}" in str(error)
    assert released == sample.plaintext_before(boundary)


@both_decoders
@pytest.mark.parametrize("sample_id", ["SMALL", "EXACT", "PARTIAL"])
def test_truncation_to_an_empty_body(decoder: str, sample_id: str) -> None:
    sample = SAMPLES[sample_id]
    assert_rejected(sample.data[: sample.header_size + 40], TruncatedCiphertext, "truncated", decoder=decoder)


# Cuts inside segment ``index`` that keep ``kept`` of its bytes; fewer than 16 cannot hold a tag.
INSIDE_CUTS = [(index, kept) for index in range(3) for kept in (1, 15, 17, 100, -1)]


def inside_cut(sample: Sample, index: int, kept: int) -> bytes:
    start, end = sample.segment(index)
    return sample.data[: (end + kept if kept < 0 else start + kept)]


@both_decoders
@pytest.mark.parametrize(("index", "kept"), INSIDE_CUTS)
def test_truncation_between_boundaries(decoder: str, index: int, kept: int) -> None:
    data = inside_cut(EXACT, index, kept)
    if 0 < kept < 16:
        assert_rejected(data, TruncatedCiphertext, "truncated", decoder=decoder)
    else:
        assert_rejected(data, SegmentAuthenticationFailed, f"final segment {index} failed", decoder=decoder)


@pytest.mark.parametrize("decoder", [
    "decrypt_bytes", "DecryptingReader"])
@pytest.mark.parametrize("index", [0, 1, 2])
def test_truncation_leaving_exactly_one_tag_of_a_segment(decoder: str, index: int) -> None:
    assert_rejected(inside_cut(EXACT, index, 16), SegmentAuthenticationFailed, f"final segment {index} failed",
                    decoder=decoder)


@pytest.mark.parametrize(("index", "kept"), INSIDE_CUTS)
def test_stream_truncated_inside_segment_releases_only_earlier_segments(index: int, kept: int) -> None:
    _, released = stream_until_failure(inside_cut(EXACT, index, kept))
    assert released == EXACT.plaintext_before(index)


@both_decoders
@pytest.mark.parametrize("where", ["empty-file", "in-magic", "after-prefix", "in-segment-size", "in-file-id",
                                   "in-key-check", "in-metadata", "in-key-uri-length", "in-key-uri",
                                   "in-wrapped-key", "in-header-mac", "before-body-header", "in-body-header"])
def test_truncation_inside_the_header(decoder: str, where: str) -> None:
    s = PARTIAL
    cut = {"empty-file": 0, "in-magic": 2, "after-prefix": 10, "in-segment-size": 12, "in-file-id": 20,
           "in-key-check": 40, "in-metadata": 70, "in-key-uri-length": s.uri_len_at + 1, "in-key-uri": s.uri_at + 3,
           "in-wrapped-key": s.wrapped_at + 30, "in-header-mac": s.header_size - 5,
           "before-body-header": s.header_size, "in-body-header": s.header_size + 39}[where]
    if where in ("empty-file", "in-magic"):  # too short to carry the magic: not a container at all
        assert_rejected(s.data[:cut], NotEncrypted, "not a ppml encrypted file", decoder=decoder)
    else:
        assert_rejected(s.data[:cut], TruncatedCiphertext, "truncated", decoder=decoder)


# -- extension, reordering, duplication ----------------------------------------------------------------


@both_decoders
def test_few_bytes_appended_after_a_short_final_segment(decoder: str) -> None:
    assert_rejected(PARTIAL.data + b"\x00" * 5, SegmentAuthenticationFailed, "final segment 2 failed",
                    decoder=decoder)


def test_few_bytes_appended_after_a_full_final_segment_stream() -> None:
    assert_rejected(EXACT.data + b"\x00" * 5, SegmentAuthenticationFailed, "unexpected data after the final segment 2")


def test_few_bytes_appended_after_a_full_final_segment_reader() -> None:
    # Fewer than 16 extra bytes look to the layout like a segment 3 too short for its tag.
    with pytest.raises((SegmentAuthenticationFailed, TruncatedCiphertext), match=re.escape(NAME)):
        via_reader(EXACT.data + b"\x00" * 5, same_key)


@both_decoders
@pytest.mark.parametrize("extra", ["copy-of-final", "copy-of-segment-1", "zeros"])
def test_whole_segment_appended_after_a_full_final_segment(decoder: str, extra: str) -> None:
    tail = {"copy-of-final": EXACT.segment_bytes(2), "copy-of-segment-1": EXACT.segment_bytes(1),
            "zeros": bytes(S)}[extra]
    phrase = "unexpected data after the final segment 2" if decoder == "decrypt_bytes" else READER_FINAL
    assert_rejected(EXACT.data + tail, SegmentAuthenticationFailed, phrase, decoder=decoder)


@both_decoders
def test_whole_segment_appended_after_a_short_final_segment(decoder: str) -> None:
    phrase = segment_phrase(2) if decoder == "decrypt_bytes" else READER_FINAL
    assert_rejected(PARTIAL.data + PARTIAL.segment_bytes(1), SegmentAuthenticationFailed, phrase, decoder=decoder)


def test_stream_appended_segment_releases_only_earlier_segments() -> None:
    _, released = stream_until_failure(EXACT.data + EXACT.segment_bytes(2))
    assert released == EXACT.plaintext_before(2)


def reordered(sample: Sample, order: list[int]) -> bytes:
    """The file with its segments in ``order`` (indices of the original segments)."""
    return sample.data[: sample.segment(0)[0]] + b"".join(sample.segment_bytes(i) for i in order)


REORDERINGS = [
    # (case, order of the original segments, first index that fails)
    ("swap-1-2", [0, 2, 1], 1),
    ("duplicate-1", [0, 1, 1, 2], 2),
    ("duplicate-final", [0, 1, 2, 2], 2),
    ("drop-1", [0, 2], 1),
    ("final-first-among-later", [0, 2, 2], 1),
]


@both_decoders
@pytest.mark.parametrize(("order", "failing"), [pytest.param(*case[1:], id=case[0]) for case in REORDERINGS])
def test_reordered_segments(decoder: str, order: list[int], failing: int) -> None:
    phrase = segment_phrase(failing) if decoder == "decrypt_bytes" else f"{segment_phrase(failing)}|{READER_FINAL}"
    assert_rejected(reordered(EXACT, order), SegmentAuthenticationFailed, phrase, decoder=decoder)


@pytest.mark.parametrize(("order", "failing"), [pytest.param(*case[1:], id=case[0]) for case in REORDERINGS])
def test_stream_reordered_releases_only_earlier_segments(order: list[int], failing: int) -> None:
    error, released = stream_until_failure(reordered(EXACT, order))
    assert isinstance(error, SegmentAuthenticationFailed)
    assert released == EXACT.plaintext_before(failing)


@both_decoders
def test_segment_from_another_file_with_the_same_key(decoder: str) -> None:
    other = make_sample(len(EXACT.plaintext), tag=2)
    start, end = EXACT.segment(1)
    data = EXACT.data[:start] + other.segment_bytes(1) + EXACT.data[end:]
    assert_rejected(data, SegmentAuthenticationFailed, segment_phrase(1), decoder=decoder)


def test_untampered_samples_decrypt() -> None:
    for sample in SAMPLES.values():
        for decode in DECODERS.values():
            assert decode(sample.data, same_key) == sample.plaintext
