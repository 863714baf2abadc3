"""The ``run`` handle passed to workflow handlers: identity, input, and task calls.

Task calls go through the replay log (pure) first; only a call with no recorded outcome
runs the task, retrying per its policy and recording every attempt with the server
before the workflow continues, so a crash never loses a result that was acknowledged.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Final, Generic, Protocol, TypeVar

import trio

from transport import make_wire_converter

from ._protocol import RecordTask, TaskRecordState
from ._replay import NewCall, RecordedTask, ReplayLog, task_address
from .errors import (
    ConflictError,
    ErrorInfo,
    NotFoundError,
    TaskFailedError,
    ValidationError,
    error_info,
    is_retryable,
)

if TYPE_CHECKING:
    from ._task import Task

I = TypeVar("I")
O = TypeVar("O")
TI = TypeVar("TI")

_CONVERT: Final = make_wire_converter()


class RunTakenOver(BaseException):
    """The server refused a write: another owner holds the run now (fencing).

    A `BaseException`, so a handler's ``except Exception`` cannot swallow it and keep
    running tasks as a zombie; the worker catches it and stops the execution.
    """


class TaskRecorder(Protocol):
    """Where task outcomes go (the worker's link to the server)."""

    async def record_task(self, request: RecordTask) -> None:
        """Store one attempt's outcome; raises if the run was taken over."""
        ...


class Run(Generic[I]):
    """One execution of a workflow run, as seen by its handler.

    Attributes:
        id: the run's ID.
        workflow: the workflow's name.
        version: the workflow version being executed.
        attempt: the workflow-level attempt (1 unless the workflow was retried).
        input: the run's input, as the declared type.
    """

    def __init__(
        self,
        *,
        run_id: str,
        workflow: str,
        version: str,
        attempt: int,
        revision: int,
        input_value: I,
        recorded: tuple[RecordedTask, ...],
        task_attempts: tuple[tuple[str, int, int], ...],
        recorder: TaskRecorder,
        rng: random.Random | None = None,
    ) -> None:
        self.id = run_id
        self.workflow = workflow
        self.version = version
        self.attempt = attempt
        self.input = input_value
        self._revision = revision
        self._replay = ReplayLog(recorded)
        self._failed_attempts = {(address, seq): count for address, seq, count in task_attempts}
        self._recorder = recorder
        self._rng = rng or random.Random()

    def __repr__(self) -> str:
        return f"<aiki run {self.id} of {self.workflow}@{self.version}>"

    async def _call_task(self, task: Task[TI, O], input_value: TI) -> O:
        input_json = task.input_type.to_json(input_value)
        address = task_address(task.name, input_json)
        outcome = self._replay.call(address)
        if isinstance(outcome, NewCall):
            return await self._execute(task, input_json, outcome)
        if outcome.state == "completed":
            return task.output_type.from_json(outcome.output)
        cause = _CONVERT.structure(outcome.error, ErrorInfo)
        raise TaskFailedError(
            f"task {task.name!r} failed after {outcome.attempts} attempt(s): {cause.message}",
            task=task.name,
            attempts=outcome.attempts,
            cause=cause,
        )

    async def _execute(self, task: Task[TI, O], input_json: object, call: NewCall) -> O:
        attempt = self._failed_attempts.get((call.address, call.seq), 0) + 1
        argument = task.input_type.from_json(input_json)
        while True:
            try:
                result = await task.invoke(argument)
                try:
                    output_json = task.output_type.to_json(result)
                except ValidationError as exc:
                    exc.message = f"task {task.name!r} returned the wrong type: {exc.message}"
                    raise TaskOutputError(exc.message, errors=exc.errors) from None
            except Exception as exc:  # the task's failure; Cancelled passes through
                info = error_info(exc)
                delay = (
                    task.retry.delay_before(attempt + 1, self._rng) if is_retryable(exc) else None
                )
                if delay is None:
                    await self._record(task, call, attempt, "failed", input_json, error=info)
                    raise TaskFailedError(
                        f"task {task.name!r} failed after {attempt} attempt(s): {info.message}",
                        task=task.name,
                        attempts=attempt,
                        cause=info,
                    ) from exc
                await self._record(task, call, attempt, "attempt_failed", input_json, error=info)
                await trio.sleep(delay)
                attempt += 1
            else:
                await self._record(task, call, attempt, "completed", input_json, output=output_json)
                return task.output_type.from_json(output_json)

    async def _record(
        self,
        task: Task[TI, O],
        call: NewCall,
        attempt: int,
        state: TaskRecordState,
        input_json: object,
        *,
        output: object = None,
        error: ErrorInfo | None = None,
    ) -> None:
        request = RecordTask(
            run_id=self.id,
            revision=self._revision,
            address=call.address,
            seq=call.seq,
            name=task.name,
            attempt=attempt,
            state=state,
            input=input_json,
            output=output,
            error=error,
        )
        try:
            await self._recorder.record_task(request)
        except (ConflictError, NotFoundError) as exc:
            raise RunTakenOver(str(exc)) from exc


class TaskOutputError(ValidationError):
    """A task returned a value that does not fit its declared output type (not retried)."""

    non_retryable = True
