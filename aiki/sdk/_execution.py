"""One execution of a workflow handler: the trio rim of the replay core.

Each durable step a branch takes parks the branch (`Execution.step`). A *drive* loop waits
until no branch of the handler can run (`_branches`), then asks the replay core
(`_replay`, pure) what happens next and does it:

- **deliver** an outcome to one branch (the handler then runs until it is quiescent
  again), noting where the step settled;
- **start** new steps: their I/O (running a task with its retries, starting a child,
  recording a wait) runs in *runner* tasks beside the handler, never in its own tasks,
  and their outcomes come back to the core in the order they arrive;
- **suspend** the run, or fail it on a **divergence**.

Cancelling a parked branch gives its step up at once (trio calls the abort function when
the cancellation is delivered): the core settles it as withdrawn, and a runner still
working on it is cancelled. An execution that ends (the handler returned, the run is
suspended, stopped or taken over) withdraws nothing.

What an execution adds to the run's history (final task outcomes, settlements) is held
and sent before the next new step's side effect, with the run's suspension or outcome,
or after a short linger, whichever comes first.
"""

from __future__ import annotations

import logging
import math
import random
import time
import typing
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Final

import attrs
import outcome
import trio

from ..errors import (
    BlockingTaskError,
    ConflictError,
    ErrorInfo,
    NotFoundError,
    TaskOutputError,
    TaskTimeoutError,
    ValidationError,
    WorkflowNotFoundError,
    error_info,
    is_retryable,
)
from ..protocol import (
    BeginWait,
    HistoryUpdate,
    RecordedChild,
    RecordedTask,
    RecordedWait,
    RecordHistory,
    RecordTask,
    ReportProgress,
    Settled,
    StartChild,
    TaskRecordState,
)
from ..wire import make_wire_converter
from ._branches import Branches, current_branch, enter_root, tracking
from ._gateway import (
    ChildCall,
    Completed,
    Ended,
    ExecutionInterrupted,
    Failed,
    RunGateway,
    RunTakenOver,
    StepCall,
    Suspended,
    TaskCall,
    WaitCall,
)
from ._loops import AsyncioLoop, Attempt
from ._progress import CURRENT_TASK, SEND_EVERY_SECONDS, Reporter
from ._replay import Deliver, Diverge, Idle, NewStep, Replay, Start, Suspend

logger = logging.getLogger("aiki.worker.tasks")
"""Task failures (warnings: a worker logs them at its default level)."""

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator

    from ._replay import Branch, Decision
    from ._task import Task

_CONVERT: Final = make_wire_converter()

HOLD_RESULT_SECONDS: Final = 0.01
"""A completed task's result waits this long for the run's next write to carry it."""


@attrs.define(eq=False)
class _Runner:
    scope: trio.CancelScope = attrs.Factory(trio.CancelScope)


class Execution:
    """One execution of a run's handler (see the module docstring).

    Args:
        run_id: the run.
        revision: the revision this worker's claim gave it (every write carries it).
        replay: the replay core, loaded with the run's history.
        gateway: the way to the server.
        asyncio_loop: where ``loop="asyncio"`` task bodies run (None: a fresh loop).
        rng: the source of retry jitter.
    """

    def __init__(
        self,
        *,
        run_id: str,
        revision: int,
        replay: Replay,
        gateway: RunGateway,
        asyncio_loop: AsyncioLoop | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.run_id = run_id
        self.revision = revision
        self._replay = replay
        self._gateway = gateway
        self._asyncio_loop = asyncio_loop
        self._rng = rng
        self._branches = Branches()
        self._parked: dict[Branch, trio.lowlevel.Task] = {}
        self._calls: dict[Branch, StepCall] = {}
        self._runners: dict[Branch, _Runner] = {}
        self._raised: dict[tuple[str, int], Exception] = {}
        self._unsent_tasks: list[RecordTask] = []
        self._unsent_settled: list[Settled] = []
        self._flushing = trio.Lock()
        self._held = trio.Event()
        self._progress: dict[tuple[str, int], ReportProgress] = {}
        self._progress_ready = trio.Event()
        self._scope = trio.CancelScope()
        self._ended: Ended | None = None
        self._decided: Decision | None = None
        """Decided when the handler's only branch took a step; for the drive loop."""
        self._interrupted: ExecutionInterrupted | None = None

    # -- what branches call -----------------------------------------------------------------------

    async def step(self, address: str, call: StepCall) -> object:
        """Take the step at ``address`` and park this branch until it settles.

        Returns:
            The step's outcome: a `RecordedTask`, a `RecordedChild`, a resolved
            `RecordedWait`, or the `ErrorInfo` of a child start the server refused.

        Raises:
            Exception: the error of a step the server refused in this execution.

        Cancellation: the step is given up (withdrawn: a pending wait takes no event and
        wakes nothing; a task body still running is cancelled).
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        branch = current_branch()
        task = trio.lowlevel.current_task()
        deadline = self._replay.given_up_before(address) and (
            trio.current_effective_deadline() != math.inf
        )  # (walks every enclosing scope)
        self._replay.take(branch, address, deadline=deadline)
        if not self._branches.spawned and self._decided is None:
            # The handler's only branch is taking this step: nothing else can move, so
            # the handler is quiescent now (a recorded outcome comes back at once).
            decision = self._replay.decide()
            if isinstance(decision, Deliver):
                self._note(decision)
                return self._outcome(decision)
            if not isinstance(decision, Idle):
                self._decided = decision  # the drive loop acts on it
        self._parked[branch] = task
        self._calls[branch] = call
        self._branches.poke()

        def abort(_: object) -> trio.lowlevel.Abort:
            self._parked.pop(branch, None)
            self._calls.pop(branch, None)
            if self._ended is None and self._interrupted is None:
                self._decided = None  # (it was about this branch, the only one)
                settled = self._replay.withdraw(branch)
                if settled is not None:
                    self._unsent_settled.append(settled)
                if (runner := self._runners.pop(branch, None)) is not None:
                    runner.scope.cancel()
                self._branches.poke()
            return trio.lowlevel.Abort.SUCCEEDED

        return await trio.lowlevel.wait_task_rescheduled(abort)

    def raised(self, address: str, seq: int) -> Exception | None:
        """The original error of a step that failed in this execution (for tracebacks)."""
        return self._raised.get((address, seq))

    # -- the execution ----------------------------------------------------------------------------

    async def run(self, handler: Callable[[], Awaitable[object]]) -> Ended:
        """Execute ``handler`` until it returns or raises, the run suspends, or replay
        finds it diverged.

        Raises:
            ExecutionInterrupted: the run belongs to another worker now (`RunTakenOver`),
                or the gateway gave up on the server; this execution records nothing more.
        """
        with tracking(self._branches), self._scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._root, handler)
                nursery.start_soon(self._drive)
                nursery.start_soon(self._flush_held)
                nursery.start_soon(self._send_progress)
        if self._interrupted is not None:
            raise self._interrupted
        assert self._ended is not None
        return self._ended

    def take_history(self, *, final: bool = False) -> HistoryUpdate:
        """What the execution added to the history and did not send yet (forgotten now:
        the caller sends it).

        Args:
            final: it goes with the run's outcome (the run is never replayed again, or its
                next attempt replays by address): the order of deliveries is left out.
        """
        settled = self._unsent_settled
        if final:
            settled = [entry for entry in settled if entry.withdrawn or entry.error]
        update = HistoryUpdate(tasks=tuple(self._unsent_tasks), settled=tuple(settled))
        self._unsent_tasks, self._unsent_settled = [], []
        return update

    def _outcome(self, deliver: Deliver) -> object:
        """What a delivery hands its branch: the outcome, or the original error of a step
        the server refused in this execution."""
        original = self._raised.get((deliver.address, deliver.seq))
        if isinstance(deliver.outcome, ErrorInfo) and original is not None:
            raise original
        return deliver.outcome

    def _note(self, deliver: Deliver) -> None:
        """Keep where a delivered step settled, to be stored. A handler that never spawned
        a branch needs no order (its one branch takes its steps in program order, and
        replay delivers them as taken); a refused step's error has no other record."""
        settled = deliver.settled
        if settled is not None and (self._branches.spawned or settled.error is not None):
            self._unsent_settled.append(settled)

    def _end(self, ended: Ended) -> None:
        if self._ended is None and self._interrupted is None:
            self._ended = ended
        self._scope.cancel()

    def _interrupt(self, exc: ExecutionInterrupted) -> None:
        if self._ended is None and self._interrupted is None:
            self._interrupted = exc
        self._scope.cancel()

    async def _root(self, handler: Callable[[], Awaitable[object]]) -> None:
        enter_root(self._branches)
        try:
            value = await handler()
        except Exception as exc:
            self._end(Failed(exc))
        else:
            self._end(Completed(value))

    def _quiescent(self) -> bool:
        if self._branches.spawned:
            return self._branches.runnable == 0
        return self._branches.root is not None and () in self._parked

    async def _drive(self) -> None:
        async with trio.open_nursery() as runners:
            while True:
                await self._branches.wait_poked()
                while self._quiescent():
                    decision, self._decided = self._decided or self._replay.decide(), None
                    if isinstance(decision, Idle):
                        break
                    try:
                        await self._act(decision, runners)
                    except ExecutionInterrupted as exc:
                        self._interrupt(exc)  # (cancels this loop too)
                        break

    async def _act(self, decision: Decision, runners: trio.Nursery) -> None:
        match decision:
            case Deliver():
                task = self._parked.pop(decision.branch)
                self._calls.pop(decision.branch, None)
                self._note(decision)
                trio.lowlevel.reschedule(task, outcome.capture(self._outcome, decision))
            case Start(steps=steps):
                calls = [self._calls[step.branch] for step in steps]
                async with self._flushing:  # a flush under way is stored first
                    history = self.take_history()
                carried = HistoryUpdate()
                if len(steps) == 1 and not isinstance(calls[0], TaskCall):
                    carried = history  # stored with the step, before its effect
                elif history:
                    await self._send_history(history)
                for index, (step, call) in enumerate(zip(steps, calls, strict=True)):
                    runner = self._runners[step.branch] = _Runner()
                    runners.start_soon(self._run_step, step, call, runner,
                                       carried if index == 0 else HistoryUpdate())  # fmt: skip
            case Suspend(waits=waits):
                self._end(Suspended(tuple((w.kind, w.key, w.seq) for w in waits)))
            case Diverge(error=error):
                self._end(Failed(error))
            case Idle():
                pass
            case _:
                typing.assert_never(decision)

    # -- new steps --------------------------------------------------------------------------------

    async def _run_step(
        self, step: NewStep, call: StepCall, runner: _Runner, history: HistoryUpdate
    ) -> None:
        with runner.scope:
            try:
                with _fenced():
                    result = await self._perform(step, call, history)
            except Exception as exc:  # refused (a child's version not registered, ...)
                self._raised[(step.address, step.seq)] = exc
                result = error_info(exc)
            except ExecutionInterrupted as exc:
                self._interrupt(exc)
                return
            finally:
                self._runners.pop(step.branch, None)
            if isinstance(result, RecordedWait) and result.state == "pending":
                self._replay.pending(step.address, step.seq, result)
            else:
                self._replay.arrive(step.address, step.seq, result)
            self._branches.poke()

    async def _perform(self, step: NewStep, call: StepCall, history: HistoryUpdate) -> object:
        match call:
            case TaskCall():
                return await self._execute(call, step)
            case ChildCall(version=version):
                request = StartChild(
                    parent_id=self.run_id, revision=self.revision, address=step.address,
                    seq=step.seq, workflow=version.workflow, version=version.version,
                    input=call.input_json, options=call.options, history=history,
                )  # fmt: skip
                info = await self._gateway.start_child(request)
                return RecordedChild(address=step.address, seq=step.seq, run_id=info.id)
            case WaitCall():
                return await self._gateway.begin_wait(BeginWait(
                    run_id=self.run_id, revision=self.revision, kind=call.kind, key=call.key,
                    seq=step.seq, seconds=call.seconds, history=history,
                ))  # fmt: skip
            case _:
                typing.assert_never(call)

    async def _execute(self, call: TaskCall, step: NewStep) -> RecordedTask:
        task, input_json = call.task, call.input_json
        attempt = step.attempts + 1
        argument = task.input_type.from_json(input_json)
        while True:
            await self._gateway.confirm_claim()
            started = time.perf_counter()
            tried = Attempt(task.name, self.run_id)
            try:
                result = await self._reporting(step, task, argument, tried)
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
                return self._hold(task, step, attempt, "completed", input_json,
                                  output=output_json, took=took)  # fmt: skip
            info = error_info(failure)
            if self._rng is None:  # (seeded from the OS: only when a task fails)
                self._rng = random.Random()
            delay = (task.retry.delay_before(attempt + 1, self._rng)
                     if is_retryable(failure) else None)  # fmt: skip
            if delay is None:
                logger.warning("run %s: task %r failed (attempt %d): %s: %s", self.run_id,
                               task.name, attempt, info.type, info.message,
                               extra={"run_id": self.run_id})  # fmt: skip
                self._raised[(step.address, step.seq)] = failure
                return self._hold(task, step, attempt, "failed", input_json, error=info,
                                  took=took)  # fmt: skip
            logger.warning("run %s: task %r attempt %d failed (%s: %s); retrying in %.3f s",
                           self.run_id, task.name, attempt, info.type, info.message, delay,
                           extra={"run_id": self.run_id})  # fmt: skip
            await self._gateway.record_task(self._record(
                task, step, attempt, "attempt_failed", input_json, error=info, took=took
            ))  # fmt: skip
            await trio.sleep(delay)
            attempt += 1

    def _record(
        self,
        task: Task[Any, Any],
        step: NewStep,
        attempt: int,
        state: TaskRecordState,
        input_json: object,
        *,
        output: object = None,
        error: ErrorInfo | None = None,
        took: float | None = None,
    ) -> RecordTask:
        return RecordTask(
            run_id=self.run_id, revision=self.revision, address=step.address, seq=step.seq,
            name=task.name, attempt=attempt, state=state, input=input_json, output=output,
            error=error, duration_seconds=took,
        )  # fmt: skip

    def _hold(
        self,
        task: Task[Any, Any],
        step: NewStep,
        attempt: int,
        state: typing.Literal["completed", "failed"],
        input_json: object,
        *,
        output: object = None,
        error: ErrorInfo | None = None,
        took: float | None = None,
    ) -> RecordedTask:
        """A final outcome: held until the run's next write (which carries it), so that a
        W1 run completes with one write instead of two; returned as the server will
        record it (so a replay sees the same)."""
        self._unsent_tasks.append(self._record(task, step, attempt, state, input_json,
                                               output=output, error=error, took=took))  # fmt: skip
        self._held.set()
        return RecordedTask(address=step.address, seq=step.seq, name=task.name, state=state,
                            output=output, error=None if error is None else
                            _CONVERT.unstructure(error), attempts=attempt)  # fmt: skip

    async def _reporting(
        self, step: NewStep, task: Task[Any, Any], argument: object, attempt: Attempt
    ) -> object:
        """One attempt, with `aiki.progress` reporting for this task within it; an
        attempt that blocked its loop past the watchdog's limit fails for that."""
        reporter = Reporter(self.report_progress, trio.lowlevel.current_trio_token(),
                            step.address, step.seq, task.name)  # fmt: skip
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

    async def _attempt(self, task: Task[Any, Any], argument: object, attempt: Attempt) -> object:
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

    # -- writes beside the handler ----------------------------------------------------------------

    async def flush(self) -> None:
        """Store what the execution added to the history and did not send yet."""
        async with self._flushing:
            history = self.take_history()
            if history:
                await self._send_history(history)

    async def _send_history(self, history: HistoryUpdate) -> None:
        with _fenced():
            await self._gateway.record_history(
                RecordHistory(run_id=self.run_id, revision=self.revision, history=history)
            )

    async def _flush_held(self) -> None:
        """Store a held result if the run writes nothing of its own within a linger (it
        computes, or waits on something not durable), so that a crash then does not
        repeat a task that finished long ago."""
        while True:
            await self._held.wait()
            self._held = trio.Event()
            await trio.sleep(HOLD_RESULT_SECONDS)
            try:
                await self.flush()
            except ExecutionInterrupted as exc:
                self._interrupt(exc)
                return

    def report_progress(self, address: str, seq: int, task: str, details: object) -> None:
        """Keep a task's latest progress for the progress sender (call from the run's trio
        thread)."""
        self._progress[(address, seq)] = ReportProgress(
            run_id=self.run_id, revision=self.revision, address=address, seq=seq, task=task,
            details=details,
        )  # fmt: skip
        self._progress_ready.set()

    async def _send_progress(self) -> None:
        """Send reported progress, the latest of each task, at most once per interval.
        Best effort: a refused report is dropped, and once the server is out of reach
        progress waits for nobody (the run's own next write learns why)."""
        while True:
            await self._progress_ready.wait()
            self._progress_ready = trio.Event()
            pending, self._progress = self._progress, {}
            for request in pending.values():
                try:
                    await self._gateway.report_progress(request)
                except (ConflictError, NotFoundError):
                    pass
                except ExecutionInterrupted:
                    return
            await trio.sleep(SEND_EVERY_SECONDS)


@contextmanager
def _fenced() -> Iterator[None]:
    """A write refused because the run moved on (another worker owns it) stops this
    execution; an unknown child workflow is the handler's error to catch."""
    try:
        yield
    except WorkflowNotFoundError:
        raise
    except (ConflictError, NotFoundError) as exc:
        raise RunTakenOver(str(exc)) from exc


def _blocking(task: Task[Any, Any], attempt: Attempt) -> BlockingTaskError:
    loop = "the worker's trio loop" if task.loop == "trio" else "its asyncio event loop"
    return BlockingTaskError(
        f"task {task.name!r} blocked {loop} for {attempt.blocked_seconds:.1f} s (at "
        f"{attempt.blocked_at}): an async def task must not block (time.sleep, synchronous "
        "I/O, long computations); use a plain def task for blocking code (it runs in a "
        "thread), or await the call's async form"
    )
