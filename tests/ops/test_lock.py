"""Installs are reproducible: every package pinned with its hashes, the locks in step with
pyproject.toml, and every install path (make, CI, the image) going through them."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from tests.harness import ROOT

LOCK = ROOT / "requirements" / "lock.txt"
DEV_LOCK = ROOT / "requirements" / "dev-lock.txt"
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(path: Path) -> dict[str, str]:
    """Package → version of a lock, after checking that each requirement is exact and hashed."""
    found: dict[str, str] = {}
    for block in re.split(r"\n(?=\S)", path.read_text()):
        if block.startswith("#") or not block.strip():
            continue
        match = _PIN.match(block)
        assert match, f"{path.name}: not an exact pin: {block.splitlines()[0]}"
        assert re.search(r"--hash=sha256:[0-9a-f]{64}", block), f"{path.name}: no hash for {match.group(1)}"
        found[canonical(match.group(1))] = match.group(2)
    return found


def requirement_names(requirements: list[str]) -> set[str]:
    return {canonical(re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0]) for requirement in requirements}


def test_every_locked_package_is_pinned_with_hashes() -> None:
    runtime, dev = pins(LOCK), pins(DEV_LOCK)
    assert len(runtime) > 20 and len(dev) > len(runtime)
    # The image and a developer's machine run the same versions of what they share.
    assert {name: dev[name] for name in runtime} == runtime
    assert "einvoice-worker" not in dev


def test_the_locks_hold_every_dependency_of_pyproject() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = requirement_names(project["dependencies"])
    dev = requirement_names(project["optional-dependencies"]["dev"])
    assert runtime - set(pins(LOCK)) == set()
    assert (runtime | dev) - set(pins(DEV_LOCK)) == set()
    assert {"fastapi", "pydantic", "pydantic-settings", "standardwebhooks", "uvicorn", "httpx"} <= runtime
    assert "schemathesis" in dev


def test_the_locks_are_what_make_lock_gives_for_pyproject(tmp_path: Path) -> None:
    """Re-resolving with the current locks as preferences changes nothing unless pyproject.toml changed.

    Runs the commands of `make lock` (uv, from the dev lock) in a copy of the files they read.
    """
    uv = shutil.which("uv", path=str(ROOT / ".venv" / "bin")) or shutil.which("uv")
    if uv is None:
        pytest.fail("uv is missing: it is in the dev lock, `make setup` installs it")
    dry = subprocess.run(["make", "-n", "lock", "VENV=/v"], cwd=ROOT, capture_output=True, text=True, check=True)
    commands = [shlex.split(line) for line in dry.stdout.splitlines() if "pip compile" in line]
    assert len(commands) == 2, dry.stdout
    locks = ["requirements/lock.txt", "requirements/dev-lock.txt"]
    (tmp_path / "requirements").mkdir()
    for name in ["pyproject.toml", "README.md", *locks]:
        shutil.copy(ROOT / name, tmp_path / name)
    for command in commands:
        result = subprocess.run(
            [uv, *command[1:]], cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False
        )
        assert result.returncode == 0, result.stderr
    for name in locks:
        assert (tmp_path / name).read_text() == (ROOT / name).read_text(), f"{name} is stale: run `make lock`"


def test_the_image_installs_the_lock_on_a_pinned_base() -> None:
    text = (ROOT / "Dockerfile").read_text()
    (base,) = re.findall(r"(?m)^FROM (\S+)", text)
    # An exact Python release on a named Debian release, digest optional: never a moving tag.
    assert re.fullmatch(r"python:3\.\d+\.\d+-slim-[a-z]+(@sha256:[0-9a-f]{64})?", base), base
    installs = re.findall(r"pip install ([^\n&]+)", text)
    assert installs == ["--require-hashes -r requirements/lock.txt", "--no-deps ."], installs
    assert text.index("COPY requirements/lock.txt") < text.index("--require-hashes")


def test_ci_installs_through_make_setup_and_brings_the_ops_tools() -> None:
    text = (ROOT / ".ci" / "run").read_text()
    assert "make setup" in text and "pip install" not in text
    assert re.search(r"apt-get install .*\"\$\{missing\[@\]\}\"", text)
    assert "missing+=(prometheus)" in text and "missing+=(docker-compose)" in text
    makefile = (ROOT / "Makefile").read_text()
    assert "--require-hashes -r $(DEV_LOCK)" in makefile and "--no-deps -e ." in makefile
