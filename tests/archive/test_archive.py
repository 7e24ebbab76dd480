"""The archive keeps every file: unique names per job, no replaced bytes, private modes, atomic writes."""

from __future__ import annotations

import hashlib
import os
import stat
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models import Job, make_engine
from tasks.archive import ArchiveConflict, file_name, write_bytes

XML_BYTES = b"<?xml version='1.0'?><cfdi>one</cfdi>"


def job(fiscal: str | None = None, *, entity: str = "JES900109Q90", year: int | None = 2026) -> Job:
    now = datetime.now(UTC)
    return Job(id=str(uuid.uuid4()), entity=entity, doc_guid=fiscal, doc_year=year, created_at=now)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def open_umask() -> Iterator[None]:
    """A permissive umask, so the modes checked are the ones the archive sets, not the umask's."""
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


def test_sanitising_equal_fiscal_ids_keep_both_files(tmp_path: Path) -> None:
    first, second = job(".."), job("...")
    saved = [
        write_bytes(tmp_path, first, "xml", b"<a>first</a>"),
        write_bytes(tmp_path, second, "xml", b"<a>second</a>"),
    ]
    assert saved[0].path != saved[1].path
    for item, content in zip(saved, (b"<a>first</a>", b"<a>second</a>"), strict=True):
        assert item.path.read_bytes() == content and sha(item.path) == item.sha256
        assert item.path.parent == tmp_path / "JES900109Q90" / "2026"


def test_same_bytes_again_is_idempotent(tmp_path: Path) -> None:
    one = job("687bc63c-e03e-4c64-8eff-602de879bd1e")
    first = write_bytes(tmp_path, one, "xml", XML_BYTES)
    again = write_bytes(tmp_path, one, "xml", XML_BYTES)
    assert first == again
    assert [p.name for p in first.path.parent.iterdir()] == [first.path.name]  # no temporary left


def test_different_bytes_never_replace_a_file(tmp_path: Path) -> None:
    one = job("687bc63c-e03e-4c64-8eff-602de879bd1e")
    first = write_bytes(tmp_path, one, "xml", XML_BYTES)
    other = b"<?xml version='1.0'?><cfdi>two</cfdi>"
    second = write_bytes(tmp_path, one, "xml", other)
    assert second.path != first.path and second.path.name.startswith(first.path.name.removesuffix(".xml"))
    assert first.path.read_bytes() == XML_BYTES and sha(first.path) == first.sha256
    assert second.path.read_bytes() == other and sha(second.path) == second.sha256
    # Both names taken by other bytes: refused, nothing replaced, nothing left behind.
    third = b"<?xml version='1.0'?><cfdi>three</cfdi>"
    digest = hashlib.sha256(third).hexdigest()
    (first.path.parent / f"{first.path.name.removesuffix('.xml')}.{digest[:16]}.xml").write_bytes(b"<squatter/>")
    with pytest.raises(ArchiveConflict):
        write_bytes(tmp_path, one, "xml", third)
    assert first.path.read_bytes() == XML_BYTES and second.path.read_bytes() == other
    assert not [p for p in first.path.parent.iterdir() if p.name.startswith(".")]


def test_files_are_0600_and_folders_0700(tmp_path: Path, open_umask: None) -> None:
    root = tmp_path / "archive"
    saved = write_bytes(root, job("A-1"), "pdf", b"%PDF-1.7\n%%EOF\n")
    assert mode(saved.path) == 0o600
    for folder in (root, root / "JES900109Q90", saved.path.parent):
        assert mode(folder) == 0o700, folder


def test_sqlite_file_and_home_are_private(tmp_path: Path, open_umask: None, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("EINVOICE_HOME", str(home))
    engine = make_engine(f"sqlite:///{home / 'einvoice.db'}")
    with engine.connect() as conn:
        conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
        conn.commit()
    engine.dispose()
    assert mode(home) == 0o700 and mode(home / "einvoice.db") == 0o600
    for side in home.glob("einvoice.db-*"):
        assert mode(side) == 0o600, side


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=400), st.text(max_size=100))
def test_any_fiscal_id_names_one_bounded_file_inside_the_archive(tmp_path: Path, fiscal: str, entity: str) -> None:
    one = job(fiscal or None, entity=entity)
    name = file_name(one, "xml", "xml")
    assert len(name.encode()) <= 255 and "/" not in name and "\x00" not in name
    assert name not in (".", "..") and one.id in name
    saved = write_bytes(tmp_path, one, "xml", XML_BYTES)
    assert saved.path.resolve().is_relative_to(tmp_path.resolve())
    assert saved.path.read_bytes() == XML_BYTES
