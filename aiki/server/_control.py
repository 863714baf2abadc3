"""Operations on durable waits, events, child runs and run control.

Extends `Operations` with the requests of the durable-waits protocol. Control that stops
a run a worker is executing (cancel, pause, run timeout) commits first (the revision
bump fences the worker), then pushes `StopRun` over that worker's WebSocket session so
the run's cancel scope is cancelled at once instead of at its next write.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Final

from .._protocol import (
    BeginWait,
    CancelRun,
    ClaimedRuns,
    ClaimNext,
    EventSent,
    GetRun,
    Heartbeat,
    HeartbeatAck,
    PauseRun,
    ResumeRun,
    RunsStopped,
    RunStarted,
    RunTransitioned,
    SendEvent,
    StartChild,
    StartRun,
    StopRun,
    SuspendRun,
    WakeupRun,
    WokenUp,
)
from .._replay import RecordedWait, canonical_json
from .._states import TERMINAL
from ..errors import (
    BadRequestError,
    InvalidTransitionError,
    NotFoundError,
    RunNotFoundError,
    ValidationError,
)
from . import _store, _store_recovery, _store_waits
from ._operations import Operations, _path

if TYPE_CHECKING:
    from actors import Address
    from transport import PostgresStore, Transaction

    from .._protocol import RunInfo
    from ._committer import Commit

logger = logging.getLogger(__name__)

Push = Callable[[StopRun], Awaitable[None]]

MAX_WAIT_SECONDS: Final = 10 * 365 * 86400.0


class Sessions:
    """Worker WebSocket sessions by worker ID, for pushes."""

    def __init__(self) -> None:
        self._pushes: dict[str, Push] = {}

    def attach(self, worker_id: str, push: Push) -> None:
        """Route pushes for ``worker_id`` to this session."""
        self._pushes[worker_id] = push

    def detach(self, worker_id: str, push: Push) -> None:
        """Forget the session (unless another one took over the worker ID)."""
        if self._pushes.get(worker_id) is push:
            del self._pushes[worker_id]

    async def push(self, worker_id: str | None, message: StopRun) -> None:
        """Send ``message`` to the worker if it is connected here; best effort."""
        push = self._pushes.get(worker_id) if worker_id else None
        if push is None:
            return  # fencing still stops it at its next write
        try:
            await push(message)
        except Exception:  # a dying session; the revision bump fences the worker anyway
            logger.debug("push to worker %s failed", worker_id, exc_info=True)


class ControlOperations(Operations):
    """`Operations` plus waits, events, child runs and control."""

    def __init__(
        self,
        store: PostgresStore,
        *,
        on_queued: Callable[[], None] = lambda: None,
        on_deadline: Callable[[dt.datetime], None] = lambda _when: None,
        lease_seconds: float | None = None,
        committer: Address[Commit[object]] | None = None,
    ) -> None:
        super().__init__(store, on_queued=on_queued, on_deadline=on_deadline,
                         committer=committer)  # fmt: skip
        self.sessions = Sessions()
        self.lease_seconds = lease_seconds
        """The claim timeout, told to workers so they stop a run before it is released."""

    async def handle(self, request: object, *, worker_id: str | None = None) -> object:
        """Carry out one decoded request (see `Operations.handle`)."""
        match request:
            case BeginWait():
                return await self.begin_wait(request)
            case SuspendRun():
                return await self.suspend_run(request)
            case SendEvent():
                return await self.send_event(request)
            case StartChild():
                return await self.start_child(request)
            case CancelRun():
                return await self.cancel_run(request)
            case PauseRun():
                return await self.pause_run(request)
            case ResumeRun():
                return await self.resume_run(request)
            case WakeupRun():
                return await self.wakeup_run(request)
            case ClaimNext():
                return await self.claim_next(request)
            case Heartbeat():
                return await self.heartbeat(request)
            case _:
                return await super().handle(request, worker_id=worker_id)

    # -- waits ---------------------------------------------------------------------------------

    async def begin_wait(self, request: BeginWait) -> RecordedWait:
        """Record a wait the run reached (resolved at once if possible), fenced."""
        if request.seconds is not None and not 0 <= request.seconds <= MAX_WAIT_SECONDS:
            raise BadRequestError("a wait's seconds must be within 0 .. 10 years")
        if request.seq < 0:
            raise BadRequestError("seq starts at 0")
        run_id = self._run_uuid(request.run_id)
        try:
            record = await self.transact(lambda tx: _store_waits.begin_wait(tx, request, run_id))
        except LookupError as exc:
            raise BadRequestError(str(exc)) from None
        if record is None:
            raise await self._fenced_out(run_id, request.run_id, request.revision)
        if record.state == "pending" and request.seconds is not None:
            self._on_deadline(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=request.seconds))
        return record

    async def suspend_run(self, request: SuspendRun) -> RunTransitioned:
        """Suspend a run whose branches all wait (or queue it if a wait was just resolved)."""
        run_id = self._run_uuid(request.run_id)
        blocked: list[tuple[str, str, int]] = [
            (str(kind), key, seq) for kind, key, seq in request.blocked_on
        ]
        moved = await self.transact(
            lambda tx: _store_waits.suspend(tx, run_id, request.revision, blocked)
        )
        if moved is None:
            raise await self._fenced_out(run_id, request.run_id, request.revision)
        self.notifier.notify(request.run_id)
        if moved.status == "queued":
            self._on_queued()
        return RunTransitioned(run_id=moved.id, status=moved.status, revision=moved.revision)

    # -- events --------------------------------------------------------------------------------

    async def send_event(self, request: SendEvent) -> EventSent:
        """Deliver an event (validated against the version's declared payload type)."""
        run_id = self._run_uuid(request.run_id)

        def send(tx: Transaction) -> _store_waits.EventOutcome:
            found = _store_waits.lock_run(tx, run_id)
            if found is None:
                raise RunNotFoundError(f"no run with ID {request.run_id!r}")
            workflow, version, status = found
            self._check_event(workflow, version, request.name, request.payload)
            if status in TERMINAL:
                raise InvalidTransitionError(
                    f"run {request.run_id} is {status}; it takes no more events"
                )
            return _store_waits.send_event(
                tx, run_id, request.name, request.payload, request.reference_id
            )

        outcome = await self.transact(send)
        if outcome.requeued:
            self.notifier.notify(request.run_id)
            self._on_queued()
        return EventSent(run_id=request.run_id, name=request.name, seq=outcome.seq,
                         duplicate=outcome.duplicate)  # fmt: skip

    def _check_event(self, workflow: str, version: str, name: str, payload: object) -> None:
        events = self._event_validators.get((workflow, version), {})
        if name not in events:
            declared = ", ".join(sorted(events)) or "none"
            raise NotFoundError(
                f"{workflow}@{version} declares no event {name!r} (declared: {declared})"
            )
        validator = events[name]
        if validator is None:
            return
        problems = list(validator.iter_errors(payload))  # type: ignore[arg-type]
        if problems:
            errors = tuple(f"{p.message} @ {_path(p)}" for p in problems)
            raise ValidationError(
                f"payload of event {name!r} does not match its type: " + "; ".join(errors),
                errors=errors,
            )

    # -- child runs ----------------------------------------------------------------------------

    async def start_child(self, request: StartChild) -> RunStarted:
        """Start (or find) the child run of a parent's step, fenced by the parent's revision."""
        await self._check_input(request.workflow, request.version, request.input)
        parent_id = self._run_uuid(request.parent_id)
        options = request.options
        input_hash = hashlib.sha256(canonical_json(request.input)).hexdigest()
        run_id = _store.new_run_id()

        def start(tx: Transaction) -> RunStarted | None:
            if not _store_waits._owner(tx, parent_id, request.revision):
                return None
            existing = tx.fetch_one(
                f"SELECT {_store.RUN_COLUMNS} FROM aiki_runs"
                " WHERE parent_id = %s AND child_address = %s AND child_seq = %s",
                (parent_id, request.address, request.seq),
            )
            if existing is not None:
                return RunStarted(run=_store.run_info(existing), created=False)
            as_start = StartRun(workflow=request.workflow, version=request.version,
                                input=request.input, options=request.options)  # fmt: skip
            if options.reference_id is not None and (
                found := self._existing(tx, as_start, input_hash)
            ):
                return found
            created = _store.insert_run(
                tx, run_id=run_id, workflow=request.workflow, version=request.version,
                input_json=request.input, input_hash=input_hash, options=options,
                parent_id=parent_id, child_address=request.address, child_seq=request.seq,
            )  # fmt: skip
            if created is None:  # a racing start took the reference ID
                found = self._existing(tx, as_start, input_hash)
                assert found is not None
                return found
            return RunStarted(run=created, created=True)

        started = await self.transact(start)
        if started is None:
            raise await self._fenced_out(parent_id, request.parent_id, request.revision)
        if started.created:
            self.after_start(started.run)
        return started

    # -- control -------------------------------------------------------------------------------

    async def stop_all(self, stopped: list[_store_waits.Stopped], reason: str) -> None:
        """Wake waiters on the stopped runs and push a stop to the workers running them."""
        for run in stopped:
            self.notifier.notify(run.run_id)
            if run.from_status == "running":
                await self.sessions.push(run.worker_id, StopRun(run_id=run.run_id, reason=reason))

    async def cancel_run(self, request: CancelRun) -> RunsStopped:
        """Cancel a run and all its non-terminal descendants."""
        run_id = self._run_uuid(request.run_id)
        stopped = await self.transact(
            lambda tx: _store_waits.cancel_tree(tx, run_id, request.reason)
        )
        if not stopped or stopped[0].run_id != request.run_id:
            current = await self.get_run(GetRun(run_id=request.run_id))
            raise InvalidTransitionError(f"run {request.run_id} is {current.status} already")
        self.metrics.runs_cancelled.inc(len(stopped))
        await self.stop_all(stopped, "cancelled")
        self._on_queued()  # parents waiting on these runs may have been queued
        return RunsStopped(run_id=request.run_id, status="cancelled",
                           affected=tuple(run.run_id for run in stopped))  # fmt: skip

    async def pause_run(self, request: PauseRun) -> RunsStopped:
        """Pause a run; a running one is stopped and resumes later from its history."""
        run_id = self._run_uuid(request.run_id)
        stopped = await self.transact(lambda tx: _store_waits.pause(tx, run_id, request.reason))
        if stopped is None:
            current = await self.get_run(GetRun(run_id=request.run_id))
            allowed = ", ".join(_store_waits.PAUSABLE)
            raise InvalidTransitionError(
                f"run {request.run_id} is {current.status}; only {allowed} runs can be paused"
            )
        await self.stop_all([stopped], "paused")
        return RunsStopped(run_id=request.run_id, status="paused", affected=(request.run_id,))

    async def resume_run(self, request: ResumeRun) -> RunTransitioned:
        """Queue a paused run again."""
        run_id = self._run_uuid(request.run_id)
        moved: RunInfo | None = await self.transact(lambda tx: _store_waits.resume(tx, run_id))
        if moved is None:
            current = await self.get_run(GetRun(run_id=request.run_id))
            raise InvalidTransitionError(f"run {request.run_id} is {current.status}, not paused")
        self.notifier.notify(request.run_id)
        self._on_queued()
        return RunTransitioned(run_id=moved.id, status=moved.status, revision=moved.revision)

    async def heartbeat(self, request: Heartbeat) -> HeartbeatAck:
        """The worker is alive: refresh the claims of the runs it holds."""
        run_ids = [run_id for run_id in request.run_ids if _store.parse_run_id(run_id)]
        held = await self.transact(
            lambda tx: _store_recovery.refresh_claims(tx, request.worker_id, run_ids)
        )
        if held is None:
            raise NotFoundError(f"worker {request.worker_id!r} is not registered")
        return HeartbeatAck(
            worker_id=request.worker_id, held=tuple(held), lease_seconds=self.lease_seconds
        )

    async def claim_next(self, request: ClaimNext) -> ClaimedRuns:
        """Give the worker queued runs it serves (the pull path while Redis is down)."""
        if not 1 <= request.limit <= 1000:
            raise BadRequestError("limit must be within 1..1000")
        claims = await self.transact(
            lambda tx: _store_recovery.claim_next(tx, request.worker_id, request.limit)
        )
        for claim in claims:
            self.notifier.notify(claim.run.id)
        return ClaimedRuns(claims=tuple(claims))

    async def wakeup_run(self, request: WakeupRun) -> WokenUp:
        """Cut the run's pending sleeps short."""
        run_id = self._run_uuid(request.run_id)
        await self.get_run(GetRun(run_id=request.run_id))  # RunNotFoundError if unknown
        count = await self.transact(lambda tx: _store_waits.wakeup(tx, run_id))
        if count:
            self.notifier.notify(request.run_id)
            self._on_queued()
        return WokenUp(run_id=request.run_id, sleeps=count)
