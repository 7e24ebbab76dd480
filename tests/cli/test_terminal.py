"""Terminal output shows control characters from ids and provider texts as escapes, never as effects:
an escape sequence from a provider must not recolour, clear or rewrite what an operator reads."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from models import ErrorInfo, JobState
from tests.cli.conftest import Cli
from worker.views import terminal_text

HOSTILE = "bad\x1b[2J\x1b[32m retrieved\r\u202eok\x9b31m\u2028end"
SHOWN = "bad\\x1b[2J\\x1b[32m retrieved\\r\\u202eok\\x9b31m\\u2028end"


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        (HOSTILE, SHOWN),
        ("\x07\x00\x7f\t\n", "\\x07\\x00\\x7f\\t\\n"),
        ("Facturación Ñandú, 100 % \\ ok", "Facturación Ñandú, 100 % \\ ok"),
    ],
)
def test_terminal_text(raw: str, shown: str) -> None:
    assert terminal_text(raw) == shown


def _raw_controls(text: str) -> list[str]:
    return [ch for ch in text if ch in "\x1b\r\x9b\u202e\u2028"]


def test_status_events_list_and_providers_escape_what_they_print(cli: Cli) -> None:
    # Written through the store as a provider's answer would be; the id as an older release let it in.
    job, _ = cli.store.jobs.create_job(
        provider="mysuite",
        entity="JES900109Q90",
        internal_id="ERP\x1b[8m-1",
        payload=b"<x/>",
        actor="producer",
        deadline=timedelta(days=1),
        dispatch_grace=timedelta(0),
    )
    assert cli.store.steps.transition(
        job.id,
        JobState.QUEUED,
        JobState.FAILED,
        actor="worker",
        fields={"provider_request_id": "REQ\x1b]0;owned\x07"},
        error=ErrorInfo("rejected", HOSTILE, code="E\r1"),
    )
    assert cli.store.pauses.pause_for_auth("mysuite", f"credentials refused: {HOSTILE}")

    for args in (["status", job.id], ["events", job.id], ["list"], ["providers"]):
        result = cli(*args)
        assert result.returncode == 0, (args, result.stderr)
        assert _raw_controls(result.stdout) == [], (args, result.stdout)
    assert SHOWN in cli("status", job.id).stdout
    assert "ERP\\x1b[8m-1" in cli("list").stdout

    missing = cli("status", "internal:nope\x1b[31m")
    assert missing.returncode == 2 and _raw_controls(missing.stderr) == []

    # JSON is for programs: the text comes back exactly as stored.
    assert json.loads(cli("status", job.id, "--json").stdout)["error"]["message"] == HOSTILE
