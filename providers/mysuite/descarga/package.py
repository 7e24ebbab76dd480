"""Reading a downloaded SAT package (a ZIP of CFDI XML files or of metadata text) as a record stream.

The ZIP stays on disk: each member is opened as a decompressing stream and read in slices, so memory
holds one entry (capped) at a time, never the archive and never its extraction. A bad entry (unsafe,
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
from typing import IO

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

READ_SLICE = 64 << 10


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


def _slices(member: IO[bytes], limit: int) -> Iterator[bytes]:
    read = 0
    while True:
        chunk = member.read(READ_SLICE)
        if not chunk:
            return
        read += len(chunk)
        if read > limit:
            raise EntryTooLarge(f"the entry is larger than {limit} bytes")
        yield chunk


def _lines(member: IO[bytes], limit: int) -> Iterator[str]:
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


def read_metadata(member: IO[bytes], name: str, direction: Direction) -> Iterator[CfdiRecord | SkippedEntry]:
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


def iter_package(
    path: Path | str, direction: Direction, *, max_entry_bytes: int = MAX_XML_BYTES
) -> Iterator[CfdiRecord | SkippedEntry]:
    """Every CFDI record of a package, in archive order; `.xml` entries are CFDI, `.txt` metadata.

    Directories are passed over; any other entry is a `SkippedEntry`. The same UUID may come out
    twice (an XML and its metadata line in a mixed archive): the index merges them.
    """
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise PackageError(f"the package is not a readable ZIP ({type(exc).__name__})") from None
    with archive:
        for info in archive.infolist():
            if info.is_dir():
                continue
            name = info.filename
            lowered = name.lower()
            try:
                if lowered.endswith(".xml"):
                    if info.file_size > max_entry_bytes:
                        raise EntryTooLarge(f"the entry is larger than {max_entry_bytes} bytes")
                    with archive.open(info) as member:
                        yield parse_cfdi_xml(_slices(member, max_entry_bytes), direction, max_entry_bytes)
                elif lowered.endswith(".txt"):
                    with archive.open(info) as member:
                        yield from read_metadata(member, name, direction)
                else:
                    yield SkippedEntry(name, None, EntryError("the entry is neither .xml nor .txt"))
            except EntryError as exc:
                yield SkippedEntry(name, None, exc)
            except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as exc:
                # A damaged or encrypted member: the others may still be fine.
                yield SkippedEntry(name, None, EntryError(f"the entry cannot be decompressed ({type(exc).__name__})"))
