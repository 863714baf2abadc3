"""Wire types of the operators' views (CLI, dashboard): a run's details with its tasks,
attempts, progress, waits and timeline; the workers; the workflow versions."""

from __future__ import annotations

import datetime as dt
from typing import Final, Literal, TypeGuard, get_args

import attrs

from ..errors import ErrorInfo
from ._limits import ConcurrencyLimit
from ._live import TaskProgress
from ._operation import READERS, Request, declare
from ._runs import RunInfo
from ._states import RunStatus
from ._workers import WaitKind

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
class PendingWait:
    """A wait of a run that is not resolved yet: what a suspended run waits for."""

    kind: WaitKind
    key: str
    """The sleep's name, the event's name, or the child run's ID."""
    seq: int
    until: dt.datetime | None = None
    """When the sleep ends, or when the wait times out (None: it waits as long as it
    takes)."""
    since: dt.datetime


@attrs.frozen(kw_only=True)
class LimitWait:
    """A concurrency-limit slot a run waits for, and how full its limit is."""

    limit: str
    key: str
    """The run's key of the limit ("" for a limit with one key for all runs)."""
    holding: int
    """Runs of that key holding a slot now."""
    per_key: int | None
    """The limit per key (None: the limit is no longer declared: it bounds nothing)."""
    total_holding: int
    """Runs holding a slot of the limit now, over all keys."""
    total: int | None = None
    """The limit over all keys (None: none)."""


@attrs.frozen(kw_only=True)
class GateWait:
    """Why a queued run waits at the gate (not yet sent to any worker)."""

    since: dt.datetime
    limits: tuple[LimitWait, ...] = ()
    """The limits whose slots it waits for, each as full as it is now (empty: it waits
    only for its turn, its workers being busy)."""
    ahead: int = 0
    """Runs waiting at the gate before it in its namespace: of a higher priority, or of
    its priority and waiting since earlier."""
    ahead_higher: int = 0
    """Of those, the runs of a higher priority."""
    summary: str = ""
    """All that, in a sentence (what the CLI and the dashboard show)."""


@attrs.frozen(kw_only=True)
class RunDetails:
    """Reply to `DescribeRun`."""

    run: RunInfo
    """The run (a sleeping run's ``wake_at``: when its first pending sleep or timeout
    ends)."""
    tasks: tuple[TaskDetail, ...] = ()
    timeline: tuple[Transition, ...] = ()
    progress: tuple[TaskProgress, ...] = ()
    """The latest progress of each task that reported any."""
    waits: tuple[PendingWait, ...] = ()
    """What the run waits for now (a suspended run), earliest reached first."""
    unserved: str | None = None
    """Why a queued run is not taken: no live worker serves its version (and pool), and
    since when; None while one does (or the run is not queued)."""
    gate: GateWait | None = None
    """Why a queued run waits at the gate (concurrency limits, its turn), or None."""


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


@attrs.frozen(kw_only=True)
class VersionInfo:
    """A registered workflow version: its open runs and who serves it."""

    workflow: str
    version: str
    namespace: str = "default"
    registered_at: dt.datetime
    open_runs: dict[str, int] = attrs.Factory(dict)
    """Runs not ended yet, by status (statuses with none are left out)."""
    workers: tuple[str, ...] = ()
    """The live workers serving it (registered, session open)."""
    unserved_since: dt.datetime | None = None
    """It has open runs and no live worker: since when (when one was last seen, or when
    the version was registered); None otherwise."""
    limits: tuple[ConcurrencyLimit, ...] = ()
    """The concurrency limits its runs take a slot of, with their numbers in force."""


@attrs.frozen(kw_only=True)
class VersionList:
    """Reply to `ListVersions`."""

    versions: tuple[VersionInfo, ...] = ()


@attrs.frozen(kw_only=True)
class ListVersions(Request[VersionList]):
    """The registered workflow versions (at most 1000), by workflow and version, with
    their open runs by status and the live workers serving each. Runs stay on the
    version they started on: a version must be served until its open runs end."""

    workflow: str | None = None


DESCRIBE_RUN: Final = declare("describe_run", DescribeRun, callers=READERS)
LIST_WORKERS: Final = declare("list_workers", ListWorkers, callers=READERS)
LIST_VERSIONS: Final = declare("list_versions", ListVersions, callers=READERS)

OPERATIONS: Final = (DESCRIBE_RUN, LIST_WORKERS, LIST_VERSIONS)
"""The operators' views."""
