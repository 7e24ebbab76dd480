"""Credentials come from the environment or `*_FILE` secrets, and no secret, payload or download
link ever reaches a log line, the CLI's output or the `repr` of a settings object.

The pipeline runs at DEBUG with distinctive values for every secret, with provider faults on so
that the error paths log too, and the logs are searched for each value afterwards.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from providers.mysuite.client import MySuiteClient
from providers.mysuite.config import MySuiteConfig
from tests.faults.conftest import FaultStack
from worker.samples import native_xml
from worker.settings import Settings

pytestmark = pytest.mark.faults

REQUESTOR = "5ec2e7a1-c0de-4bad-9e11-00000000f00d"
USER = "a11ce5ec-2e70-4f00-9abc-0000000beef1"
DB_PASSWORD = "Pg-S3cret-7741"
MARKER = "CONFIDENTIAL-MARKER-Zq81x"


def secret_file(folder: Path, name: str, value: str) -> str:
    path = folder / name
    path.write_text(value + "\n", encoding="utf-8")
    path.chmod(0o600)
    return str(path)


def test_no_secret_payload_or_link_in_logs_output_or_repr(fault_stack: FaultStack, tmp_path: Path) -> None:
    stack = fault_stack
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    db_url = stack.database_url.replace("postgresql://postgres@", f"postgresql://postgres:{DB_PASSWORD}@", 1)
    assert DB_PASSWORD in db_url
    for name in ("DATABASE_URL", "CELERY_BROKER_URL", "MYSUITE_REQUESTOR"):
        stack.env.pop(name, None)
    stack.env.update(
        {
            "DATABASE_URL_FILE": secret_file(secrets, "db", db_url),
            "CELERY_BROKER_URL_FILE": secret_file(secrets, "broker", stack.redis.url),
            "MYSUITE_REQUESTOR_FILE": secret_file(secrets, "requestor", REQUESTOR),
            "MYSUITE_USER": USER,
        }
    )
    stack.admin(
        "config", {"http500_rate": 0.15, "malformed_rate": 0.1, "drop_after_rate": 0.1, "faults_on_files": True}
    )

    docs = {}
    for n in range(6):
        key = f"SECRET-{n}"
        size = 1200 if n == 5 else 6000
        docs[key] = native_xml(key, size, folio=n + 1).replace(b"EMPRESA DE PRUEBAS SA DE CV", MARKER.encode())
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "SECRET-BAD.xml").write_bytes(f"<Factura><Nota>{MARKER}</Nota></Factura>".encode())

    worker = stack.worker(concurrency=3, loglevel="DEBUG")
    outputs = []
    folder = tmp_path / "docs"
    folder.mkdir()
    for key, payload in docs.items():
        (folder / f"{key}.xml").write_bytes(payload)
    for args, code in ((("submit", str(folder)), 0), (("submit", str(bad), "--json"), 3)):
        result = stack.cli(*args, check=False)
        assert result.returncode == code, result.stderr
        outputs += [result.stdout, result.stderr]
    stack.wait_final(len(docs) + 1, timeout=120)
    stack.stop_workers()
    states = {job.internal_id: job.state for job in stack.store.jobs.list_jobs()}
    assert states.pop("SECRET-BAD") == "invalid"
    assert set(states.values()) <= {"retrieved", "failed"} and "retrieved" in states.values()
    counters = stack.admin("counters")
    assert counters["totals"]["faults"] > 0 and counters["files"]["downloads"] > 0
    for ref in ("SECRET-0", "SECRET-BAD"):
        for command in ("status", "events"):
            result = stack.cli(command, ref)  # human output; `status --json` carries links by contract
            outputs += [result.stdout, result.stderr]
    events = json.loads(stack.cli("events", "SECRET-0", "--json").stdout)
    outputs.append(json.dumps(events))
    outputs += [stack.cli("providers").stdout, stack.cli("list").stdout]

    job = stack.store.jobs.resolve("SECRET-0")
    link = job.xml_url or ""
    token = link.rsplit("/files/", 1)[-1]
    assert "/files/" in link and len(token) > 20
    settings = Settings.from_env(stack.env)
    config = MySuiteConfig.from_environ(stack.env)
    assert config.requestor == REQUESTOR and config.user == USER and DB_PASSWORD in settings.database_url
    reprs = [repr(settings), repr(settings.policy), repr(config), repr(MySuiteClient(config))]

    logs = worker.log_text()
    assert "DEBUG" in logs and "Connected to redis" in logs
    haystacks = {"worker log": logs, "CLI output": "\n".join(outputs), "repr": "\n".join(reprs)}
    needles = {
        "database password": DB_PASSWORD,
        "broker password": stack.redis.password,
        "requestor": REQUESTOR,
        "user": USER,
        "payload content": MARKER,
        "download link": "/files/",
        "link token": token,
    }
    leaks = [(where, what) for where, text in haystacks.items() for what, value in needles.items() if value in text]
    assert leaks == []
