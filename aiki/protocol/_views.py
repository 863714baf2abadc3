"""Wire types of the operators' views (CLI, dashboard): a run's details with its tasks,
attempts, progress and timeline; the workers."""

from __future__ import annotations

import datetime as dt
from typing import Final, Literal, TypeGuard, get_args

import attrs

from ..errors import ErrorInfo
from ._live import TaskProgress
from ._operation import READERS, Request, declare
from ._runs import RunInfo
from ._states import RunStatus

TaskState = Literal["running", "completed", "failed"]
"""A task's state: ``running`` until its final outcome is recorded."""


def is_task_state(value: object) -> TypeGuard[TaskState]:
    """Whether ``value`` names a task state."""
    return value in get_args(TaskState)


@attrs.frozen(kw_only=True)
class TaskAttempt:
    """One failed attempt of a task (the last attempt's outcome is the task's own)."""

    attempt: int
    error: ErrorInfo | None = None
    at: dt.datetime


@attrs.frozen(kw_only=True)
class TaskDetail:
    """A task call of a run, as recorded."""

    address: str
    seq: int
    name: str
    state: TaskState
    attempts: int
    input: object = None
    output: object = None
    error: ErrorInfo | None = None
    failed_attempts: tuple[TaskAttempt, ...] = ()
    created_at: dt.datetime
    updated_at: dt.datetime


@attrs.frozen(kw_only=True)
class Transition:
    """One step of a run's timeline."""

    previous: RunStatus | None = None
    status: RunStatus
    revision: int
    reason: str | None = None
    worker_id: str | None = None
    at: dt.datetime


@attrs.frozen(kw_only=True)
class RunDetails:
    """Reply to `DescribeRun`."""

    run: RunInfo
    tasks: tuple[TaskDetail, ...] = ()
    timeline: tuple[Transition, ...] = ()
    progress: tuple[TaskProgress, ...] = ()
    """The latest progress of each task that reported any."""


@attrs.frozen(kw_only=True)
class DescribeRun(Request[RunDetails]):
    """Everything about one run: its state, tasks with their attempts, and its timeline."""

    run_id: str


@attrs.frozen(kw_only=True)
class WorkerInfo:
    """A worker as the server knows it."""

    id: str
    versions: tuple[str, ...]
    """``workflow@version`` it serves."""
    pools: tuple[str | None, ...] = (None,)
    concurrency: int
    alive: bool
    connected: bool = True
    """Its session is open (False from the moment it ends: the worker was stopped, killed
    or cut off; its runs stay its own until its claims time out, unless it deregistered)."""
    active_runs: int
    registered_at: dt.datetime
    last_seen_at: dt.datetime
    namespace: str = "default"


@attrs.frozen(kw_only=True)
class WorkerList:
    """Reply to `ListWorkers`."""

    workers: tuple[WorkerInfo, ...] = ()


@attrs.frozen(kw_only=True)
class ListWorkers(Request[WorkerList]):
    """The workers that registered, most recently seen first."""

    include_gone: bool = False
    """Also workers declared dead (no heartbeat within the claim timeout)."""


DESCRIBE_RUN: Final = declare("describe_run", DescribeRun, callers=READERS)
LIST_WORKERS: Final = declare("list_workers", ListWorkers, callers=READERS)

OPERATIONS: Final = (DESCRIBE_RUN, LIST_WORKERS)
"""The operators' views."""
