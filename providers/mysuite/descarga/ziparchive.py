"""Reading a ZIP front to back, one member at a time, in constant memory.

`zipfile.ZipFile` starts by loading the whole central directory: one `ZipInfo` per member, about
600 bytes each, so 120 MB for a package of 200,000 CFDI before the first one is read. SAT packages
are written with sizes in every local header, so they can be read the way they were written: local
header, data, next local header, never looking at the central directory. Each member is inflated
as a stream and its CRC checked at its end.

`LocalHeaderUnusable` says the archive needs its central directory after all (sizes deferred to a
data descriptor, general-purpose flag bit 3): the caller then falls back to `zipfile`.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

_LOCAL = struct.Struct("<4sHHHHHLLLHH")
_LOCAL_SIGNATURE = b"PK\x03\x04"
_ZIP64_EXTRA = 0x0001
_STORED, _DEFLATED = 0, 8
_SLICE = 64 << 10


class LocalHeaderUnusable(Exception):
    """The archive defers sizes to data descriptors, or does not start with a local header."""


class MemberError(Exception):
    """One member cannot be read (encrypted, unknown compression, damaged data, bad CRC)."""


@dataclass(frozen=True)
class Member:
    name: str
    method: int
    crc: int
    compressed_size: int
    size: int
    encrypted: bool


class MemberStream:
    """A member's content as a read-only stream that inflates what it reads and checks the CRC."""

    def __init__(self, handle: IO[bytes], member: Member) -> None:
        self._handle = handle
        self._member = member
        self._left = member.compressed_size
        self._inflate = zlib.decompressobj(-15) if member.method == _DEFLATED else None
        self._crc = 0
        self._produced = 0
        self._pending = b""
        self._done = False

    def read(self, size: int = -1) -> bytes:
        want = _SLICE if size is None or size < 0 else size
        while len(self._pending) < want and not self._done:
            self._fill()
        data, self._pending = self._pending[:want], self._pending[want:]
        return data

    def _fill(self) -> None:
        if self._left == 0:
            tail = self._inflate.flush() if self._inflate is not None else b""
            self._take(tail)
            self._done = True
            if self._crc != self._member.crc or self._produced != self._member.size:
                raise MemberError("the member's data does not match its CRC or size")
            return
        raw = self._handle.read(min(_SLICE, self._left))
        if not raw:
            raise MemberError("the archive ends inside a member")
        self._left -= len(raw)
        try:
            chunk = self._inflate.decompress(raw) if self._inflate is not None else raw
        except zlib.error:
            raise MemberError("the member's deflate data is damaged") from None
        self._take(chunk)

    def _take(self, chunk: bytes) -> None:
        if chunk:
            self._crc = zlib.crc32(chunk, self._crc)
            self._produced += len(chunk)
            self._pending += chunk


def _zip64_sizes(extra: bytes, size: int, compressed: int) -> tuple[int, int]:
    offset = 0
    while offset + 4 <= len(extra):
        kind, length = struct.unpack_from("<HH", extra, offset)
        body = extra[offset + 4 : offset + 4 + length]
        if kind == _ZIP64_EXTRA:
            values = [struct.unpack_from("<Q", body, at)[0] for at in range(0, len(body) - 7, 8)]
            if size == 0xFFFFFFFF and values:
                size = values.pop(0)
            if compressed == 0xFFFFFFFF and values:
                compressed = values.pop(0)
            break
        offset += 4 + length
    return size, compressed


def iter_members(handle: IO[bytes]) -> Iterator[tuple[Member, MemberStream | None]]:
    """Every member in archive order, with a stream of its content (None when it cannot be read).

    The caller may read a stream partly or not at all: the next member is found from the sizes,
    not from where the reader stopped.
    """
    first = True
    while True:
        header = handle.read(_LOCAL.size)
        if len(header) < _LOCAL.size or header[:4] != _LOCAL_SIGNATURE:
            if first:
                raise LocalHeaderUnusable("the file does not start with a ZIP local header")
            return  # the central directory (or the end) follows the last member
        first = False
        _, _, flags, method, _, _, crc, compressed, size, name_length, extra_length = _LOCAL.unpack(header)
        if flags & 0x08:
            raise LocalHeaderUnusable("member sizes are deferred to data descriptors")
        raw_name = handle.read(name_length)
        extra = handle.read(extra_length)
        if len(raw_name) < name_length or len(extra) < extra_length:
            raise MemberError("the archive ends inside a local header")
        size, compressed = _zip64_sizes(extra, size, compressed)
        name = raw_name.decode("utf-8" if flags & 0x800 else "cp437", "replace")
        member = Member(name, method, crc, compressed, size, bool(flags & 0x01))
        start = handle.tell()
        readable = not member.encrypted and method in (_STORED, _DEFLATED)
        yield member, MemberStream(handle, member) if readable else None
        handle.seek(start + compressed)
