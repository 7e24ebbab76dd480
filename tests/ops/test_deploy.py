"""The deployment files hold together: there is no Docker engine here, so every name they use is checked.

Compose commands are parsed by the real command-line parsers (click for `einvoice` and `celery`,
tornado's option table for Flower), environment names are held against what the code reads, and
every metric an alert or a dashboard panel uses must be one a real scrape produces.
"""

from __future__ import annotations

import json
import re
import subprocess
from datetime import timedelta
from pathlib import Path
from typing import Any

import click
import pytest
import sqlalchemy as sa
import yaml

from models import Job, Store, make_engine, utcnow
from tests.harness import ROOT
from tests.ops.test_metrics import collect, run
from worker.metrics import DatabaseCollector, ProcessFilesCollector

OUR_IMAGE = "einvoice-worker:local"
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
OURS = {name: svc for name, svc in SERVICES.items() if svc.get("image") == OUR_IMAGE}
OPERATIONS = (ROOT / "docs" / "OPERATIONS.md").read_text()
SOURCES = "\n".join(
    p.read_text()
    for folder in ("worker", "tasks", "models", "providers", "sandbox")
    for p in (ROOT / folder).rglob("*.py")
)
_INTERPOLATION = re.compile(r"\$\{(\w+)(?:(:[-?])([^}]*))?\}")


def read_env_file(path: Path) -> dict[str, str]:
    """An env file as compose reads it: NAME=value lines, comments and blank lines skipped."""
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if line.strip() and not line.startswith("#"))
    return {name.strip(): value.strip() for name, value in pairs}


DEV_ENV = read_env_file(ROOT / "deploy" / "dev.env")


def interpolate(text: str, values: dict[str, str] | None = None) -> str:
    """Compose's `${NAME}`, `${NAME:-default}` and `${NAME:?message}`, by default with deploy/dev.env."""
    values = DEV_ENV if values is None else values

    def one(match: re.Match[str]) -> str:
        name, kind, rest = match.groups()
        if values.get(name):
            return values[name]
        if kind == ":?":
            raise KeyError(f"{name}: {rest}")
        return rest or ""

    return _INTERPOLATION.sub(one, text).replace("$$", "$")


def environment(service: str) -> dict[str, str]:
    return {k: interpolate(str(v)) for k, v in (SERVICES[service].get("environment") or {}).items()}


def parse_celery(args: list[str]) -> tuple[str, dict[str, Any]]:
    """Parse `celery -A worker.app SUB ...` with celery's own click commands; unknown options raise."""
    from celery.bin.base import CLIContext
    from celery.bin.celery import celery

    from worker.app import app

    assert args[:2] == ["-A", "worker.app"], args
    name, *rest = args[2:]
    ctx = click.Context(celery, info_name="celery", obj=CLIContext(app=app, no_color=True, workdir=None, quiet=True))
    command = celery.get_command(ctx, name)
    assert command is not None, name
    return name, command.make_context(name, list(rest), parent=ctx).params


def flower_option_names() -> set[str]:
    import flower.options  # noqa: F401  (defines Flower's options in tornado's table)
    from tornado.options import options

    return set(options.as_dict())


def check_command(service: str, command: list[str]) -> None:
    if command[0] == "einvoice":
        from worker.cli import main

        pyproject = (ROOT / "pyproject.toml").read_text()
        assert 'einvoice = "worker.cli:main"' in pyproject
        sub = main.commands.get(command[1])
        assert sub is not None, f"{service}: einvoice has no command {command[1]}"
        sub.make_context(command[1], command[2:])  # raises on unknown options
    elif command[0] == "celery":
        name, params = parse_celery(command[1:])
        assert name in ("worker", "beat", "flower", "inspect"), name
        if name == "flower":
            for arg in params["tornado_argv"]:
                option = arg.lstrip("-").split("=", 1)[0].replace("-", "_")
                assert option in flower_option_names(), f"{service}: flower has no option {option}"
    elif command[0] == "alembic":
        assert command[1:] == ["upgrade", "head"]
        ini = (ROOT / "alembic.ini").read_text()
        assert "script_location = %(here)s/migrations" in ini
        assert (ROOT / "migrations" / "env.py").exists() and list((ROOT / "migrations" / "versions").glob("*.py"))
    else:
        raise AssertionError(f"{service}: unknown program {command[0]}")


def test_every_service_is_there_and_ours_share_one_image() -> None:
    assert set(SERVICES) >= {
        "postgres",
        "redis",
        "migrate",
        "worker-submit",
        "worker-poll",
        "beat",
        "flower",
        "metrics",
        "prometheus",
        "grafana",
        "sandbox",
        "api",
    }
    assert set(OURS) == {"migrate", "worker-submit", "worker-poll", "beat", "api", "flower", "metrics", "sandbox"}
    assert all(svc.get("build") == "." for svc in OURS.values())


@pytest.mark.parametrize("service", sorted(OURS))
def test_our_commands_exist_with_their_options(service: str) -> None:
    command = [str(part) for part in OURS[service]["command"]]
    if command[:2] == ["einvoice", "api"]:
        from worker.cli import main

        if "api" not in main.commands:
            pytest.skip("this build of `einvoice` has no `api` command yet")
    check_command(service, command)


def test_healthcheck_commands_of_our_services_exist() -> None:
    for name, svc in OURS.items():
        test = svc.get("healthcheck", {}).get("test")
        if not test:
            continue
        if test[0] == "CMD-SHELL":
            words = interpolate(test[1]).replace("$HOSTNAME", "host").split()
            check_command(name, words)
        else:
            assert test[1] == "python", name
            compile(test[-1], f"{name} healthcheck", "exec")


def test_queues_go_to_the_right_pools() -> None:
    from worker.app import app

    declared = {q.name for q in app.conf.task_queues}
    _, submit = parse_celery([str(p) for p in SERVICES["worker-submit"]["command"][1:]])
    _, poll = parse_celery([str(p) for p in SERVICES["worker-poll"]["command"][1:]])
    assert (submit["queues"], submit["pool"].__module__, submit["concurrency"]) == (
        ["submit"],
        "celery.concurrency.prefork",
        2,
    )
    assert (poll["queues"], poll["pool"].__module__, poll["concurrency"]) == (["poll"], "celery.concurrency.thread", 32)
    assert set(submit["queues"]) | set(poll["queues"]) == declared  # every queue has consumers
    assert submit["hostname"] != poll["hostname"]


def test_dependencies_exist_and_wait_for_health() -> None:
    for name, svc in SERVICES.items():
        for target, spec in (svc.get("depends_on") or {}).items():
            assert target in SERVICES, f"{name} depends on unknown {target}"
            condition = spec["condition"]
            if condition == "service_healthy":
                assert SERVICES[target].get("healthcheck", {}).get("test"), f"{target} has no healthcheck"
            else:
                assert condition == "service_completed_successfully" and target == "migrate", (name, target)
        if name != "migrate":
            assert svc.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
    assert SERVICES["migrate"]["restart"] == "no"
    for name in ("worker-submit", "worker-poll", "beat", "metrics", "flower"):
        assert SERVICES[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


def test_mounted_files_exist() -> None:
    for name, svc in SERVICES.items():
        for volume in svc.get("volumes") or []:
            source = str(volume).split(":", 1)[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in COMPOSE["volumes"], f"{name} uses undeclared volume {source}"


def test_environment_names_are_the_ones_the_code_reads() -> None:
    from pydantic_settings import BaseSettings

    from tasks.policy import Policy
    from worker import settings

    flower_options = flower_option_names()
    policy_names = {"EINVOICE_" + name.upper() for name in Policy.__dataclass_fields__}
    # Settings read through typed models: the variable is the model's prefix plus the field name.
    typed = [model for model in vars(settings).values() if isinstance(model, type) and issubclass(model, BaseSettings)]
    policy_names |= {
        model.model_config.get("env_prefix", "") + name.upper() for model in typed for name in model.model_fields
    }
    for name in OURS:
        for variable in environment(name):
            if variable.startswith("FLOWER_"):
                assert variable[len("FLOWER_") :].lower() in flower_options, variable
            elif variable not in policy_names:
                assert f'"{variable}"' in SOURCES, f"{name}: nothing reads {variable}"
    for name in ("worker-submit", "worker-poll", "beat", "metrics"):
        assert set(environment(name)) >= {
            "DATABASE_URL",
            "CELERY_BROKER_URL",
            "EINVOICE_HOME",
            "ARCHIVE_DIR",
            "METRICS_PORT",
            "MYSUITE_ASYNC_URL",
            "MYSUITE_SYNC_URL",
            "MYSUITE_REQUESTOR",
            "MYSUITE_USER",
            "MYSUITE_ENTITY",
            "MYSUITE_USERNAME",
            "MYSUITE_ENV",
        }
    assert set(environment("migrate")) >= {"DATABASE_URL"}


def test_the_settings_accept_the_compose_environment() -> None:
    from providers.hacienda.settings import HaciendaSettings
    from providers.mseller.settings import MSellerSettings
    from providers.mysuite.config import MySuiteConfig
    from providers.prodigia.config import ProdigiaConfig
    from worker.metrics import BasicAuth
    from worker.settings import Settings

    env = environment("worker-poll")
    settings = Settings.from_env(env)
    assert settings.broker_url == f"redis://:{DEV_ENV['REDIS_PASSWORD']}@redis:6379/0" and not settings.embedded
    assert settings.database_url.startswith("postgresql+psycopg://einvoice:")
    assert str(settings.archive_dir).startswith(env["EINVOICE_HOME"])
    assert MySuiteConfig.from_environ(env).async_url.startswith("http://sandbox:8080/mysuite/async/")
    hacienda = HaciendaSettings.from_env(env)
    assert hacienda.api_url.startswith("http://sandbox:8080/hacienda/")
    assert hacienda.redis_url == f"redis://:{DEV_ENV['REDIS_PASSWORD']}@redis:6379/1"
    assert MSellerSettings.from_env(env).url == DEV_ENV["MSELLER_URL"] == "http://sandbox:8080/mseller"
    assert ProdigiaConfig.from_environ(env).url == DEV_ENV["PRODIGIA_ADDENDAS_URL"]
    assert DEV_ENV["PRODIGIA_ADDENDAS_URL"].startswith("http://sandbox:8080/prodigia/")
    # The metrics service listens where METRICS_PORT says and Prometheus looks.
    metrics_env = environment("metrics")
    command = [str(p) for p in SERVICES["metrics"]["command"]]
    assert command[command.index("--port") + 1] == metrics_env["METRICS_PORT"] == "9808"
    auth = BasicAuth.from_env(metrics_env)
    assert auth is not None and auth.user == "prometheus"
    assert SERVICES["flower"]["environment"]["FLOWER_BASIC_AUTH"]


def test_the_dockerfile_builds_from_files_that_exist() -> None:
    text = (ROOT / "Dockerfile").read_text()
    for line in text.splitlines():
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), source
    assert re.search(r"^USER (?!root)\w+", text, re.M)
    for needed in ("alembic.ini", "migrations", "worker", "tasks", "models", "providers", "sandbox"):
        assert f"COPY {needed}" in text


# ---------------------------------------------------------------------------- Prometheus, Grafana


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """Sample names of a real scrape in which every metric has a value."""
    folder = tmp_path_factory.mktemp("exported")
    run(
        """
        from datetime import datetime, UTC
        from models import TransitionInfo
        from worker import metrics
        metrics.observe_transition(TransitionInfo(job_id='j', kind='invoice', provider='mysuite', from_state='submitted', to_state='issued', created_at=datetime.now(UTC), polls=2))
        metrics.observe_request('mysuite', 'verify', 'ok', 0.1)
        """,
        {"PROMETHEUS_MULTIPROC_DIR": str(folder / "m")},
    )
    from worker.schema import upgrade

    url = f"sqlite:///{folder / 'db.sqlite'}"
    upgrade(url)
    engine = make_engine(url)
    store = Store(engine)
    store.jobs.create_job(
        provider="mysuite",
        entity="E",
        internal_id="X",
        payload=b"<x/>",
        actor="test",
        deadline=timedelta(hours=1),
        dispatch_grace=timedelta(seconds=1),
    )
    with store.db.session() as session:
        session.execute(sa.update(Job).values(state="retrieved", links_expires_at=utcnow(), next_attempt_at=utcnow()))
    names = {name for name, _ in collect(ProcessFilesCollector(folder / "m"), DatabaseCollector(store, ["mysuite"]))}
    engine.dispose()
    return names


def metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\b(einvoice_[a-z_]+)\b", expr))


def balanced(expr: str) -> bool:
    depth = 0
    for ch in expr:
        depth += {"(": 1, ")": -1, "{": 1, "}": -1}.get(ch, 0)
        if depth < 0:
            return False
    return depth == 0


def anchors(markdown: str) -> set[str]:
    return {
        re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in markdown.splitlines()
        if line.startswith("#")
    }


def test_every_metric_of_the_design_is_exported(exported: set[str]) -> None:
    for name in (
        "einvoice_transitions_total",
        "einvoice_provider_requests_total",
        "einvoice_provider_request_duration_seconds_bucket",
        "einvoice_jobs",
        "einvoice_oldest_due_seconds",
        "einvoice_time_to_issue_seconds_bucket",
        "einvoice_polls_per_document_bucket",
        "einvoice_provider_up",
        "einvoice_oldest_queued_seconds",
        "einvoice_links_expiry_seconds",
    ):
        assert name in exported


def test_prometheus_scrapes_the_metrics_service() -> None:
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    mounts = {
        str(v).split(":")[1]: ROOT / str(v).split(":")[0]
        for v in SERVICES["prometheus"]["volumes"]
        if str(v).startswith(".")
    }
    config_dir = next(str(Path(target).parent) for target, source in mounts.items() if source.name == "prometheus.yml")
    for rule_file in config["rule_files"]:
        # Relative names are read beside the config file, in the container as in a checkout.
        assert mounts[str(Path(config_dir, rule_file))].exists()
        assert (ROOT / "deploy" / "prometheus" / rule_file).exists()
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "einvoice")
    assert job["static_configs"][0]["targets"] == [f"metrics:{environment('metrics')['METRICS_PORT']}"]
    assert job["metrics_path"] == "/metrics"
    assert job["basic_auth"]["username"] == environment("metrics")["METRICS_BASIC_AUTH"].split(":")[0]
    # The password file is the one Prometheus' entrypoint writes from METRICS_PASSWORD.
    assert job["basic_auth"]["password_file"] in " ".join(SERVICES["prometheus"]["command"])
    assert SERVICES["prometheus"]["environment"]["METRICS_PASSWORD"].startswith("${METRICS_PASSWORD:?")
    assert environment("metrics")["METRICS_BASIC_AUTH"] == f"prometheus:{DEV_ENV['METRICS_PASSWORD']}"


def test_alert_rules_use_real_metrics_and_are_documented(exported: set[str]) -> None:
    groups = yaml.safe_load((ROOT / "deploy/prometheus/alerts.yml").read_text())["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    names = {rule["alert"] for rule in rules}
    assert names >= {
        "EinvoiceProviderDown",
        "EinvoiceDueWorkPilingUp",
        "EinvoiceFailureRateHigh",
        "EinvoiceLinksExpiringUnrefreshed",
        "EinvoiceOldestQueuedTooOld",
    }
    documented = anchors(OPERATIONS)
    for rule in rules:
        expr = str(rule["expr"])
        assert balanced(expr), rule["alert"]
        assert metric_names(expr) <= exported, (rule["alert"], metric_names(expr) - exported)
        assert rule["labels"]["severity"] in ("page", "warning")
        assert rule["annotations"]["summary"]
        page, _, anchor = rule["annotations"]["runbook"].partition("#")
        assert page == "docs/OPERATIONS.md" and anchor == rule["alert"].lower() and anchor in documented


def test_grafana_is_provisioned_with_a_dashboard_on_real_metrics(exported: set[str]) -> None:
    datasources = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())
    source = datasources["datasources"][0]
    assert source["url"] == "http://prometheus:9090" and "prometheus" in SERVICES
    providers = yaml.safe_load((ROOT / "deploy/grafana/provisioning/dashboards/einvoice.yml").read_text())
    mounts = {str(v).split(":")[0]: str(v).split(":")[1] for v in SERVICES["grafana"]["volumes"]}
    assert providers["providers"][0]["options"]["path"] == mounts["./deploy/grafana/dashboards"]
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/einvoice.json").read_text())
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    used: set[str] = set()
    for panel in panels:
        assert panel["datasource"]["uid"] == source["uid"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert balanced(target["expr"]), panel["title"]
            used |= metric_names(target["expr"])
    assert used <= exported, used - exported
    # The seed's monitoring advice: success/rejection rate, processing time, availability, quota.
    assert {"einvoice_transitions_total", "einvoice_time_to_issue_seconds_bucket", "einvoice_provider_up"} <= used
    assert any('outcome="rate_limited"' in t["expr"] for p in panels for t in p["targets"])


# --------------------------------------------------------------------------------------- Makefile

MAKE_TARGETS: dict[str, str] = {
    "bench": "/v/bin/python -m bench.run",
    "up": "docker compose up -d --build",
    "down": "docker compose down",
    "worker": "/v/bin/celery -A worker.app worker --loglevel INFO",
    "beat": "/v/bin/celery -A worker.app beat --loglevel INFO",
    "flower": "/v/bin/celery -A worker.app flower",
    "metrics": "/v/bin/einvoice metrics",
    "migrate": "/v/bin/alembic upgrade head",
    "sandbox": "/v/bin/einvoice sandbox",
    "demo": "/v/bin/einvoice demo",
    "lint": "/v/bin/mypy .",
    "test": "/v/bin/pytest",
    "setup": "/v/bin/pip install -q --require-hashes -r requirements/dev-lock.txt",
}


@pytest.mark.parametrize("target", sorted(MAKE_TARGETS))
def test_make_targets_are_thin_calls_of_documented_commands(target: str) -> None:
    result = subprocess.run(
        ["make", "-n", target, "VENV=/v"], cwd=ROOT, capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stderr
    expected = MAKE_TARGETS[target]
    assert expected in [line.strip() for line in result.stdout.splitlines()]
    program = expected.split()
    if program[0].endswith(("einvoice", "celery", "alembic")):
        check_command("Makefile", [Path(program[0]).name, *program[1:]])


def test_unknown_option_is_caught_by_the_command_check() -> None:
    """The command checks above are real parsers: a typo in compose would fail them."""
    with pytest.raises(click.UsageError):
        check_command("typo", ["celery", "-A", "worker.app", "worker", "--concurency", "2"])
    with pytest.raises(click.UsageError):
        check_command("typo", ["einvoice", "metrics", "--prot", "1"])
