"""Streaming encryption and random-access decryption of ``.ppml`` containers in O(segment) memory."""

from __future__ import annotations

import hmac
import io
import os
from collections.abc import Callable, Mapping
from dataclasses import replace
from types import TracebackType
from typing import Any, BinaryIO

from ppml._secrets import SecretKey
from ppml.errors import (
    HeaderAuthenticationFailed,
    MalformedHeader,
    SegmentAuthenticationFailed,
    TruncatedCiphertext,
    WrongKey,
)
from ppml.fileformat._header import FILE_ID_SIZE, Header, read_fully, read_header, validate_segment_size
from ppml.fileformat._layout import BODY_HEADER_SIZE, DEFAULT_SEGMENT_SIZE, TAG_SIZE, SegmentLayout
from ppml.fileformat._segments import SegmentCipher, header_mac, key_check, key_check_matches, new_body_header

KeyResolver = Callable[[Header], SecretKey]
"""Returns the data key of a header, typically by asking the KMS named in ``header.key_uri``."""


class EncryptingWriter(io.RawIOBase):
    """A write-only stream that encrypts into ``sink`` segment by segment.

    Leaving a ``with`` block by an exception aborts the stream without its final segment, so a failed
    job never leaves a file that decrypts as if it were complete.
    """

    def __init__(
        self,
        sink: BinaryIO,
        *,
        data_key: SecretKey,
        key_uri: str,
        wrapped_key: bytes,
        metadata: Mapping[str, Any] | None = None,
        segment_size: int = DEFAULT_SEGMENT_SIZE,
        _file_id: bytes | None = None,
        _body_header: bytes | None = None,
    ) -> None:
        super().__init__()
        validate_segment_size(segment_size)
        file_id = os.urandom(FILE_ID_SIZE) if _file_id is None else _file_id
        body_header = new_body_header() if _body_header is None else _body_header
        header = Header(segment_size=segment_size, file_id=file_id, key_check=key_check(data_key, file_id),
                        key_uri=key_uri, wrapped_key=wrapped_key, metadata=dict(metadata or {}))
        mac = header_mac(data_key, file_id, header.unauthenticated_bytes(), body_header)
        self.header = replace(header, header_mac=mac)
        self._cipher = SegmentCipher(data_key, body_header, self.header.fixed_bytes())
        self._sink = sink
        self._index = 0
        self._capacity = segment_size - BODY_HEADER_SIZE - TAG_SIZE
        self._full_capacity = segment_size - TAG_SIZE
        self._buffer = bytearray()
        self._out = bytearray(segment_size)
        self._aborted = False
        sink.write(self.header.to_bytes() + body_header)

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:  # noqa: ANN401 - any bytes-like object
        """Buffer ``data``; emit each segment once it is full and known not to be the last."""
        if self.closed:
            raise ValueError("write to a closed EncryptingWriter")
        view = memoryview(data).cast("B")
        size, pos = len(view), 0
        if self._buffer:
            take = min(self._capacity - len(self._buffer), size)
            self._buffer += view[:take]
            pos = take
            if len(self._buffer) < self._capacity or pos == size:
                return size
            self._emit(self._buffer, last=False)
            self._buffer.clear()
        while size - pos > self._capacity:
            step = self._capacity
            self._emit(view[pos : pos + step], last=False)
            pos += step
        self._buffer += view[pos:]
        return size

    def _emit(self, plaintext: memoryview | bytearray, *, last: bool) -> None:
        written = self._cipher.encrypt_into(self._index, last, plaintext, self._out)
        self._sink.write(memoryview(self._out)[:written])
        self._index += 1
        self._capacity = self._full_capacity

    def close(self) -> None:
        """Write the final segment (unless aborted) and close this stream; ``sink`` stays open."""
        if not self.closed:
            try:
                if not self._aborted:
                    self._emit(self._buffer, last=True)
                self._buffer.clear()
            finally:
                super().close()

    def __del__(self) -> None:
        # Dropped without close(): the stream is incomplete, so it must never gain a final segment.
        if not self.closed:
            self._aborted = True
        super().__del__()

    def abort(self) -> None:
        """Close without the final segment: the partial output will never authenticate."""
        self._aborted = True
        self.close()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if kind is not None:
            self.abort()
        else:
            self.close()


class AuthenticatedHeader:
    """A header whose data key matched its commitment and whose MAC verified, with the body's cipher."""

    def __init__(self, source: BinaryIO, resolve_key: KeyResolver, name: str) -> None:
        self.header = read_header(source, name)
        self.body_header = read_fully(source, BODY_HEADER_SIZE)
        if len(self.body_header) != BODY_HEADER_SIZE:
            raise TruncatedCiphertext(f"{name}: file is truncated: the body header is missing")
        if self.body_header[0] != BODY_HEADER_SIZE:
            raise MalformedHeader(f"{name}: the body header length byte is {self.body_header[0]}, not 40")
        dek = resolve_key(self.header)
        if not key_check_matches(dek, self.header.file_id, self.header.key_check):
            raise WrongKey(f"{name}: wrong key: the data key does not match the file's key commitment "
                           f"(key {self.header.key_uri}); the header may also be corrupt")
        expected = header_mac(dek, self.header.file_id, self.header.unauthenticated_bytes(), self.body_header)
        if not hmac.compare_digest(expected, self.header.header_mac):
            raise HeaderAuthenticationFailed(
                f"{name}: header authentication failed: the header was modified or belongs to another file")
        self.cipher = SegmentCipher(dek, self.body_header, self.header.fixed_bytes())
        self.name = name
        self._data_key = dek

    @property
    def data_key(self) -> SecretKey:
        """The verified data key (for re-wrapping under another primary key)."""
        return self._data_key

    def with_key_slot(self, key_uri: str, wrapped_key: bytes) -> bytes:
        """Header and body-header bytes with a new key slot and MAC; the body stays valid unchanged."""
        header = replace(self.header, key_uri=key_uri, wrapped_key=wrapped_key, header_mac=b"")
        mac = header_mac(self._data_key, header.file_id, header.unauthenticated_bytes(), self.body_header)
        return replace(header, header_mac=mac).to_bytes() + self.body_header


def _decrypt_segment(opened: AuthenticatedHeader, index: int, ciphertext: memoryview, final: bool, out: bytearray,
                     count: int | None = None) -> int:
    """Decrypt one segment, and on failure say as precisely as is safe what went wrong."""
    size = opened.cipher.decrypt_into(index, final, ciphertext, out)
    if size is not None:
        return size
    name, cipher = opened.name, opened.cipher
    if final and cipher.decrypt_into(index, False, ciphertext, out) is not None:
        raise TruncatedCiphertext(
            f"{name}: file is truncated: it ends after segment {index}, which is not the final segment")
    if not final and cipher.decrypt_into(index, True, ciphertext, out) is not None:
        raise SegmentAuthenticationFailed(f"{name}: unexpected data after the final segment {index}")
    if final:
        raise SegmentAuthenticationFailed(
            f"{name}: final segment {index} failed authentication: the file was cut, extended or modified")
    of = f" of {count}" if count else ""
    raise SegmentAuthenticationFailed(
        f"{name}: segment {index}{of} failed authentication: it was modified, reordered or duplicated")


def decrypt_stream(source: BinaryIO | bytes | bytearray | memoryview, sink: BinaryIO, resolve_key: KeyResolver,
                   *, name: str, progress: Callable[[int], None] | None = None) -> int:
    """Decrypt a whole container from ``source`` (a stream, seekable or not, or bytes already in memory)
    into ``sink``; returns the number of plaintext bytes.

    Plaintext is written segment by segment, each only after it authenticated. The caller stages
    ``sink`` and discards it on error, since an earlier segment may already be written.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        source = _MemorySource(source)  # type: ignore[assignment]
    opened = AuthenticatedHeader(source, resolve_key, name)  # type: ignore[arg-type]
    segment_size = opened.header.segment_size
    read_chunk = _chunk_reader(source, segment_size)  # type: ignore[arg-type]
    out = bytearray(segment_size)
    current = read_chunk(segment_size - BODY_HEADER_SIZE, 0)
    index, total = 0, 0
    while True:
        if len(current) < TAG_SIZE:
            where = "the body is empty" if index == 0 and not current else f"it ends inside segment {index}"
            raise TruncatedCiphertext(f"{name}: file is truncated: {where}")
        following = memoryview(b"")
        if len(current) == (segment_size - BODY_HEADER_SIZE if index == 0 else segment_size):
            following = read_chunk(segment_size, (index + 1) % 2)
        final = len(following) == 0
        size = _decrypt_segment(opened, index, current, final, out)
        sink.write(memoryview(out)[:size])
        total += size
        if progress is not None:
            progress(len(current))
        if final:
            return total
        current, index = following, index + 1


def _chunk_reader(source: BinaryIO, segment_size: int) -> Callable[[int, int], memoryview]:
    """``read(size, slot)``: the next ``size`` bytes, valid until ``slot`` is reused.

    In-memory ciphertext is sliced without copying; streams fill two alternating buffers, so one
    segment can be looked ahead of the other.
    """
    if isinstance(source, _MemorySource):
        return lambda size, slot: source.view(size)
    buffers = (bytearray(segment_size), bytearray(segment_size))
    return lambda size, slot: _read_into(source, buffers[slot], size)


class _MemorySource:
    """Ciphertext already in memory: small reads copy, segment reads are zero-copy views."""

    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        self._data = memoryview(data).cast("B")
        self._position = 0

    def view(self, size: int) -> memoryview:
        chunk = self._data[self._position : self._position + size]
        self._position += len(chunk)
        return chunk

    def read(self, size: int = -1) -> bytes:
        return bytes(self.view(len(self._data) if size < 0 else size))


def _read_into(source: BinaryIO, buffer: bytearray, size: int) -> memoryview:
    view = memoryview(buffer)[:size]
    filled = 0
    readinto = getattr(source, "readinto", None)
    while filled < size:
        if readinto is not None:
            got = readinto(view[filled:])
        else:
            chunk = source.read(size - filled)
            got = len(chunk)
            view[filled : filled + got] = chunk
        if not got:
            break
        filled += got
    return view[:filled]


class SeekableView(io.RawIOBase):
    """A read-only, seekable plaintext view of known ``size``; subclasses keep ``_position`` and read."""

    size: int
    _position: int

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence not in (io.SEEK_SET, io.SEEK_CUR, io.SEEK_END):
            raise ValueError(f"invalid whence {whence}")
        base = (0, self._position, self.size)[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._position = base + offset
        return self._position


class DecryptingReader(SeekableView):
    """A seekable, read-only plaintext view of a container on a seekable source.

    Reads decrypt only the segments they touch, so a large file can be split among parallel readers.
    The last segment read is cached for runs of small sequential reads.
    """

    def __init__(self, source: BinaryIO, resolve_key: KeyResolver, *, name: str) -> None:
        super().__init__()
        self._opened = AuthenticatedHeader(source, resolve_key, name)
        self._source = source
        self._body_start = self._opened.header.size
        end = source.seek(0, io.SEEK_END)
        self._layout = SegmentLayout(self._opened.header.segment_size, end - self._body_start)
        self._layout.check(name)
        self._position = 0
        self._ciphertext = bytearray(self._layout.segment_size)
        self._plaintext = bytearray(self._layout.segment_size)
        self._cached: tuple[int, memoryview] | None = None
        # Authenticate the final segment now: it alone proves the file is neither cut nor extended, and
        # a read that never reaches the end (or a final segment holding no plaintext) would skip it.
        self._segment(self._layout.segment_count - 1)

    @property
    def header(self) -> Header:
        """The file's authenticated header."""
        return self._opened.header

    @property
    def size(self) -> int:
        """Plaintext size, known from the header and the ciphertext length alone."""
        return self._layout.plaintext_size

    def readinto(self, buffer: Any) -> int:  # noqa: ANN401 - any writable buffer
        target = memoryview(buffer).cast("B")
        count = min(len(target), max(0, self.size - self._position))
        done = 0
        while done < count:
            index = self._layout.segment_of(self._position)
            plaintext = self._segment(index)
            offset = self._position - self._layout.plaintext_start(index)
            take = min(count - done, len(plaintext) - offset)
            target[done : done + take] = plaintext[offset : offset + take]
            done += take
            self._position += take
        return done

    def read_range(self, start: int, length: int) -> bytes:
        """Plaintext bytes ``[start, start + length)``, clipped to the end of the file."""
        self.seek(start)
        return self.read(length) or b""

    def _segment(self, index: int) -> memoryview:
        if self._cached is not None and self._cached[0] == index:
            return self._cached[1]
        start, end = self._layout.ciphertext_range(index)
        self._source.seek(self._body_start + start)
        ciphertext = _read_into(self._source, self._ciphertext, end - start)
        if len(ciphertext) != end - start:
            raise TruncatedCiphertext(f"{self._opened.name}: file shrank while it was being read")
        final = index == self._layout.segment_count - 1
        self._cached = None  # the plaintext buffer is about to be overwritten
        size = _decrypt_segment(self._opened, index, ciphertext, final, self._plaintext, self._layout.segment_count)
        self._cached = (index, memoryview(self._plaintext)[:size])
        return self._cached[1]
