"""The production stack cannot fake success: compose itself refuses it when a setting is missing.

`docker compose config` (or Debian's `docker-compose`, which `.ci/run` installs when the compose
plugin is absent) interpolates the file as `up` would, without an engine. Without a provider's URL
or credentials, or without a password, it fails and names the variable; with everything set it
succeeds and nothing points at the sandbox, which exists only in the `dev` profile.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import redis as redis_client
import yaml
from kombu.connection import Connection

from providers.hacienda.settings import HaciendaSettings
from sandbox.server import free_port
from tests.harness import ROOT, wait_until
from tests.ops.test_deploy import COMPOSE, DEV_ENV, SERVICES, environment, read_env_file
from worker.settings import Settings

PROVIDER_URLS = [
    "MYSUITE_ASYNC_URL",
    "MYSUITE_SYNC_URL",
    "HACIENDA_API_URL",
    "HACIENDA_IDP_URL",
    "MSELLER_URL",
    "PRODIGIA_ADDENDAS_URL",
]
CREDENTIALS = [
    "MYSUITE_REQUESTOR",
    "MYSUITE_USER",
    "HACIENDA_USERNAME",
    "HACIENDA_PASSWORD",
    "MSELLER_EMAIL",
    "MSELLER_PASSWORD",
    "MSELLER_API_KEY",
    "PRODIGIA_CONTRATO",
    "PRODIGIA_USUARIO",
    "PRODIGIA_PASSWD",
]
PASSWORDS = [
    "POSTGRES_PASSWORD",
    "REDIS_PASSWORD",
    "FLOWER_BASIC_AUTH",
    "METRICS_PASSWORD",
    "GRAFANA_ADMIN_PASSWORD",
    "EINVOICE_API_SECRET",
]
# What a production .env might hold: real-looking hosts, nothing on the sandbox.
PRODUCTION = {
    **{name: f"https://provider.example/{name.lower()}" for name in PROVIDER_URLS},
    **{name: f"secret-{name.lower()}" for name in CREDENTIALS + PASSWORDS},
    "MYSUITE_ENTITY": "JES900109Q90",
    "MYSUITE_USERNAME": "MX.JES900109Q90.erp",
    "MYSUITE_ENV": "production",
    "HACIENDA_CLIENT_ID": "api-prod",
    "MSELLER_ENV": "eCF",
}
_REFERENCE = re.compile(r"\$\{(\w+)(:?[-?])?([^}]*)\}")
_SECRET = re.compile(r"PASSWORD|PASSWD|TOKEN|SECRET|API_KEY|BASIC_AUTH|REQUESTOR|^MYSUITE_USER$")


def compose_program() -> list[str]:
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True, check=False).returncode == 0:
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    if legacy:
        return [legacy]
    message = "neither `docker compose` nor `docker-compose` is installed (.ci/run installs docker-compose)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def compose_file(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The compose command for docker-compose.yml, project directory the repository root.

    Debian's docker-compose (1.x) predates the top-level `name`, the only part of the file it does
    not know; it is given the file without that line. The compose plugin reads the file itself.
    """
    program = compose_program()
    if len(program) == 2:
        return [*program, "-f", str(ROOT / "docker-compose.yml"), "--project-directory", str(ROOT)]
    copy = tmp_path_factory.mktemp("compose") / "docker-compose.yml"
    copy.write_text(re.sub(r"(?m)^name: .*\n", "", (ROOT / "docker-compose.yml").read_text()))
    return [*program, "-f", str(copy), "--project-directory", str(ROOT)]


def start_config(command: list[str], folder: Path, values: dict[str, str], *extra: str) -> subprocess.Popen[str]:
    """`compose config` with exactly `values` as its environment: nothing inherited, no .env read."""
    folder.mkdir(parents=True, exist_ok=True)
    env_file = folder / "compose.env"
    env_file.write_text("".join(f"{name}={value}\n" for name, value in values.items()))
    env = {"PATH": os.environ["PATH"], "HOME": str(folder), "DOCKER_CONFIG": str(folder / "docker")}
    return subprocess.Popen(
        [*command, "--env-file", str(env_file), *extra, "config"],
        env=env,
        cwd=folder,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def config(command: list[str], folder: Path, values: dict[str, str], *extra: str) -> tuple[int, str, str]:
    proc = start_config(command, folder, values, *extra)
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out, err


# Every provider URL, and a sample of the rest: that every other reference is `:?` as well is read
# from the file below (each compose run costs a second or more of start-up).
MISSING_SETTINGS = [*PROVIDER_URLS, "MYSUITE_ENV"]
MISSING_SECRETS = ["HACIENDA_PASSWORD", "MSELLER_API_KEY", "POSTGRES_PASSWORD", "REDIS_PASSWORD"]


@pytest.fixture(scope="module")
def without(compose_file: list[str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[int, str]]:
    """`compose config` with one production setting left out (a secret: set but empty), per setting.

    The runs are started together: each is a fresh interpreter that spends its time starting up.
    """
    folder = tmp_path_factory.mktemp("without")
    running = {}
    for missing in MISSING_SETTINGS + MISSING_SECRETS:
        values = {name: value for name, value in PRODUCTION.items() if name != missing}
        if missing in MISSING_SECRETS:
            # Empty is as missing as absent (`:?`), so `NAME=` in an .env file is caught too.
            values[missing] = ""
        running[missing] = start_config(compose_file, folder / missing, values)
    results = {}
    for missing, proc in running.items():
        _, err = proc.communicate(timeout=300)
        results[missing] = (proc.returncode, err)
    return results


def test_production_settings_give_a_stack_with_nothing_on_the_sandbox(compose_file: list[str], tmp_path: Path) -> None:
    returncode, out, err = config(compose_file, tmp_path, PRODUCTION)
    assert returncode == 0, err
    services: dict[str, Any] = yaml.safe_load(out)["services"]
    for name, service in services.items():
        if "dev" in (service.get("profiles") or []):
            continue
        assert "sandbox" not in (service.get("depends_on") or {}), name
        for variable, setting in (service.get("environment") or {}).items():
            assert "sandbox" not in str(setting), (name, variable, setting)
    env = services["worker-poll"]["environment"]
    assert env["MYSUITE_ASYNC_URL"] == PRODUCTION["MYSUITE_ASYNC_URL"]
    assert env["CELERY_BROKER_URL"] == f"redis://:{PRODUCTION['REDIS_PASSWORD']}@redis:6379/0"


@pytest.mark.parametrize("missing", MISSING_SETTINGS)
def test_a_missing_provider_setting_stops_compose(without: dict[str, tuple[int, str]], missing: str) -> None:
    returncode, err = without[missing]
    assert returncode != 0
    assert f"set {missing}" in err, err


@pytest.mark.parametrize("missing", MISSING_SECRETS)
def test_a_missing_credential_or_password_stops_compose(without: dict[str, tuple[int, str]], missing: str) -> None:
    returncode, err = without[missing]
    assert returncode != 0
    assert f"set {missing}" in err, err


def test_the_dev_env_file_points_the_stack_at_the_sandbox(compose_file: list[str], tmp_path: Path) -> None:
    returncode, out, err = config(
        compose_file, tmp_path, read_env_file(ROOT / "deploy" / "dev.env"), "--profile", "dev"
    )
    assert returncode == 0, err
    services: dict[str, Any] = yaml.safe_load(out)["services"]
    assert "sandbox" in services
    assert services["sandbox"]["environment"]["SANDBOX_ADMIN_TOKEN"] == DEV_ENV["SANDBOX_ADMIN_TOKEN"]
    env = services["worker-submit"]["environment"]
    for name in PROVIDER_URLS:
        assert env[name].startswith("http://sandbox:8080/"), name


def test_every_setting_the_file_requires_is_in_the_dev_env_file() -> None:
    """deploy/dev.env is the documented way to a working laptop stack: nothing may be left out."""
    required = {
        m.group(1) for m in _REFERENCE.finditer((ROOT / "docker-compose.yml").read_text()) if m.group(2) == ":?"
    }
    assert set(PRODUCTION) == required
    assert required <= set(DEV_ENV)


def test_the_sandbox_is_only_in_the_dev_profile() -> None:
    assert SERVICES["sandbox"]["profiles"] == ["dev"]
    for name, service in SERVICES.items():
        if name != "sandbox":
            assert "profiles" not in service, name
            assert "sandbox" not in (service.get("depends_on") or {}), name


def test_no_setting_has_a_default_password_or_a_default_provider() -> None:
    """Every reference is `${NAME:?…}`, but the sandbox token, whose absence the sandbox refuses itself."""
    text = (ROOT / "docker-compose.yml").read_text()
    references = list(_REFERENCE.finditer(text))
    assert references
    for match in references:
        name, kind, default = match.groups()
        if name == "SANDBOX_ADMIN_TOKEN":
            assert (kind, default) == (":-", ""), match.group(0)
        else:
            assert kind == ":?", match.group(0)
    # No literal secret in any service's environment: each is a reference (or built from one).
    for name, service in SERVICES.items():
        for variable, setting in (service.get("environment") or {}).items():
            if _SECRET.search(variable):
                assert "${" in str(setting) or str(setting).startswith("$$"), (name, variable, setting)
    assert "change-me" not in text


def test_redis_requires_a_password_and_every_url_carries_it() -> None:
    redis = SERVICES["redis"]
    assert "--requirepass" in " ".join(redis["command"])
    assert redis["environment"]["REDIS_PASSWORD"].startswith("${REDIS_PASSWORD:?")
    assert redis["environment"]["REDISCLI_AUTH"].startswith("${REDIS_PASSWORD:?")
    urls = [
        str(setting)
        for service in SERVICES.values()
        for setting in (service.get("environment") or {}).values()
        if str(setting).startswith("redis://")
    ]
    assert len(urls) >= 2
    for url in urls:
        assert url.startswith("redis://:${REDIS_PASSWORD:?"), url


def test_prometheus_cannot_be_stopped_or_reloaded_over_http() -> None:
    command = " ".join(SERVICES["prometheus"]["command"])
    assert "/bin/prometheus" in command
    assert "--web.enable-lifecycle" not in command and "--web.enable-admin-api" not in command
    assert COMPOSE["services"]["prometheus"]["environment"]["METRICS_PASSWORD"].startswith("${METRICS_PASSWORD:?")


def test_the_password_carrying_urls_reach_a_redis_that_requires_it(tmp_path: Path) -> None:
    """The broker and the Hacienda token cache connect with the compose URLs, and not without the password."""
    port = free_port()
    password = DEV_ENV["REDIS_PASSWORD"]
    args = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    server = subprocess.Popen(
        [*args, "--dir", str(tmp_path), "--requirepass", password],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        local = {k: v.replace("@redis:6379", f"@127.0.0.1:{port}") for k, v in environment("worker-poll").items()}
        broker = Settings.from_env(local).broker_url
        cache = HaciendaSettings.from_env(local).redis_url
        assert broker.startswith(f"redis://:{password}@") and cache and cache.startswith(f"redis://:{password}@")

        def answers() -> bool:
            try:
                return bool(redis_client.Redis.from_url(cache).ping())
            except redis_client.ConnectionError:
                return False

        wait_until(answers, timeout=10, what="the password-protected Redis")
        with Connection(broker, connect_timeout=5) as connection:
            connection.ensure_connection(max_retries=1)
        anonymous = redis_client.Redis(host="127.0.0.1", port=port)
        with pytest.raises(redis_client.AuthenticationError):
            anonymous.ping()
    finally:
        server.terminate()
        server.wait(timeout=10)
