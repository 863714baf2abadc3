"""The ``run`` handle passed to workflow handlers: identity, input, and durable steps.

Every step goes through the replay log (pure) first; only a step with nothing recorded
does something new: a task runs (retrying per its policy, every attempt recorded before
the workflow goes on), a child starts, a wait is recorded. A wait the server has not
satisfied yet blocks its branch. When every branch of the handler is blocked on such
waits and no step is in flight, the worker *suspends* the run: it stops executing, frees
its slot, and the server queues the run again once any wait is satisfied. The handler
then replays from the top to where it was.
"""

from __future__ import annotations

import contextlib
import random
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Final, Generic, NoReturn, Protocol, TypeVar

import trio

from transport import make_wire_converter

from ..errors import (
    BlockingTaskError,
    ConflictError,
    ErrorInfo,
    NotFoundError,
    TaskFailedError,
    TaskOutputError,
    TaskTimeoutError,
    UnawaitedStepError,
    ValidationError,
    WorkflowNotFoundError,
    error_info,
    is_retryable,
)
from ..protocol import (
    BeginWait,
    RecordedChild,
    RecordedTask,
    RecordedWait,
    RecordTask,
    ReportProgress,
    RunInfo,
    StartChild,
    StartOptions,
    TaskRecordState,
    WaitKind,
    wait_address,
)
from ._children import ChildRun
from ._event import EventDefinition, RunEvents
from ._loops import AsyncioLoop, Attempt
from ._progress import CURRENT_TASK, Reporter
from ._replay import NewCall, ReplayLog, child_address, task_address
from ._steps import Step, unawaited_error

if TYPE_CHECKING:
    import datetime as dt
    from collections.abc import Iterator

    from ._task import Task
    from ._workflow import WorkflowVersion

I = TypeVar("I")
O = TypeVar("O")
T = TypeVar("T")
TI = TypeVar("TI")

_CONVERT: Final = make_wire_converter()


class RunTakenOver(BaseException):
    """The server refused a write: another owner holds the run now (fencing).

    A `BaseException`, so a handler's ``except Exception`` cannot swallow it and keep
    running tasks as a zombie; the worker catches it and stops the execution.
    """


class RunGateway(Protocol):
    """How a run reaches the server (the worker's link)."""

    async def record_task(self, request: RecordTask) -> None:
        """Store one attempt's outcome."""
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
        run_id: str,
        workflow: str,
        version: str,
        attempt: int,
        revision: int,
        input_value: I,
        recorded: tuple[RecordedTask, ...] = (),
        waits: tuple[RecordedWait, ...] = (),
        children: tuple[RecordedChild, ...] = (),
        task_attempts: tuple[tuple[str, int, int], ...] = (),
        gateway: RunGateway,
        events: dict[str, EventDefinition[object]] | None = None,
        rng: random.Random | None = None,
        schedule_id: str | None = None,
        occurrence: dt.datetime | None = None,
        asyncio_loop: AsyncioLoop | None = None,
    ) -> None:
        self.id = run_id
        self._asyncio_loop = asyncio_loop
        self.schedule_id = schedule_id
        self.occurrence = occurrence
        self.workflow = workflow
        self.version = version
        self.attempt = attempt
        self.input = input_value
        self.events = RunEvents(self, events or {})
        self._revision = revision
        self._replay = ReplayLog([*recorded, *waits, *children])
        self._failed_attempts = {(address, seq): count for address, seq, count in task_attempts}
        self._gateway = gateway
        self._rng = rng or random.Random()
        self._in_flight = 0
        self._blocked: dict[tuple[WaitKind, str, int], int] = {}
        self._changed = trio.Event()
        self._unsent: list[RecordTask] = []
        self._progress: dict[tuple[str, int], ReportProgress] = {}
        self._progress_ready = trio.Event()
        self._held = trio.Event()
        self._flushing = trio.Lock()
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
        recorded = self._replay.call(address, RecordedTask)
        if isinstance(recorded, NewCall):
            return await self._execute(task, input_json, recorded)
        if recorded.state == "completed":
            return task.output_type.from_json(recorded.output)
        cause = _CONVERT.structure(recorded.error, ErrorInfo)
        raise TaskFailedError(
            f"task {task.name!r} failed after {recorded.attempts} attempt(s): {cause.message}",
            task=task.name,
            attempts=recorded.attempts,
            cause=cause,
        )

    async def _execute(self, task: Task[TI, O], input_json: object, call: NewCall) -> O:
        attempt = self._failed_attempts.get((call.address, call.seq), 0) + 1
        argument = task.input_type.from_json(input_json)
        with self._busy():
            while True:
                await self.flush()  # a result is stored before anything else happens
                with self._fenced():
                    await self._gateway.confirm_claim()
                started = time.perf_counter()
                tried = Attempt(task.name, self.id)
                try:
                    result = await self._reporting(call, task, argument, tried)
                    try:
                        output_json = task.output_type.to_json(result)
                    except ValidationError as exc:
                        message = f"task {task.name!r} returned the wrong type: {exc.message}"
                        raise TaskOutputError(message, errors=exc.errors) from None
                except Exception as exc:  # the task's failure; Cancelled passes through
                    failure: Exception | None = exc
                else:
                    failure = None
                took = time.perf_counter() - started
                if failure is None:
                    await self._record(task, call, attempt, "completed", input_json,
                                       output=output_json, took=took)  # fmt: skip
                    return task.output_type.from_json(output_json)
                info = error_info(failure)
                delay = (task.retry.delay_before(attempt + 1, self._rng)
                         if is_retryable(failure) else None)  # fmt: skip
                if delay is None:
                    await self._record(task, call, attempt, "failed", input_json, error=info,
                                       took=took)  # fmt: skip
                    raise TaskFailedError(
                        f"task {task.name!r} failed after {attempt} attempt(s): {info.message}",
                        task=task.name, attempts=attempt, cause=info,
                    ) from failure  # fmt: skip
                await self._record(
                    task, call, attempt, "attempt_failed", input_json, error=info, took=took
                )
                await trio.sleep(delay)
                attempt += 1

    async def _reporting(
        self, call: NewCall, task: Task[TI, O], argument: TI, attempt: Attempt
    ) -> O:
        """One attempt, with `aiki.progress` reporting for this task within it; an
        attempt that blocked its loop past the watchdog's limit fails for that."""
        reporter = Reporter(self.report_progress, trio.lowlevel.current_trio_token(),
                            call.address, call.seq, task.name)  # fmt: skip
        token = CURRENT_TASK.set(reporter)
        try:
            result = await self._attempt(task, argument, attempt)
        except Exception as exc:
            if attempt.blocked_seconds:
                raise _blocking(task, attempt) from exc
            raise
        finally:
            CURRENT_TASK.reset(token)
        if attempt.blocked_seconds:
            raise _blocking(task, attempt)
        return result

    async def _attempt(self, task: Task[TI, O], argument: TI, attempt: Attempt) -> O:
        loop = self._asyncio_loop
        if task.timeout_seconds is None:
            return await task.invoke(argument, attempt=attempt, asyncio_loop=loop)
        try:
            with trio.fail_after(task.timeout_seconds):
                return await task.invoke(argument, attempt=attempt, asyncio_loop=loop)
        except trio.TooSlowError:
            raise TaskTimeoutError(
                f"task {task.name!r} timed out after {task.timeout_seconds:g} s"
            ) from None

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
        took: float | None = None,
    ) -> None:
        request = RecordTask(
            run_id=self.id, revision=self._revision, address=call.address, seq=call.seq,
            name=task.name, attempt=attempt, state=state, input=input_json, output=output,
            error=error, duration_seconds=took,
        )  # fmt: skip
        if state == "completed":
            # Held until the run's next step (which sends it first) or its outcome (which
            # carries it): a W1 run completes with one write instead of two.
            self._unsent.append(request)
            self._held.set()
            return
        await self.flush()
        with self._fenced():
            await self._gateway.record_task(request)

    def report_progress(self, address: str, seq: int, task: str, details: object) -> None:
        """Keep a task's latest progress for `send_progress` (call from the run's trio
        thread)."""
        self._progress[(address, seq)] = ReportProgress(
            run_id=self.id, revision=self._revision, address=address, seq=seq, task=task,
            details=details,
        )  # fmt: skip
        self._progress_ready.set()

    async def send_progress(self, every: float) -> NoReturn:
        """Run beside the handler: send reported progress, the latest of each task, at
        most once per ``every`` seconds. Best effort: a refused report is dropped (the
        run's own next step learns why)."""
        while True:
            await self._progress_ready.wait()
            self._progress_ready = trio.Event()
            pending, self._progress = self._progress, {}
            for request in pending.values():
                with contextlib.suppress(ConflictError, NotFoundError):
                    await self._gateway.report_progress(request)
            await trio.sleep(every)

    async def flush(self) -> None:
        """Store the task results not sent yet (before any further step)."""
        async with self._flushing:
            while self._unsent:
                # Forgotten only once stored: a send cut short is repeated (or carried by
                # the outcome); recording a task is idempotent.
                with self._busy(), self._fenced():  # in flight: not suspended meanwhile
                    await self._gateway.record_task(self._unsent[0])
                del self._unsent[0]

    async def flush_held(self, linger: float) -> NoReturn:
        """Run beside the handler: store a held result if the run takes no step of its own
        within ``linger`` seconds (it computes, or waits on something not durable), so a
        crash then does not repeat a task that finished long ago."""
        while True:
            await self._held.wait()
            self._held = trio.Event()
            await trio.sleep(linger)
            await self.flush()

    def take_unsent(self) -> tuple[RecordTask, ...]:
        """The task results not sent yet, for the run's outcome to carry (and forget them)."""
        unsent, self._unsent = tuple(self._unsent), []
        return unsent

    async def _start_child(
        self, version: WorkflowVersion[I, O], input_value: I, options: StartOptions
    ) -> ChildRun[O]:
        input_json = version.input_type.to_json(input_value)
        address = child_address(version.workflow, version.version, options.reference_id,
                                 input_json)  # fmt: skip
        step = self._replay.call(address, RecordedChild)
        if isinstance(step, NewCall):
            await self.flush()
            request = StartChild(
                parent_id=self.id, revision=self._revision, address=address, seq=step.seq,
                workflow=version.workflow, version=version.version, input=input_json,
                options=options,
            )  # fmt: skip
            with self._busy(), self._fenced():
                child_id = (await self._gateway.start_child(request)).id
        else:
            child_id = step.run_id
        return ChildRun(self, child_id, version)

    async def _wait(self, kind: WaitKind, key: str, seconds: float | None) -> RecordedWait:
        step = self._replay.call(wait_address(kind, key), RecordedWait)
        if isinstance(step, NewCall):
            await self.flush()
            request = BeginWait(run_id=self.id, revision=self._revision, kind=kind, key=key,
                                seq=step.seq, seconds=seconds)  # fmt: skip
            with self._busy(), self._fenced():
                record = await self._gateway.begin_wait(request)
        else:
            record = step
        if record.state == "pending":
            await self._block((record.kind, record.key, record.seq))
        return record

    # -- suspension bookkeeping -----------------------------------------------------------------

    @contextmanager
    def _busy(self) -> Iterator[None]:
        """A step is in flight: the run must not be suspended meanwhile."""
        self._in_flight += 1
        try:
            yield
        finally:
            self._in_flight -= 1
            self._notify()

    @contextmanager
    def _fenced(self) -> Iterator[None]:
        """A write refused because the run moved on (another worker owns it) stops this
        execution; an unknown child workflow is the handler's error to catch."""
        try:
            yield
        except WorkflowNotFoundError:
            raise
        except (ConflictError, NotFoundError) as exc:
            raise RunTakenOver(str(exc)) from exc

    async def _block(self, wait: tuple[WaitKind, str, int]) -> NoReturn:
        """Park this branch until the run is suspended (cancelled) and later replayed."""
        self._blocked[wait] = self._blocked.get(wait, 0) + 1
        self._notify()
        try:
            await trio.sleep_forever()
        finally:
            self._blocked[wait] -= 1
            if not self._blocked[wait]:
                del self._blocked[wait]

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    @property
    def all_blocked(self) -> bool:
        """True when some branch waits on the server and no step is in flight."""
        return bool(self._blocked) and self._in_flight == 0

    @property
    def blocked_on(self) -> tuple[tuple[WaitKind, str, int], ...]:
        """The waits branches are blocked on: (kind, key, seq)."""
        return tuple(self._blocked)

    async def wait_until_all_blocked(self) -> None:
        """Return once `all_blocked` holds (the worker then settles and suspends)."""
        while not self.all_blocked:
            await self._changed.wait()


def _blocking(task: Task[Any, Any], attempt: Attempt) -> BlockingTaskError:
    loop = "the worker's trio loop" if task.loop == "trio" else "its asyncio event loop"
    return BlockingTaskError(
        f"task {task.name!r} blocked {loop} for {attempt.blocked_seconds:.1f} s (at "
        f"{attempt.blocked_at}): an async def task must not block (time.sleep, synchronous "
        "I/O, long computations); use a plain def task for blocking code (it runs in a "
        "thread), or await the call's async form"
    )
