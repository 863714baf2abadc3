"""Mistakes a new user makes are caught and named, not silently accepted: a durable step
not awaited, a task returning another type than it declares."""

from __future__ import annotations

import re

from tests._deadline import deadline

from . import mistake_flows as flows
from .conftest import Cluster

WORKER_TARGET = "tests.e2e.mistake_flows:mistakes_worker"


@deadline(60)
async def test_a_step_not_awaited_fails_the_run_naming_the_step_and_its_line(
    cluster: Cluster,
) -> None:
    """``run.sleep(...)`` or ``task.start(...)`` without ``await``: the run fails with
    `aiki.UnawaitedStepError` naming the step and the line (never a run that completes
    without sleeping, nor "coroutine is not JSON-serializable")."""
    async with cluster.client() as client:
        sleep = await flows.forgot_sleep_flow.start(client)
        task = await flows.forgot_task_flow.start(client, 2)
        slept = await sleep.wait_for_status("completed")
        tasked = await task.wait_for_status("completed")
    for result, step in ((slept, "run.sleep('nap', ...)"), (tasked, "listing.start(run, ...)")):
        assert result.status == "failed"
        assert result.error is not None
        assert result.error.code == "unawaited_step"
        assert result.error.message.startswith(f"{step} at ")
        assert re.search(r"mistake_flows\.py:\d+ was never awaited", result.error.message)
        assert "JSON" not in result.error.message


@deadline(60)
async def test_a_task_returning_another_type_than_declared_fails_with_task_output_error(
    cluster: Cluster,
) -> None:
    """``-> list[str]`` returning a ``set``: the attempt fails (not retried) with the
    public `aiki.TaskOutputError`, saying what was expected and where."""
    async with cluster.client() as client:
        handle = await flows.wrong_type_flow.start(client, 2)
        result = await handle.wait_for_status("completed")
    assert result.status == "failed"
    assert result.error is not None
    cause = result.error.cause
    assert cause is not None
    assert (cause.type, cause.code) == ("aiki.errors.TaskOutputError", "task_output")
    assert "expected list, got set @ $" in cause.message
