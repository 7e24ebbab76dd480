"""`einvoice submit` never holds more than the largest accepted document: a file's size is checked
before reading, and a stream is read only one byte past the limit.

The command runs with its address space capped, so reading a whole endless or huge input fails with
MemoryError instead of taking the machine's memory.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import threading
from pathlib import Path

from tests.cli.conftest import Cli
from tests.harness import ROOT
from worker.producer import MAX_PAYLOAD_BYTES

ADDRESS_SPACE = 768 * 1024 * 1024


def _cap_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))


def _submit(cli: Cli, path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", "submit", str(path), "--internal-id", "BIG-1"],
        env=cli.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=_cap_memory,
    )


def test_a_file_larger_than_the_limit_is_refused_unread(cli: Cli) -> None:
    huge = cli.folder / "huge.xml"
    with huge.open("wb") as file:
        file.truncate(8 << 30)  # sparse: 8 GiB that take no disk
    result = _submit(cli, huge)
    assert result.returncode == 2, result.stderr
    assert "refused" in result.stdout and "8,589,934,592 bytes" in result.stdout and "40 MB" in result.stdout
    assert cli.store.jobs.list_jobs() == []


def test_an_endless_device_is_read_only_up_to_the_limit(cli: Cli) -> None:
    result = _submit(cli, Path("/dev/zero"))
    assert result.returncode == 2, result.stderr
    assert "refused" in result.stdout and f"over {MAX_PAYLOAD_BYTES:,} bytes" in result.stdout
    assert cli.store.jobs.list_jobs() == []


def test_a_pipe_is_read_at_most_one_byte_past_the_limit(cli: Cli) -> None:
    fifo = cli.folder / "stream.xml"
    os.mkfifo(fifo)
    offered = MAX_PAYLOAD_BYTES + (8 << 20)
    taken = 0

    def feed() -> None:
        nonlocal taken
        chunk = b"<" * (1 << 16)
        with fifo.open("wb") as pipe:
            try:
                while taken < offered:
                    taken += pipe.write(chunk)
                    pipe.flush()
            except BrokenPipeError:
                pass  # the reader has stopped: what it took is counted

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    result = _submit(cli, fifo)
    writer.join(timeout=60)
    assert result.returncode == 2, result.stderr
    assert f"over {MAX_PAYLOAD_BYTES:,} bytes" in result.stdout
    # What the writer got rid of is what was read plus what the pipe and our buffer hold.
    assert taken <= MAX_PAYLOAD_BYTES + 1 + 2 * (1 << 16) + (1 << 20), taken
