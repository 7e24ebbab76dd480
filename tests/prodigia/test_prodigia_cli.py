"""`einvoice addenda` as an operator runs it, against every simulator served by `sandbox.app` on one port."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner
from lxml import etree

from providers.prodigia import ADDENDA_TYPE_CODES, verify_attached
from tests.prodigia.conftest import DATOS, ProdigiaSandbox, stamped_cfdi
from worker.cli import main

ROOT = Path(__file__).resolve().parents[2]
CFDI = "http://www.sat.gob.mx/cfd/4"


@pytest.fixture
def mounted(sandbox_url: str) -> Iterator[ProdigiaSandbox]:
    """The Prodigia simulator as `einvoice sandbox` mounts it (under /prodigia beside the others)."""
    sandbox = ProdigiaSandbox(sandbox_url)
    sandbox.reset()
    yield sandbox
    sandbox.close()


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    datos = tmp_path / "datos.txt"
    datos.write_bytes(DATOS.replace("\n", "\r\n").encode())
    cfdi = tmp_path / "cfdi.xml"
    cfdi.write_bytes(stamped_cfdi())
    return {"datos": datos, "cfdi": cfdi, "out": tmp_path / "out" / "con-addenda.xml"}


@dataclass
class Ran:
    returncode: int
    stdout: bytes
    stderr: bytes


def einvoice(sandbox: ProdigiaSandbox, *args: str, **settings: str) -> Ran:
    """`einvoice addenda ARGS` in this process, with only the given PRODIGIA_* settings."""
    env: dict[str, str | None] = {name: None for name in os.environ if name.startswith("PRODIGIA_")}
    env.update({"PRODIGIA_ADDENDAS_URL": sandbox.url, **settings})
    result = CliRunner().invoke(main, ["addenda", *args], env=env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return Ran(result.exit_code, result.stdout_bytes, result.stderr_bytes or b"")


def test_the_installed_command_runs_as_a_program(mounted: ProdigiaSandbox, files: dict[str, Path]) -> None:
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT), "PRODIGIA_ADDENDAS_URL": mounted.url}
    result = subprocess.run(
        [sys.executable, "-m", "worker.cli", "addenda", "soriana", str(files["datos"]), "--cfdi", str(files["cfdi"])],
        env=env,
        cwd=ROOT,
        capture_output=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert verify_attached(files["cfdi"].read_bytes(), result.stdout)


def test_without_cfdi_the_addenda_node_goes_to_stdout(mounted: ProdigiaSandbox, files: dict[str, Path]) -> None:
    result = einvoice(mounted, "Soriana", str(files["datos"]))
    assert result.returncode == 0, result.stderr
    root = etree.fromstring(result.stdout)
    assert root.tag == f"{{{CFDI}}}Addenda"
    assert mounted.counters()["operations"]["procesarAddenda"]["calls"] == 1


def test_with_cfdi_the_checked_cfdi_is_written_to_out(mounted: ProdigiaSandbox, files: dict[str, Path]) -> None:
    files["out"].parent.mkdir()
    result = einvoice(mounted, "soriana", str(files["datos"]), "--cfdi", str(files["cfdi"]), "-o", str(files["out"]))
    assert result.returncode == 0, result.stderr
    assert result.stdout == b""
    written = files["out"].read_bytes()
    assert verify_attached(files["cfdi"].read_bytes(), written) == written
    assert b"written to" in result.stderr
    assert mounted.counters()["operations"]["procesarAdjuntarAddenda"]["calls"] == 1


def test_a_tampered_result_is_refused_and_nothing_written(mounted: ProdigiaSandbox, files: dict[str, Path]) -> None:
    mounted.configure(tamper="total")
    files["out"].parent.mkdir()
    result = einvoice(mounted, "soriana", str(files["datos"]), "--cfdi", str(files["cfdi"]), "-o", str(files["out"]))
    assert result.returncode == 2
    assert b"attribute Total of cfdi:Comprobante changed" in result.stderr
    assert not files["out"].exists()
    assert list(files["out"].parent.iterdir()) == []


def test_an_unknown_type_lists_the_known_ones_and_calls_nothing(
    mounted: ProdigiaSandbox, files: dict[str, Path]
) -> None:
    result = einvoice(mounted, "walmart", str(files["datos"]))
    assert result.returncode == 2
    message = result.stderr.decode()
    assert "unknown addenda type 'walmart'" in message
    assert all(code in message for code in ADDENDA_TYPE_CODES)
    assert mounted.calls() == 0


def test_unclean_data_is_refused_before_calling(mounted: ProdigiaSandbox, tmp_path: Path) -> None:
    datos = tmp_path / "tab.txt"
    datos.write_bytes(b"Soriana\nProveedor|\t1\n")
    result = einvoice(mounted, "soriana", str(datos))
    assert result.returncode == 2
    assert b"U+0009 on line 2" in result.stderr
    assert mounted.calls() == 0


def test_refused_credentials_exit_2_after_one_call_and_warn_of_the_lock(
    mounted: ProdigiaSandbox, files: dict[str, Path]
) -> None:
    result = einvoice(mounted, "soriana", str(files["datos"]), PRODIGIA_PASSWD="mala")
    assert result.returncode == 2
    assert b"locks the user after 3" in result.stderr
    assert b"mala" not in result.stderr
    counters = mounted.counters()
    assert counters["totals"]["calls"] == 1
    assert counters["locked"] == []


def test_maintenance_exits_75_so_scripts_try_later(mounted: ProdigiaSandbox, files: dict[str, Path]) -> None:
    mounted.configure(maintenance=True)
    result = einvoice(mounted, "soriana", str(files["datos"]))
    assert result.returncode == 75
    assert b"maintenance" in result.stderr


def test_rejected_data_exits_2_with_the_service_message(mounted: ProdigiaSandbox, tmp_path: Path) -> None:
    datos = tmp_path / "malos.txt"
    datos.write_text("Soriana\nsin separador\n")
    result = einvoice(mounted, "soriana", str(datos))
    assert result.returncode == 2
    assert "procesamiento de su archivo" in result.stderr.decode()
