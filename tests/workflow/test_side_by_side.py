"""A batch's provider calls go several at once, in order of their results, the first alone."""

from __future__ import annotations

import threading
from dataclasses import replace

import pytest

from providers.base import AuthError
from tasks.workflow import side_by_side
from tests.workflow.conftest import Flow


def test_calls_run_at_once_up_to_the_width_and_results_keep_their_order() -> None:
    meeting = threading.Barrier(4, timeout=5)

    def call(n: int) -> int:
        meeting.wait()  # breaks unless four calls are in flight together
        return n * n

    assert side_by_side(call, [1, 2, 3, 4], 4) == [1, 4, 9, 16]


def test_a_width_of_one_calls_in_this_thread_one_after_the_other() -> None:
    seen: list[str] = []

    def call(n: int) -> int:
        seen.append(threading.current_thread().name)
        return n

    assert side_by_side(call, [1, 2, 3], 1) == [1, 2, 3]
    assert seen == [threading.current_thread().name] * 3


@pytest.fixture
def wide(flow: Flow) -> Flow:
    flow.services = replace(flow.services, policy=replace(flow.services.policy, calls_at_once=4))
    return flow


def test_a_wide_batch_issues_every_invoice_once(wide: Flow) -> None:
    jobs = [wide.enqueue(f"W-{n}") for n in range(10)]
    wide.deliver()
    assert {wide.job(job.id).state for job in jobs} == {"retrieved"}
    assert sorted(wide.provider.calls.count(f"submit:W-{n}") for n in range(10)) == [1] * 10


def test_in_a_wide_batch_a_refused_first_call_keeps_every_other_call_back(wide: Flow) -> None:
    wide.provider.submits.append(AuthError("bad login"))
    jobs = [wide.enqueue(f"R-{n}") for n in range(6)]
    assert wide.deliver(limit=1) == [{job.id: "auth" for job in jobs}]
    assert wide.provider.calls == ["submit:R-0"]
