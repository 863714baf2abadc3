"""Run actors: each executes one run at a time, from claim to recorded outcome.

For a stream entry: claim the run through the server (which bumps its revision), run
the version's handler against the run's recorded history (replay), report the outcome
(completed, failed, or awaiting a workflow-level retry), and only then acknowledge the
entry. A write refused as stale means another worker owns the run now: this one stops
without recording anything more.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import typing
from typing import Any, Final, TypeVar

import attrs
import trio

from actors import ActorStoppedError, Address, Backoff
from transport import StreamUnavailableError
from transport.redis_streams import RedisStreams

from ..errors import (
    AikiError,
    ConflictError,
    NotFoundError,
    UnavailableError,
    ValidationError,
    error_info,
    is_retryable,
)
from ..protocol import (
    GROUP,
    QUEUED_RUN,
    BeginWait,
    ClaimRejected,
    ClaimRun,
    Heartbeat,
    HeartbeatAck,
    RecordHistory,
    RecordTask,
    ReportProgress,
    RunClaimed,
    RunInfo,
    StartChild,
    StopRun,
    SuspendRun,
    TransitionRun,
)
from ..sdk import (
    AsyncioLoop,
    Completed,
    Execution,
    ExecutionInterrupted,
    Failed,
    Replay,
    Run,
    RunTakenOver,
    Suspended,
    WorkflowVersion,
)
from ._link import Call, call
from ._messages import ExecuteRun, SlotFreed, SubscriberMsg

P = TypeVar("P")

RETRY: Final = Backoff(initial_seconds=0.05, max_seconds=2.0)
"""Pauses between a run's attempts to reach the server while the link reconnects."""

if typing.TYPE_CHECKING:
    from collections.abc import Iterator

    from ..protocol import RecordedWait, Request

logger = logging.getLogger(__name__)

GIVE_BACK_SECONDS: Final = 5.0
LEASE_MARGIN: Final = 0.25
"""A claim is confirmed with the server once less than this share of its lease is left."""
SLOT_SECONDS: Final = 5.0
"""How long telling the subscriber of a freed slot may wait (its mailbox has room for
every run actor's, so it does not wait unless the subscriber is restarting)."""


@attrs.define
class _Running:
    """One run this worker executes: its cancel scope, why the server stopped it, and
    until when (``trio.current_time``) its claim surely holds."""

    scope: trio.CancelScope = attrs.Factory(trio.CancelScope)
    stopped_because: str | None = None
    lease_until: float = -math.inf

    def stop(self, reason: str) -> None:
        """Cancel this execution; it records nothing more."""
        self.stopped_because = reason
        self.scope.cancel()

    def extend(self, until: float) -> None:
        """The server refreshed the claim: it holds at least until ``until``."""
        self.lease_until = max(self.lease_until, until)


@attrs.define
class _Reservation:
    """A run a run actor took on: the newest revision it knows of, and when it is done."""

    revision: int
    done: trio.Event = attrs.Factory(trio.Event)


@attrs.define
class Executing:
    """The worker's table of what it runs right now (read by the heartbeat, the claimer and
    pushes), and how many run slots are free: a table the worker's tree owns, so it
    outlives the restarts of the actors that use it."""

    free: int
    """Free run slots, counted by the subscriber alone (run actors tell it with messages)."""
    running: dict[str, _Running] = attrs.Factory(dict)
    reserved: dict[str, _Reservation] = attrs.Factory(dict)
    """Runs a run actor has taken on (from before their claim until they are done)."""
    lease_seconds: float | None = None
    """The server's claim timeout, learnt from heartbeat replies."""

    @property
    def run_ids(self) -> tuple[str, ...]:
        """The runs in progress."""
        return tuple(sorted(self.running))

    def snapshot(self) -> dict[str, _Running]:
        """The runs in progress now (for a heartbeat, matched against its reply)."""
        return dict(self.running)

    def stop(self, message: StopRun) -> None:
        """The server stopped this run (cancelled, paused, timed out): cancel its execution."""
        running = self.running.get(message.run_id)
        if running is not None:
            running.stop(message.reason)

    def renew(self, beat: dict[str, _Running], sent_at: float, ack: HeartbeatAck) -> None:
        """Apply a heartbeat's reply: the claims still held last another lease from when
        the beat was sent; a run the server released meanwhile (this worker was presumed
        dead) is stopped here, so it records nothing and runs no further task."""
        if ack.lease_seconds is not None:
            self.lease_seconds = ack.lease_seconds
        held = set(ack.held)
        for run_id, running in beat.items():
            if self.running.get(run_id) is not running:
                continue  # finished (or restarted) since the beat was sent
            if run_id not in held:
                running.stop("claim lost")
            elif self.lease_seconds is not None:
                running.extend(sent_at + self.lease_seconds)


class ServerOutOfReach(ExecutionInterrupted):
    """A run's write got no answer within the call timeout (the server or its database
    stayed down): this execution is abandoned, recording nothing more.

    Not the workflow's failure, so a `BaseException` that user code cannot swallow. The
    run's claim goes stale without heartbeats and the server queues it again.
    """


@attrs.frozen
class ServerCalls:
    """Calls to the server through the link that ride out a reconnecting link.

    Every call a run actor makes is safe to repeat: task records are idempotent, a
    repeated claim by the same worker is granted, and a repeated transition is refused
    as stale, which stops this execution with the run already moved on.
    """

    link: Address[Call[Any]]
    timeout_seconds: float

    async def call(self, request: Request[P]) -> P:
        """Call the server; while the link is down (reconnecting), retry with a jittered
        backoff, for at most ``timeout_seconds`` in all.

        Raises:
            aiki.AikiError: the server's answer was an error.
            trio.TooSlowError: no answer within ``timeout_seconds``.
        """
        delays: Iterator[float] | None = None
        with trio.fail_after(self.timeout_seconds):
            while True:
                try:
                    return await call(self.link, request)
                except UnavailableError:
                    delays = delays or RETRY.delays(random.Random())
                    await trio.sleep(next(delays))


class _LinkGateway:
    """A run's way to the server: the run actor's retrying calls."""

    def __init__(
        self,
        server: ServerCalls,
        worker_id: str,
        run_id: str,
        running: _Running,
        executing: Executing,
    ) -> None:
        self._server = server
        self._worker_id = worker_id
        self._run_id = run_id
        self._running = running
        self._executing = executing

    async def confirm_claim(self) -> None:
        """Before a task body runs: unless the lease surely holds (with a margin), ask the
        server. A process paused past the claim timeout (SIGSTOP, a long GC, a VM pause)
        must not run a task another worker may already have recorded."""
        lease = self._executing.lease_seconds
        margin = LEASE_MARGIN * lease if lease is not None else 0.0
        if trio.current_time() < self._running.lease_until - margin:
            return
        sent_at = trio.current_time()
        beat = {self._run_id: self._running}
        ack = await self._write(Heartbeat(worker_id=self._worker_id, run_ids=(self._run_id,)))
        self._executing.renew(beat, sent_at, ack)
        if self._run_id not in ack.held:
            raise RunTakenOver(f"run {self._run_id}: this worker's claim lapsed")

    async def _write(self, request: Request[P]) -> P:
        try:
            return await self._server.call(request)
        except (UnavailableError, trio.TooSlowError) as exc:
            raise ServerOutOfReach(f"no answer from the server: {exc!r}") from exc

    async def record_task(self, request: RecordTask) -> None:
        await self._write(request)

    async def record_history(self, request: RecordHistory) -> None:
        await self._write(request)

    async def report_progress(self, request: ReportProgress) -> None:
        await self._write(request)

    async def begin_wait(self, request: BeginWait) -> RecordedWait:
        return await self._write(request)

    async def start_child(self, request: StartChild) -> RunInfo:
        return (await self._write(request)).run


@attrs.define
class RunActor:
    """Actor: executes runs handed over by the subscriber, one at a time."""

    worker_id: str
    versions: dict[tuple[str, str], WorkflowVersion[typing.Any, typing.Any]]
    link: Address[Call[Any]]
    streams: RedisStreams
    executing: Executing
    subscriber: Address[SubscriberMsg]
    """Told each time this actor is done with a run it was handed (its slot is free)."""
    call_timeout_seconds: float = 30.0
    asyncio_loop: AsyncioLoop | None = None
    """Where ``loop="asyncio"`` task bodies run (None: a fresh loop per attempt)."""
    _server: ServerCalls = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._server = ServerCalls(self.link, self.call_timeout_seconds)

    async def run(
        self,
        inbox: trio.MemoryReceiveChannel[ExecuteRun],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Execute runs until the mailbox closes (the current one finishes first)."""
        task_status.started()
        async for message in inbox:
            try:
                await self._execute(message)
            except (UnavailableError, trio.TooSlowError, ServerOutOfReach) as exc:
                # The server stayed out of reach: leave the entry unacknowledged. The claim
                # sweeper queues the run again and XAUTOCLAIM recovers the entry.
                logger.warning("could not finish a run (%s); it will be recovered", exc)
            finally:
                # Shielded: a slot must not be lost because this actor is being cancelled.
                # Stopping: nobody hands out work any more.
                with (
                    trio.move_on_after(SLOT_SECONDS, shield=True),
                    contextlib.suppress(ActorStoppedError),
                ):
                    await self.subscriber.send(SlotFreed())

    async def _execute(self, message: ExecuteRun) -> None:
        entry = message.entry
        if entry is not None:
            queued = QUEUED_RUN.decode(entry.payload)
            run_id, revision = queued.run_id, queued.revision
        else:
            assert message.claim is not None
            run_id, revision = message.claim.run.id, message.claim.run.revision
        # One execution of a run per worker. Another entry for a run executing here is
        # either a duplicate (redelivered, or taken over from a dead consumer: its revision
        # is not newer) and is dropped, or the run queued again since (a wait was resolved
        # as it suspended): that one runs once the current execution is over.
        while (current := self.executing.reserved.get(run_id)) is not None:
            if revision <= current.revision:
                logger.info("run %s is already executing here; duplicate entry dropped",
                            run_id, extra={"run_id": run_id})  # fmt: skip
                break
            await current.done.wait()
        else:
            reservation = self.executing.reserved[run_id] = _Reservation(revision)
            try:
                await self._claim_and_run(message, run_id, reservation)
            finally:
                del self.executing.reserved[run_id]
                reservation.done.set()
        # Acknowledged only now: the outcome is recorded (or the entry was stale).
        if entry is not None:
            with contextlib.suppress(StreamUnavailableError):  # XAUTOCLAIM cleans up later
                await self.streams.ack(entry.stream, GROUP, [entry.entry_id], delete=True)

    async def _claim_and_run(
        self, message: ExecuteRun, run_id: str, reservation: _Reservation
    ) -> None:
        claim: RunClaimed | ClaimRejected | None = message.claim
        # Claimed through the server: the lease counts from before the claim was asked
        # for, if known; otherwise the claim is confirmed before the first task.
        claimed_at = -math.inf if message.claimed_after is None else message.claimed_after
        if message.entry is not None:
            claimed_at = trio.current_time()
            try:
                claim = await self._server.call(ClaimRun(run_id=run_id, worker_id=self.worker_id))
            except NotFoundError:
                logger.warning("stream entry for unknown run %s dropped", run_id)
                claim = None
        if not isinstance(claim, RunClaimed):
            logger.debug("run not claimed: %s", claim and claim.reason)
        else:
            reservation.revision = claim.run.revision
            try:
                await self._run_claimed(claim, claimed_at)
            except (RunTakenOver, ConflictError, NotFoundError) as exc:
                # Fenced out: another owner holds the run now. Record nothing more.
                logger.warning("run %s was taken over; stopping this execution: %s",
                               claim.run.id, exc, extra={"run_id": claim.run.id})  # fmt: skip

    async def _run_claimed(self, claim: RunClaimed, claimed_at: float) -> None:
        info = claim.run
        version = self.versions[(info.workflow, info.version)]
        running = self.executing.running[info.id] = _Running()
        if self.executing.lease_seconds is not None:
            running.extend(claimed_at + self.executing.lease_seconds)
        try:
            with running.scope:
                outcome = await self._run_handler(version, claim, running)
        except BaseException as exc:
            if isinstance(exc, ExecutionInterrupted):
                raise  # fenced out or out of reach: nothing to give back
            # Cancelled from outside (shutdown past its grace): give the run back at once.
            give_back = TransitionRun(run_id=info.id, revision=info.revision, status="queued",
                                      reason="worker stopped")  # fmt: skip
            with trio.move_on_after(GIVE_BACK_SECONDS, shield=True), contextlib.suppress(AikiError):
                await self._server.call(give_back)
            raise
        finally:
            del self.executing.running[info.id]
        if running.stopped_because is not None:
            level = logging.WARNING if running.stopped_because == "claim lost" else logging.INFO
            logger.log(level, "run %s stopped by the server (%s)", info.id,
                       running.stopped_because, extra={"run_id": info.id})  # fmt: skip
            return
        await self._server.call(outcome)

    async def _run_handler(
        self,
        version: WorkflowVersion[typing.Any, typing.Any],
        claim: RunClaimed,
        running: _Running,
    ) -> TransitionRun | SuspendRun:
        info = claim.run
        try:
            input_value = version.input_type.from_json(info.input)
        except ValidationError as exc:
            return self._failure(version, info, exc)
        replay = Replay([*claim.waits, *claim.children, *claim.tasks], claim.settled,
                        claim.task_attempts)  # fmt: skip
        execution = Execution(
            run_id=info.id, revision=info.revision, replay=replay,
            gateway=_LinkGateway(self._server, self.worker_id, info.id, running, self.executing),
            asyncio_loop=self.asyncio_loop,
        )  # fmt: skip
        run = Run[typing.Any](
            execution=execution, workflow=info.workflow, version=info.version,
            attempt=info.attempt, input_value=input_value, events=version.events,
            schedule_id=info.schedule_id, occurrence=info.occurrence,
        )  # fmt: skip
        args = (run, input_value) if version.takes_input else (run,)

        async def handler() -> object:
            return await version.handler(*args)

        ended = await execution.run(handler)
        unawaited = run.unawaited_error()  # closes steps made and never awaited
        match ended:
            case Suspended(blocked_on=blocked_on):
                return SuspendRun(run_id=info.id, revision=info.revision, blocked_on=blocked_on,
                                  history=execution.take_history())  # fmt: skip
            case Completed(value=value) if unawaited is None:
                try:
                    output = version.output_type.to_json(value)
                except ValidationError as exc:
                    transition = self._failure(version, info, exc)
                else:
                    transition = TransitionRun(
                        run_id=info.id, revision=info.revision, status="completed",
                        output=output, reason="completed",
                    )  # fmt: skip
            case Completed():
                assert unawaited is not None
                transition = self._failure(version, info, unawaited)
            case Failed(error=error):
                transition = self._failure(version, info, unawaited or error)
        return attrs.evolve(transition, history=execution.take_history(final=True))

    def _failure(
        self, version: WorkflowVersion[typing.Any, typing.Any], info: RunInfo, exc: Exception
    ) -> TransitionRun:
        details = error_info(exc)
        # A payload that does not fit its type fails the same way on every attempt.
        retryable = is_retryable(exc) and not isinstance(exc, ValidationError)
        policy = info.retry or version.retry
        delay = policy.delay_before(info.attempt + 1) if retryable else None
        if delay is not None:
            logger.warning(
                "run %s attempt %d failed (%s); retrying in %.3f s",
                info.id,
                info.attempt,
                details.message,
                delay,
                extra={"run_id": info.id},
            )
            return TransitionRun(
                run_id=info.id,
                revision=info.revision,
                status="awaiting_retry",
                error=details,
                retry_delay_seconds=delay,
                reason="retry",
            )
        logger.warning("run %s of %s@%s failed: %s: %s", info.id, info.workflow, info.version,
                       details.type, details.message, extra={"run_id": info.id})  # fmt: skip
        return TransitionRun(
            run_id=info.id, revision=info.revision, status="failed", error=details, reason="failed"
        )
