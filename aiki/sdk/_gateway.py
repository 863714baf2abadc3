"""The boundary of an execution: what it asks of the worker's link (`RunGateway`), what
one step asks for (`TaskCall`, `ChildCall`, `WaitCall`), how an execution ends
(`Completed`, `Failed`, `Suspended`), and how it is cut short (`ExecutionInterrupted`).
`Execution` (`_execution`) is what runs between them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import attrs

from ..protocol import (
    StartOptions,
    WaitKind,
)
from ._task import Task
from ._workflow import WorkflowVersion

if TYPE_CHECKING:
    from ..protocol import (
        BeginWait,
        RecordedWait,
        RecordHistory,
        RecordTask,
        ReportProgress,
        RunInfo,
        StartChild,
    )


class ExecutionInterrupted(BaseException):
    """This execution ends here and records nothing more: the run was taken over, or the
    server stayed out of reach (the worker's gateway raises a subclass).

    A `BaseException`, so a handler's ``except Exception`` cannot swallow it and keep
    running tasks as a zombie; the worker catches it and stops the execution.
    """


class RunTakenOver(ExecutionInterrupted):
    """The server refused a write: another owner holds the run now (fencing)."""


class RunGateway(Protocol):
    """How a run reaches the server (the worker's link)."""

    async def record_task(self, request: RecordTask) -> None:
        """Store one attempt's outcome."""
        ...

    async def record_history(self, request: RecordHistory) -> None:
        """Store what the execution added to the run's history."""
        ...

    async def begin_wait(self, request: BeginWait) -> RecordedWait:
        """Record a wait; returns its state."""
        ...

    async def start_child(self, request: StartChild) -> RunInfo:
        """Start (or find) a child run."""
        ...

    async def report_progress(self, request: ReportProgress) -> None:
        """Send a task's latest progress."""
        ...

    async def confirm_claim(self) -> None:
        """Make sure this worker still holds the run before a task body runs.

        Raises:
            RunTakenOver: the claim lapsed (the run belongs to another worker now).
        """
        ...


# -- what a step asks for -------------------------------------------------------------------------


@attrs.frozen(eq=False)
class TaskCall:
    """Run ``task`` on ``input_json`` (with its retries)."""

    task: Task[Any, Any]
    input_json: object


@attrs.frozen(eq=False)
class ChildCall:
    """Start a child run of ``version``."""

    version: WorkflowVersion[Any, Any]
    input_json: object
    options: StartOptions


@attrs.frozen(eq=False)
class WaitCall:
    """Wait durably (``seconds``: a sleep's length, or a wait's timeout)."""

    kind: WaitKind
    key: str
    seconds: float | None


StepCall = TaskCall | ChildCall | WaitCall


# -- how an execution ends ------------------------------------------------------------------------


@attrs.frozen
class Completed:
    """The handler returned ``value``."""

    value: object


@attrs.frozen
class Failed:
    """The handler raised ``error``, or replay found it diverged from its history."""

    error: Exception


@attrs.frozen
class Suspended:
    """Every branch waits on these pending waits (kind, key, seq)."""

    blocked_on: tuple[tuple[WaitKind, str, int], ...]


Ended = Completed | Failed | Suspended
