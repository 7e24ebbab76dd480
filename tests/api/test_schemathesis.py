"""Schemathesis against the live OpenAPI of `einvoice api`, on a real PostgreSQL and Redis.

No generated input may cause a 5xx, and every answer must match its declared status codes, media
types and schemas. The run is bounded (30 examples per operation, no stateful phase) so it fits CI.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.api.server import ApiServer, create_key
from tests.e2e.stack import Stack

CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
        "response_headers_conformance",
    ]
)


def run_schemathesis(url: str, key: str, report: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "schemathesis.cli",
            "run",
            f"{url}/openapi.json",
            "--header",
            f"Authorization: Bearer {key}",
            "--checks",
            CHECKS,
            "--max-examples",
            "30",
            "--phases",
            "examples,coverage,fuzzing",
            "--seed",
            "15",
            "--workers",
            "1",
            "--request-timeout",
            "60",
            "--report",
            "junit",
            "--report-junit-path",
            str(report),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=report.parent,  # its cache folder goes there, not into the repository
    )


def test_generated_requests_get_no_5xx_and_conforming_answers(api_stack: Stack, api: ApiServer, tmp_path: Path) -> None:
    key = create_key(api_stack.env, "operator")["key"]
    result = run_schemathesis(api.url, key, tmp_path / "junit.xml")
    summary = result.stdout[-6000:]
    print(summary)
    assert result.returncode == 0, summary + result.stderr[-2000:]
    assert "passed" in summary.lower()
