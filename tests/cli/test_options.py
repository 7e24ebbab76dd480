"""Option values are checked where they are parsed: a clean usage error naming what is allowed, never a
traceback and never a silently empty answer."""

from __future__ import annotations

import json

import click
import pytest
from click.testing import CliRunner

from models import JobState
from providers import provider_names
from tests.cli.conftest import Cli, invoice
from worker.cli import main
from worker.producer import enqueue


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["list", "--limit", "-1"], "--limit"),
        (["list", "--limit", "0"], "--limit"),
        (["sandbox", "--port", "99999"], "--port"),
        (["metrics", "--port", "65536"], "--port"),
    ],
)
def test_numbers_out_of_range_are_usage_errors(args: list[str], named: str) -> None:
    """Checked before anything runs: no server is started, no database is opened."""
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert f"Invalid value for '{named}'" in result.output and "range" in result.output
    assert isinstance(result.exception, SystemExit)


def test_every_numeric_option_has_a_range() -> None:
    """A plain int or float option takes any value, negative ports included: each must state its range."""
    assert isinstance(main, click.Group)
    unranged = [
        f"{name} {param.name}"
        for name, command in main.commands.items()
        for param in command.params
        if isinstance(param.type, click.types.IntParamType | click.types.FloatParamType)
        and not isinstance(param.type, click.IntRange | click.FloatRange)
    ]
    assert unranged == []


@pytest.mark.parametrize(
    ("args", "known"),
    [
        (["list", "--provider", "bogus"], provider_names()),
        (["list", "--state", "bogus"], [state.value for state in JobState]),
        (["submit", __file__, "--provider", "bogus"], provider_names()),
    ],
)
def test_unknown_names_are_errors_listing_the_known_ones(args: list[str], known: list[str]) -> None:
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert "'bogus' is not one of" in result.output
    assert all(f"'{name}'" in result.output for name in known)


def test_list_filters_and_limits(cli: Cli) -> None:
    for n in range(3):
        enqueue(cli.store, invoice(f"L-{n}"), f"L-{n}", publish=False)
    enqueue(cli.store, b"not xml", "L-BAD", publish=False)
    limited = cli("list", "--provider", "mysuite", "--limit", "2", "--json")
    assert limited.returncode == 0, limited.stderr
    assert [row["internal_id"] for row in json.loads(limited.stdout)] == ["L-0", "L-1"]
    invalid = cli("list", "--state", "invalid", "--json")
    assert [row["internal_id"] for row in json.loads(invalid.stdout)] == ["L-BAD"]
    bogus = cli("list", "--provider", "bogus")
    assert bogus.returncode == 2 and "mysuite" in bogus.stderr and bogus.stdout == ""
