"""Round trips through the ``.ppml`` writer and both readers, at and around every segment boundary.

Segment size 4096 keeps multi-segment files small: segment 0 holds ``S - 56`` plaintext bytes and every
later segment ``S - 16``.
"""

from __future__ import annotations

import io
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ppml._secrets import SecretKey
from ppml.errors import TruncatedCiphertext
from ppml.fileformat import DecryptingReader, EncryptingWriter, SegmentLayout, decrypt_bytes, decrypt_stream

S = 4096
FIRST, LATER = S - 56, S - 16
MAX_SIZE = FIRST + 4 * LATER + 100  # a little over five segments
DEK = SecretKey(bytes(range(32)))
FILE_ID = bytes(range(100, 116))
BODY_HEADER = bytes([40]) + bytes(range(1, 33)) + bytes(range(200, 207))

BOUNDARY_SIZES = sorted({0, 1} | {
    boundary + delta
    for boundary in (FIRST, FIRST + LATER, FIRST + 2 * LATER)
    for delta in (-1, 0, 1)
})

FAST = settings(deadline=None, max_examples=150)


def resolve(_header: object) -> SecretKey:
    return DEK


def plaintext_of(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def encrypt(chunks: list[bytes | bytearray | memoryview], *, fixed: bool = True) -> tuple[bytes, int]:
    """Encrypt ``chunks`` written one by one; returns the ciphertext and the header size."""
    sink = io.BytesIO()
    seams = {"_file_id": FILE_ID, "_body_header": BODY_HEADER} if fixed else {}
    with EncryptingWriter(sink, data_key=DEK, key_uri="local:roundtrip", wrapped_key=b"\x07" * 65,
                          metadata={"test": "roundtrip"}, segment_size=S, **seams) as writer:
        for chunk in chunks:
            assert writer.write(chunk) == len(chunk)
    return sink.getvalue(), writer.header.size


def expected_segments(size: int) -> int:
    """Segments a writer emits for ``size`` plaintext bytes (no empty trailing segment)."""
    return 1 if size <= FIRST else 1 + -(-(size - FIRST) // LATER)


class NonSeekable:
    """A source exposing only ``read()``, which returns at most ``step`` bytes per call (short reads)."""

    def __init__(self, data: bytes, step: int) -> None:
        self._data = memoryview(data)
        self._position = 0
        self._step = step

    def read(self, size: int = -1) -> bytes:
        if size < 0:
            size = len(self._data)
        chunk = self._data[self._position : self._position + min(size, self._step)]
        self._position += len(chunk)
        return bytes(chunk)


def split(data: bytes, cuts: list[int], kinds: list[type]) -> list[bytes | bytearray | memoryview]:
    """``data`` cut at ``cuts``, each piece as one of ``kinds`` (bytes, bytearray, memoryview)."""
    bounds = [0, *sorted(cuts), len(data)]
    pieces = [data[start:end] for start, end in zip(bounds, bounds[1:], strict=False)]
    return [kinds[i % len(kinds)](piece) for i, piece in enumerate(pieces)]


# -- fixed boundary sizes ------------------------------------------------------------------------------


@pytest.mark.parametrize("size", BOUNDARY_SIZES)
def test_boundary_size_round_trips_through_every_reader(size: int) -> None:
    plaintext = plaintext_of(size, seed=size)
    ciphertext, header_size = encrypt([plaintext])
    assert len(ciphertext) == header_size + 40 + size + 16 * expected_segments(size)
    assert decrypt_bytes(ciphertext, resolve, name="boundary.ppml") == plaintext
    sink = io.BytesIO()
    assert decrypt_stream(NonSeekable(ciphertext, 1000), sink, resolve, name="boundary.ppml") == size
    assert sink.getvalue() == plaintext
    with DecryptingReader(io.BytesIO(ciphertext), resolve, name="boundary.ppml") as reader:
        assert reader.size == size
        assert reader.read() == plaintext
        assert reader.read() == b""


@pytest.mark.parametrize("size", BOUNDARY_SIZES)
def test_boundary_size_layout_matches_writer(size: int) -> None:
    ciphertext, header_size = encrypt([plaintext_of(size)])
    layout = SegmentLayout(S, len(ciphertext) - header_size)
    layout.check("boundary.ppml")
    assert layout.segment_count == expected_segments(size)
    assert layout.plaintext_size == size


@pytest.mark.parametrize("size", BOUNDARY_SIZES)
def test_boundary_size_byte_at_a_time_writes(size: int) -> None:
    plaintext = plaintext_of(size, seed=size)
    single, _ = encrypt([plaintext])
    byte_by_byte, _ = encrypt([plaintext[i : i + 1] for i in range(size)])
    assert byte_by_byte == single


def test_fresh_randomness_per_file() -> None:
    first, _ = encrypt([b"same plaintext"], fixed=False)
    second, _ = encrypt([b"same plaintext"], fixed=False)
    assert first != second
    assert decrypt_bytes(first, resolve, name="a") == decrypt_bytes(second, resolve, name="b") == b"same plaintext"


def test_aborted_writer_output_never_decrypts() -> None:
    for size in (10, FIRST + LATER + 10):
        sink = io.BytesIO()
        with pytest.raises(RuntimeError), EncryptingWriter(sink, data_key=DEK, key_uri="local:k",
                                                           wrapped_key=b"w", segment_size=S) as writer:
            writer.write(plaintext_of(size))
            raise RuntimeError("job failed")
        with pytest.raises(TruncatedCiphertext, match="aborted.ppml"):
            decrypt_bytes(sink.getvalue(), resolve, name="aborted.ppml")


def test_write_after_close_is_refused() -> None:
    writer = EncryptingWriter(io.BytesIO(), data_key=DEK, key_uri="local:k", wrapped_key=b"w", segment_size=S)
    writer.close()
    with pytest.raises(ValueError, match="closed"):
        writer.write(b"late")


# -- properties ----------------------------------------------------------------------------------------

sizes = st.one_of(st.sampled_from(BOUNDARY_SIZES), st.integers(0, MAX_SIZE))


@FAST
@given(size=sizes, seed=st.integers(0, 2**32), data=st.data())
def test_any_write_chunking_gives_the_same_ciphertext(size: int, seed: int, data: st.DataObject) -> None:
    plaintext = plaintext_of(size, seed)
    cuts = data.draw(st.lists(st.integers(0, size), max_size=12), label="cuts")
    kinds = data.draw(st.lists(st.sampled_from([bytes, bytearray, memoryview]), min_size=1, max_size=3),
                      label="kinds")
    chunked, _ = encrypt(split(plaintext, cuts, kinds))
    whole, _ = encrypt([plaintext])
    assert chunked == whole
    assert decrypt_bytes(chunked, resolve, name="chunked.ppml") == plaintext


@FAST
@given(size=sizes, seed=st.integers(0, 2**32), data=st.data())
def test_random_access_matches_plaintext_slices(size: int, seed: int, data: st.DataObject) -> None:
    plaintext = plaintext_of(size, seed)
    ciphertext, _ = encrypt([plaintext])
    with DecryptingReader(io.BytesIO(ciphertext), resolve, name="ranges.ppml") as reader:
        assert reader.size == size
        for _ in range(data.draw(st.integers(1, 6), label="reads")):
            start = data.draw(st.integers(0, size + 50), label="start")
            length = data.draw(st.integers(0, 2 * S + 10), label="length")
            expected = plaintext[start : start + length]
            assert reader.read_range(start, length) == expected
            assert reader.tell() == start + len(expected)
        offset = data.draw(st.integers(-size, 0), label="from end")
        assert reader.seek(offset, io.SEEK_END) == size + offset
        assert reader.read() == plaintext[size + offset :]
        position = data.draw(st.integers(0, size), label="position")
        reader.seek(position)
        step = data.draw(st.integers(-position, size - position), label="step")
        assert reader.seek(step, io.SEEK_CUR) == position + step
        assert reader.read(LATER) == plaintext[position + step : position + step + LATER]


@FAST
@given(size=sizes, seed=st.integers(0, 2**32), step=st.integers(1, 2 * S))
def test_decrypt_stream_from_non_seekable_source(size: int, seed: int, step: int) -> None:
    plaintext = plaintext_of(size, seed)
    ciphertext, header_size = encrypt([plaintext])
    sink, progress = io.BytesIO(), []
    written = decrypt_stream(NonSeekable(ciphertext, step), sink, resolve, name="pipe.ppml",
                             progress=progress.append)
    assert written == size
    assert sink.getvalue() == plaintext
    assert len(progress) == expected_segments(size)
    assert sum(progress) == len(ciphertext) - header_size - 40


@settings(deadline=None, max_examples=300)
@given(size=st.integers(0, 50 * S), segment_size=st.sampled_from([4096, 4097, 65536, 1024 * 1024]))
def test_segment_layout_is_consistent(size: int, segment_size: int) -> None:
    first, later = segment_size - 56, segment_size - 16
    count = 1 if size <= first else 1 + -(-(size - first) // later)
    layout = SegmentLayout(segment_size, 40 + size + 16 * count)
    layout.check("layout")
    assert layout.first_capacity == first and layout.capacity == later
    assert layout.segment_count == count
    assert layout.plaintext_size == size
    assert layout.ciphertext_range(0)[0] == 40
    previous_end, total = 40, 0
    for index in range(count):
        start, end = layout.ciphertext_range(index)
        assert start == previous_end, "segments are contiguous"
        assert layout.plaintext_start(index) == total
        plain = end - start - 16
        if index < count - 1:
            assert plain == layout.segment_capacity(index), "only the last segment may be short"
        else:
            assert 0 <= plain <= layout.segment_capacity(index)
            assert end == layout.body_size
        if plain:
            assert layout.segment_of(total) == index
            assert layout.segment_of(total + plain - 1) == index
        total, previous_end = total + plain, end
    assert total == size


@settings(deadline=None, max_examples=300)
@given(offset=st.integers(0, 2**40), segment_size=st.sampled_from([4096, 4097, 1024 * 1024, 64 * 1024 * 1024]))
def test_segment_of_inverts_plaintext_start(offset: int, segment_size: int) -> None:
    layout = SegmentLayout(segment_size, 0)
    index = layout.segment_of(offset)
    start = layout.plaintext_start(index)
    assert start <= offset < start + layout.segment_capacity(index)
    assert layout.plaintext_start(index + 1) == start + layout.segment_capacity(index)


def test_writer_dropped_without_close_never_finalizes() -> None:
    """A writer abandoned after an error (no ``with``, no close) must not gain a final segment."""
    import gc

    key = SecretKey(bytes(range(32)))
    sink = io.BytesIO()

    def abandon() -> None:
        writer = EncryptingWriter(sink, data_key=key, key_uri="local:k", wrapped_key=b"w", segment_size=4096)
        writer.write(b"first half")
        raise RuntimeError("the job failed")

    with pytest.raises(RuntimeError):
        abandon()
    gc.collect()
    with pytest.raises(TruncatedCiphertext):
        decrypt_bytes(sink.getvalue(), lambda header: key, name="abandoned.ppml")
