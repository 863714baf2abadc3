"""The ``run`` handle passed to workflow handlers: identity, input, and durable steps.

Each step (a task call, a child start, a sleep, an event wait, a wait for a child) parks
the branch that takes it until the run's `Execution` delivers its outcome: replayed from
the run's history, in the recorded order, or from what the step did now (a task ran,
retrying per its policy; a child started; a wait was recorded). A wait the server has
not satisfied keeps its branch parked; when every branch waits and nothing is in flight,
the worker *suspends* the run: it stops executing, frees its slot, and the server queues
the run again once a wait is satisfied. The handler then replays from the top to where
it was.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar

from ..errors import (
    ErrorInfo,
    TaskFailedError,
    UnawaitedStepError,
    error_from_reply,
)
from ..protocol import (
    RecordedChild,
    RecordedTask,
    RecordedWait,
    StartOptions,
    WaitKind,
    wait_address,
)
from ..wire import make_wire_converter
from ._children import ChildRun
from ._event import EventDefinition, RunEvents
from ._gateway import ChildCall, TaskCall, WaitCall
from ._replay import child_address, task_address
from ._steps import Step, unawaited_error

if TYPE_CHECKING:
    import datetime as dt

    from ._execution import Execution
    from ._task import Task
    from ._workflow import WorkflowVersion

I = TypeVar("I")
O = TypeVar("O")
T = TypeVar("T")
TI = TypeVar("TI")

_CONVERT: Final = make_wire_converter()


class Run(Generic[I]):
    """One execution of a workflow run, as seen by its handler.

    Attributes:
        id: the run's ID.
        workflow: the workflow's name.
        version: the workflow version being executed.
        attempt: the workflow-level attempt (1 unless the workflow was retried).
        input: the run's input, as the declared type.
        events: the version's declared events: ``await run.events.<name>.wait()``.
        schedule_id: the schedule that started the run (None if none did).
        occurrence: the time of the schedule occurrence the run is for (the nominal time,
            e.g. 09:00 for a daily 9 o'clock report however late it started); fixed, so it
            is the same in every replay.
    """

    def __init__(
        self,
        *,
        execution: Execution,
        workflow: str,
        version: str,
        attempt: int,
        input_value: I,
        events: dict[str, EventDefinition[object]] | None = None,
        schedule_id: str | None = None,
        occurrence: dt.datetime | None = None,
    ) -> None:
        self.id = execution.run_id
        self.schedule_id = schedule_id
        self.occurrence = occurrence
        self.workflow = workflow
        self.version = version
        self.attempt = attempt
        self.input = input_value
        self.events = RunEvents(self, events or {})
        self._execution = execution
        self._unawaited: set[Step[Any]] = set()

    def __repr__(self) -> str:
        return f"<aiki run {self.id} of {self.workflow}@{self.version}>"

    # -- durable steps --------------------------------------------------------------------------

    def sleep(
        self,
        name: str,
        duration: dt.timedelta | None = None,
        *,
        seconds: float = 0,
        minutes: float = 0,
        hours: float = 0,
        days: float = 0,
    ) -> Step[bool]:
        """Sleep durably: the run is suspended (no worker slot held) and resumed when due.

        ``name`` identifies the sleep in the run's history; the same name in a loop is told
        apart by occurrence. The end time is fixed when a sleep first starts: changing the
        duration in code later only affects sleeps that have not started yet.

        Returns (awaited):
            True if the sleep was cut short (``handle.wakeup()``), False if it ran out.
        """
        total = (duration.total_seconds() if duration else 0) + seconds + minutes * 60 + (
            hours * 3600) + days * 86400  # fmt: skip
        return Step(self._sleep(name, total), f"run.sleep({name!r}, ...)", self._unawaited, 1)

    async def _sleep(self, name: str, total: float) -> bool:
        if total <= 0:
            return False
        record = await self._wait("sleep", name, total)
        return record.state == "cut_short"

    def unawaited_error(self) -> UnawaitedStepError | None:
        """The error for durable steps the handler made and never awaited (they are
        closed), or None. Called once the handler is over."""
        return unawaited_error(self._unawaited)

    async def _call_task(self, task: Task[TI, O], input_value: TI) -> O:
        input_json = task.input_type.to_json(input_value)
        address = task_address(task.name, input_json)
        recorded = await self._execution.step(address, TaskCall(task, input_json))
        assert isinstance(recorded, RecordedTask)
        if recorded.state == "completed":
            return task.output_type.from_json(recorded.output)
        cause = _CONVERT.structure(recorded.error, ErrorInfo)
        raise TaskFailedError(
            f"task {task.name!r} failed after {recorded.attempts} attempt(s): {cause.message}",
            task=task.name,
            attempts=recorded.attempts,
            cause=cause,
        ) from self._execution.raised(recorded.address, recorded.seq)

    async def _start_child(
        self, version: WorkflowVersion[I, O], input_value: I, options: StartOptions
    ) -> ChildRun[O]:
        input_json = version.input_type.to_json(input_value)
        address = child_address(version.workflow, version.version, options.reference_id,
                                input_json)  # fmt: skip
        started = await self._execution.step(address, ChildCall(version, input_json, options))
        if isinstance(started, ErrorInfo):
            raise self._refused(started)
        assert isinstance(started, RecordedChild)
        return ChildRun(self, started.run_id, version)

    async def _wait(self, kind: WaitKind, key: str, seconds: float | None) -> RecordedWait:
        address = wait_address(kind, key)
        resolved = await self._execution.step(address, WaitCall(kind, key, seconds))
        if isinstance(resolved, ErrorInfo):
            raise self._refused(resolved)
        assert isinstance(resolved, RecordedWait)
        return resolved

    @staticmethod
    def _refused(error: ErrorInfo) -> Exception:
        """On replay, the error of a step the server refused (the execution that took it
        raised the original)."""
        return error_from_reply(error.code or "error", error.message)
