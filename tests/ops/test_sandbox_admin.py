"""The sandbox's admin endpoints are open on loopback only: beyond it they need a token, or it does not start.

Every case goes over real HTTP, against the app in a server thread and against `einvoice sandbox`
started as an operator (or the dev compose profile) starts it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sandbox.app import AdminTokenMissing, build_app, check_admin_exposure, is_loopback
from sandbox.server import ServerThread, free_port
from tests.harness import ROOT
from tests.ops.procs import Service

TOKEN = "t0ken-for-tests"
ADMIN_PATHS = [
    ("GET", "/mysuite/_admin/counters"),
    ("GET", "/mysuite/_admin/config"),
    ("POST", "/mysuite/_admin/reset"),
    ("GET", "/hacienda/_admin/counters"),
    ("POST", "/hacienda/_admin/expire-tokens"),
    ("GET", "/mseller/_admin/counters"),
    ("POST", "/mseller/_admin/reset"),
    ("GET", "/prodigia/_admin/config"),
    ("POST", "/prodigia/_admin/reset"),
    # The MYSuite simulator answers paths in any case, as IIS does: so does the guard.
    ("GET", "/mysuite/_ADMIN/counters"),
]
WSDL = "/mysuite/async/factwsfront.asmx?WSDL"


@pytest.fixture(scope="module")
def guarded() -> Iterator[str]:
    with ServerThread(build_app(admin_token=TOKEN)) as server:
        yield server.url


@pytest.mark.parametrize(("method", "path"), ADMIN_PATHS)
def test_admin_paths_refuse_a_missing_or_wrong_token(guarded: str, method: str, path: str) -> None:
    for headers in ({}, {"X-Admin-Token": "wrong"}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        response = httpx.request(method, guarded + path, headers=headers, timeout=10)
        assert response.status_code == 401, (headers, response.text)
        assert "admin token required" in response.text


def test_admin_paths_accept_the_token_as_header_or_bearer(guarded: str) -> None:
    for headers in ({"X-Admin-Token": TOKEN}, {"Authorization": f"Bearer {TOKEN}"}):
        response = httpx.get(f"{guarded}/mysuite/_admin/counters", headers=headers, timeout=10)
        assert response.status_code == 200, response.text
        assert "async" in response.json()
        response = httpx.post(f"{guarded}/hacienda/_admin/config", json={}, headers=headers, timeout=10)
        assert response.status_code == 200, response.text


def test_provider_endpoints_need_no_admin_token(guarded: str) -> None:
    response = httpx.get(guarded + WSDL, timeout=10)
    assert response.status_code == 200 and b"definitions" in response.content


def test_without_a_token_admin_stays_open_on_loopback() -> None:
    with ServerThread(build_app()) as server:
        assert httpx.get(f"{server.url}/mysuite/_admin/counters", timeout=10).status_code == 200
        assert httpx.post(f"{server.url}/hacienda/_admin/reset", timeout=10).status_code == 200


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.53", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.10", False),
        ("sandbox", False),
    ],
)
def test_loopback_is_told_from_everything_else(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
    if loopback:
        check_admin_exposure(host, None)
    else:
        with pytest.raises(AdminTokenMissing, match="SANDBOX_ADMIN_TOKEN"):
            check_admin_exposure(host, None)
        with pytest.raises(AdminTokenMissing):
            check_admin_exposure(host, "")
        check_admin_exposure(host, TOKEN)


def _sandbox_args(port: int) -> list[str]:
    return [sys.executable, "-m", "worker.cli", "sandbox", "--host", "0.0.0.0", "--port", str(port)]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "SANDBOX_ADMIN_TOKEN"}
    env.update(extra)
    return env


def test_the_command_refuses_to_listen_beyond_loopback_without_a_token() -> None:
    for env in (_env(), _env(SANDBOX_ADMIN_TOKEN="")):
        result = subprocess.run(
            _sandbox_args(free_port()), env=env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
        )
        assert result.returncode != 0
        assert "beyond loopback" in result.stderr and "SANDBOX_ADMIN_TOKEN" in result.stderr, result.stderr


def test_the_command_beyond_loopback_requires_the_token_from_the_environment(tmp_path: Path) -> None:
    port = free_port()
    service = Service(_sandbox_args(port), _env(SANDBOX_ADMIN_TOKEN=TOKEN), tmp_path / "sandbox.log", port)
    try:
        service.start(WSDL)
        url = f"{service.url}/mysuite/_admin/config"
        assert httpx.get(url, timeout=10).status_code == 401
        assert httpx.get(url, headers={"X-Admin-Token": "nope"}, timeout=10).status_code == 401
        assert httpx.get(url, headers={"X-Admin-Token": TOKEN}, timeout=10).status_code == 200
        assert httpx.get(service.url + WSDL, timeout=10).status_code == 200
    finally:
        service.stop()
