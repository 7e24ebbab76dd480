"""The Prometheus files are proved on Prometheus itself, not only parsed.

`promtool` checks the configuration and the rules and runs `alerts.test.yml`, which must hold a
firing case for every alert. Then a real `prometheus` scrapes `einvoice metrics` of a real stack
(workers, PostgreSQL, Redis, the sandbox over HTTP) through the deployed scrape job, and the
provider-down alert of `alerts.yml` fires during a sandbox outage and resolves after it.

Debian's `prometheus` package brings both programs; `.ci/run` installs it. Without them these
tests are skipped on a developer's machine and fail in CI (`CI=true`).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from sandbox.server import free_port
from tests.e2e.stack import Stack
from tests.harness import ROOT, wait_until
from tests.ops.procs import AUTH, Service, metrics_service, scrape, value
from worker.samples import native_xml

PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
ALERTS = PROMETHEUS_DIR / "alerts.yml"
ALERT_TESTS = PROMETHEUS_DIR / "alerts.test.yml"


def program(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        message = f"{name} is missing: apt-get install prometheus (.ci/run does)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="module")
def promtool() -> str:
    return program("promtool")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)


def alert_names() -> set[str]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return {rule["alert"] for group in groups for rule in group["rules"] if "alert" in rule}


def test_promtool_accepts_the_config_and_its_rule_files(promtool: str) -> None:
    result = run(promtool, "check", "config", str(PROMETHEUS_DIR / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout


def test_promtool_accepts_the_rules(promtool: str) -> None:
    result = run(promtool, "check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(alert_names())} rules found" in result.stdout


def test_every_alert_has_a_case_that_fires_and_one_that_does_not() -> None:
    cases = yaml.safe_load(ALERT_TESTS.read_text())
    assert cases["rule_files"] == ["alerts.yml"]
    fired: set[str] = set()
    quiet: set[str] = set()
    for case in cases["tests"]:
        for check in case["alert_rule_test"]:
            (fired if check["exp_alerts"] else quiet).add(check["alertname"])
    names = alert_names()
    assert names - fired == set(), "alerts without a firing case"
    assert names - quiet == set(), "alerts without a case where they stay quiet"
    assert fired <= names and quiet <= names, "cases for alerts that do not exist"


def test_the_alert_cases_pass(promtool: str) -> None:
    result = run(promtool, "test", "rules", str(ALERT_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_the_alert_cases_catch_a_changed_rule(promtool: str, tmp_path: Path) -> None:
    """The cases pin the rules: a provider-down alert that waits 10 minutes instead of 5 fails them."""
    text = ALERTS.read_text()
    changed = re.sub(r"(expr: einvoice_provider_up == 0\n\s+for: )5m", r"\g<1>10m", text)
    assert changed != text
    (tmp_path / "alerts.yml").write_text(changed)
    shutil.copy(ALERT_TESTS, tmp_path / "alerts.test.yml")
    result = run(promtool, "test", "rules", str(tmp_path / "alerts.test.yml"))
    assert result.returncode != 0
    assert "EinvoiceProviderDown" in result.stdout + result.stderr


# ------------------------------------------------------------------------- a real Prometheus, live


def live_config(folder: Path, metrics_port: int, prometheus_port: int) -> Path:
    """deploy/prometheus with second-scale intervals, the local metrics service and `for:` of 2 s.

    The scrape job (path, basic auth, job name), every expression, label and annotation stay the
    deployed ones; only durations shrink so that an outage shows within seconds.
    """
    password = folder / "metrics_password"
    password.write_text(AUTH[1])
    alerts = folder / "alerts.yml"
    alerts.write_text(re.sub(r"(?m)^(\s+for: ).*$", r"\g<1>2s", ALERTS.read_text()))
    config: dict[str, Any] = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(alerts)]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    job = jobs["einvoice"]
    job["scrape_timeout"] = "1s"
    job["basic_auth"] = {"username": AUTH[0], "password_file": str(password)}
    job["static_configs"] = [{"targets": [f"127.0.0.1:{metrics_port}"]}]
    jobs["prometheus"]["static_configs"] = [{"targets": [f"127.0.0.1:{prometheus_port}"]}]
    path = folder / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def prometheus_service(folder: Path, metrics_port: int) -> Service:
    port = free_port()
    config = live_config(folder, metrics_port, port)
    args = [
        program("prometheus"),
        f"--config.file={config}",
        f"--storage.tsdb.path={folder / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    return Service(args, dict(os.environ), folder / "prometheus.log", port)


def provider_down(prometheus: str) -> list[dict[str, Any]]:
    """The EinvoiceProviderDown alerts Prometheus holds now (pending or firing)."""
    alerts = httpx.get(f"{prometheus}/api/v1/alerts", timeout=5).json()["data"]["alerts"]
    return [a for a in alerts if a["labels"]["alertname"] == "EinvoiceProviderDown"]


def query(prometheus: str, expr: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=5).json()
    return list(response["data"]["result"])


@pytest.fixture
def stack(pg_stack: Stack) -> Iterator[Stack]:
    pg_stack.admin("config", {"seed": 7, "failure_rate": 0.0})
    # The default location (under EINVOICE_HOME) is what the workers and the metrics service share.
    pg_stack.env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    yield pg_stack
    pg_stack.admin("config", {"outage": False})


@pytest.mark.e2e
def test_provider_down_fires_on_a_real_prometheus_during_an_outage_and_resolves(stack: Stack, tmp_path: Path) -> None:
    program("prometheus")
    with ExitStack() as running:
        worker = stack.worker(pool="prefork", concurrency=2).start()
        running.callback(worker.stop)
        metrics = metrics_service(stack.env, tmp_path / "metrics.log")
        running.callback(metrics.stop)
        metrics.start("/healthz")
        prometheus = prometheus_service(tmp_path, metrics.port)
        running.callback(prometheus.stop)
        prometheus.start("/-/ready")
        wait_until(lambda: " ready." in worker.log_text(), timeout=30, what="the worker to be ready")

        # A first invoice: MYSuite answers, Prometheus scrapes it as up and nothing fires.
        first = tmp_path / "first.xml"
        first.write_bytes(native_xml("PROM-1", 9000))
        stack.cli("submit", str(first), "--internal-id", "PROM-1")
        wait_until(lambda: stack.store.jobs.resolve("PROM-1").state == "retrieved", timeout=30, what="PROM-1 retrieved")
        up = 'einvoice_provider_up{job="einvoice",provider="mysuite"}'
        wait_until(
            lambda: [r["value"][1] for r in query(prometheus.url, up)] == ["1"],
            timeout=15,
            what="Prometheus to scrape mysuite as up",
        )
        assert provider_down(prometheus.url) == []

        # The outage: the next submit gets no answer, the metric drops, the deployed alert fires.
        stack.admin("config", {"outage": True})
        second = tmp_path / "second.xml"
        second.write_bytes(native_xml("PROM-2", 9000))
        stack.cli("submit", str(second), "--internal-id", "PROM-2")
        wait_until(
            lambda: [a["state"] for a in provider_down(prometheus.url)] == ["firing"],
            timeout=30,
            what="EinvoiceProviderDown firing",
        )
        (alert,) = provider_down(prometheus.url)
        assert alert["labels"]["provider"] == "mysuite" and alert["labels"]["severity"] == "page"
        assert alert["annotations"]["summary"] == "mysuite has not answered usefully for 5 minutes"
        assert value(scrape(metrics.url), "einvoice_provider_up", provider="mysuite") == 0

        # The provider is back: the waiting invoice goes through and the alert resolves.
        stack.admin("config", {"outage": False})
        wait_until(lambda: stack.store.jobs.resolve("PROM-2").state == "retrieved", timeout=30, what="PROM-2 retrieved")
        wait_until(lambda: provider_down(prometheus.url) == [], timeout=15, what="EinvoiceProviderDown resolved")
        assert [r["value"][1] for r in query(prometheus.url, up)] == ["1"]
