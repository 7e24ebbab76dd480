"""Reading a downloaded SAT package (a ZIP of CFDI XML files or of metadata text) as a record stream.

The ZIP stays on disk: members are read front to back, each as a decompressing stream read in
slices, so memory holds one entry (capped) at a time, never the archive, its directory or its
extraction. A bad entry (unsafe,
malformed, too large, not a CFDI, a metadata line that does not fit its header) comes out of the
iterator as a `SkippedEntry` value and the walk goes on: one supplier's broken XML must not keep the
other 199,999 documents of the package out of the index, and the caller records the skip so an
operator can see it. Only an archive that cannot be read at all raises (`PackageError`).
"""

from __future__ import annotations

import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from providers.mysuite.descarga.records import (
    MAX_METADATA_LINE,
    MAX_XML_BYTES,
    BadMetadataLine,
    CfdiRecord,
    Direction,
    EntryError,
    EntryTooLarge,
    MetadataHeader,
    parse_cfdi_xml,
)
from providers.mysuite.descarga.ziparchive import LocalHeaderUnusable, MemberError, iter_members

READ_SLICE = 64 << 10


class Readable(Protocol):
    """A binary stream: a `zipfile` member, a `ziparchive` member, a file, `io.BytesIO`."""

    def read(self, size: int = -1, /) -> bytes: ...


class PackageError(Exception):
    """The package as a whole cannot be read (not a ZIP, truncated central directory)."""


@dataclass(frozen=True, slots=True)
class SkippedEntry:
    """An entry (or one line of a metadata entry) left out of the index, and why."""

    name: str
    line: int | None
    error: EntryError

    @property
    def reason(self) -> str:
        return f"{type(self.error).__name__}: {self.error}"


def _slices(member: Readable, limit: int) -> Iterator[bytes]:
    read = 0
    while True:
        chunk = member.read(READ_SLICE)
        if not chunk:
            return
        read += len(chunk)
        if read > limit:
            raise EntryTooLarge(f"the entry is larger than {limit} bytes")
        yield chunk


def _lines(member: Readable, limit: int) -> Iterator[str]:
    """Metadata lines, decoded; a bare LF inside a CRLF file is part of a field, not a line end.

    SAT writes CRLF line ends but lets line feeds through inside names; splitting on every LF would
    cut such a record in two bad lines.
    """
    carry = b""
    crlf: bool | None = None
    while True:
        chunk = member.read(READ_SLICE)
        if not chunk:
            break
        carry += chunk
        if crlf is None and b"\n" in carry:
            first = carry.index(b"\n")
            crlf = carry[first - 1 : first] == b"\r"
        separator = b"\r\n" if crlf else b"\n"
        parts = carry.split(separator)
        carry = parts.pop()
        for part in parts:
            if len(part) > limit:
                raise BadMetadataLine("the metadata line is too long")
            yield part.decode("utf-8", "replace")
        if len(carry) > limit:
            raise BadMetadataLine("the metadata line is too long")
    if carry.strip():
        yield carry.decode("utf-8", "replace")


def read_metadata(member: Readable, name: str, direction: Direction) -> Iterator[CfdiRecord | SkippedEntry]:
    """The records of one metadata text (header first, `~`-separated); bad lines come out skipped."""
    header: MetadataHeader | None = None
    number = 0
    try:
        for number, line in enumerate(_lines(member, MAX_METADATA_LINE), start=1):
            if header is None:
                header = MetadataHeader(line)
                continue
            if not line.strip():
                continue
            try:
                yield header.parse(line, direction)
            except BadMetadataLine as exc:
                yield SkippedEntry(name, number, exc)
    except BadMetadataLine as exc:  # a bad header or an overlong line: the rest of the file is unreadable
        yield SkippedEntry(name, number or None, exc)


def _entry(
    name: str, member: Readable, size: int, direction: Direction, max_entry_bytes: int
) -> Iterator[CfdiRecord | SkippedEntry]:
    lowered = name.lower()
    if lowered.endswith(".xml"):
        if size > max_entry_bytes:
            raise EntryTooLarge(f"the entry is larger than {max_entry_bytes} bytes")
        yield parse_cfdi_xml(_slices(member, max_entry_bytes), direction, max_entry_bytes)
    elif lowered.endswith(".txt"):
        yield from read_metadata(member, name, direction)
    else:
        yield SkippedEntry(name, None, EntryError("the entry is neither .xml nor .txt"))


def _guarded(entries: Iterator[CfdiRecord | SkippedEntry], name: str) -> Iterator[CfdiRecord | SkippedEntry]:
    try:
        yield from entries
    except EntryError as exc:
        yield SkippedEntry(name, None, exc)
    except (MemberError, zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as exc:
        # A damaged or encrypted member: the others may still be fine.
        yield SkippedEntry(name, None, EntryError(f"the entry cannot be decompressed ({type(exc).__name__})"))


def iter_package(
    path: Path | str, direction: Direction, *, max_entry_bytes: int = MAX_XML_BYTES
) -> Iterator[CfdiRecord | SkippedEntry]:
    """Every CFDI record of a package, in archive order; `.xml` entries are CFDI, `.txt` metadata.

    Members are read front to back from their local headers (constant memory, see
    `ziparchive`); an archive that needs its central directory is read with `zipfile` instead.
    Directories are passed over; any other entry is a `SkippedEntry`. The same UUID may come out
    twice (an XML and its metadata line in a mixed archive): the index merges them.
    """
    done = 0
    try:
        with open(path, "rb") as handle:
            for member, stream in iter_members(handle):
                done += 1
                if member.name.endswith("/"):
                    continue
                if stream is None:
                    reason = "encrypted" if member.encrypted else f"compression method {member.method}"
                    yield SkippedEntry(member.name, None, EntryError(f"the entry cannot be read ({reason})"))
                    continue
                yield from _guarded(_entry(member.name, stream, member.size, direction, max_entry_bytes), member.name)
            return
    except LocalHeaderUnusable:
        pass
    except MemberError as exc:
        raise PackageError(f"the package is damaged ({exc})") from None
    except OSError as exc:
        raise PackageError(f"the package cannot be read ({type(exc).__name__})") from None
    yield from _central_directory(path, direction, max_entry_bytes, skip=done)


def _central_directory(
    path: Path | str, direction: Direction, max_entry_bytes: int, skip: int
) -> Iterator[CfdiRecord | SkippedEntry]:
    """The `zipfile` reading, for archives whose local headers do not give the sizes."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise PackageError(f"the package is not a readable ZIP ({type(exc).__name__})") from None
    with archive:
        for info in archive.infolist()[skip:]:
            if info.is_dir():
                continue

            def opened(info: zipfile.ZipInfo = info) -> Iterator[CfdiRecord | SkippedEntry]:
                with archive.open(info) as member:
                    yield from _entry(info.filename, member, info.file_size, direction, max_entry_bytes)

            yield from _guarded(opened(), info.filename)
