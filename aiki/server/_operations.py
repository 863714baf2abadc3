"""What each server operation does: validate, run one transaction, report, notify.

Both carriers (HTTP and the WebSocket session) decode a request and call
`Operations.handle`; errors are `aiki.errors` exceptions that the carriers turn into
an error reply with the matching code and HTTP status.
"""

from __future__ import annotations

import hashlib
import logging
from typing import TYPE_CHECKING, Final, TypeVar

import jsonschema
import trio

from transport import StorageError, StorageUnavailableError

from .._protocol import (
    MAX_WAIT_SECONDS,
    ClaimRejected,
    ClaimRun,
    GetRun,
    Heartbeat,
    HeartbeatAck,
    ListRuns,
    ProgressReported,
    RecordTask,
    RegisterWorker,
    ReportProgress,
    RequeueRun,
    RunClaimed,
    RunInfo,
    RunPage,
    RunStarted,
    RunTransitioned,
    StartRun,
    TaskRecorded,
    TransitionRun,
    WaitRun,
    WorkerRegistered,
)
from .._protocol_views import DescribeRun, ListWorkers, RunDetails, WorkerList
from .._replay import canonical_json
from .._states import ALL_STATUSES, TERMINAL, can_transition
from ..errors import (
    AikiError,
    BadRequestError,
    InvalidTransitionError,
    NotFoundError,
    ReferenceConflictError,
    RunNotFoundError,
    StaleRevisionError,
    UnavailableError,
    ValidationError,
    WorkflowNotFoundError,
)
from . import _committer, _store, _store_updates, _store_views, _store_waits
from ._metrics import ServerMetrics

if TYPE_CHECKING:
    import datetime as dt
    import uuid
    from collections.abc import Callable

    from actors import Address
    from transport import PostgresStore, Transaction

    from ._committer import Commit

T = TypeVar("T")

logger = logging.getLogger(__name__)

WORKER_TRANSITIONS: Final = frozenset({"completed", "failed", "awaiting_retry", "queued"})
"""Where a worker may move the run it holds (more arrive with durable waits)."""

WAIT_RECHECK_SECONDS: Final = 5.0
"""A long-poll re-reads the run this often, for changes made by other server instances."""

MAX_PAGE: Final = 500


class RunNotifier:
    """Wakes long-poll waiters when this server changes a run."""

    def __init__(self) -> None:
        self._events: dict[str, trio.Event] = {}
        self.on_change: Callable[[], None] = lambda: None
        """Called at every change (the server pokes its broadcaster)."""

    def event_for(self, run_id: str) -> trio.Event:
        """An event set at the next change of ``run_id``; take it *before* reading the run."""
        return self._events.setdefault(run_id, trio.Event())

    def notify(self, run_id: str) -> None:
        """The run changed (call after the transaction committed)."""
        self.on_change()
        event = self._events.pop(run_id, None)
        if event is not None:
            event.set()


def _path(error: jsonschema.ValidationError) -> str:
    path = "$"
    for part in error.absolute_path:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


class Operations:
    """The server's operations over one `PostgresStore`.

    Args:
        on_queued: called after a commit that queued runs (wakes the dispatcher).
        on_retry_scheduled: called with the delay after a run starts waiting for a retry.
        committer: runs the operations' transactions in batches (group commit); without
            one, each runs on its own.
    """

    def __init__(
        self,
        store: PostgresStore,
        *,
        on_queued: Callable[[], None] = lambda: None,
        on_deadline: Callable[[dt.datetime], None] = lambda _when: None,
        committer: Address[Commit[object]] | None = None,
    ) -> None:
        self.store = store
        self.committer = committer
        self.metrics = ServerMetrics()
        self.notifier = RunNotifier()
        self._on_queued = on_queued
        self._on_deadline = on_deadline
        self._validators: dict[tuple[str, str], jsonschema.protocols.Validator | None] = {}
        self._event_validators: dict[
            tuple[str, str], dict[str, jsonschema.protocols.Validator | None]
        ] = {}

    async def transact(self, work: Callable[[Transaction], T], *, alone: bool = False) -> T:
        """Run ``work`` in a transaction, with storage errors mapped to Aiki errors; through
        the committer if there is one, unless ``alone`` (before the committer runs)."""
        try:
            if self.committer is not None and not alone:
                return await _committer.transact(self.committer, work)
            return await self.store.transact(work)
        except StorageUnavailableError as exc:
            raise UnavailableError(f"storage unavailable, retry later: {exc}") from exc
        except StorageError as exc:
            if exc.retryable:
                raise UnavailableError(f"storage busy, retry: {exc}") from exc
            raise

    async def load_registry(self) -> None:
        """Load the registered workflow versions (at startup, and on a cache miss)."""
        versions = await self.transact(_store.registered_versions, alone=True)
        for key, (schema, events) in versions.items():
            self._remember(key, schema, events)

    def _remember(self, key: tuple[str, str], schema: object, events: object) -> None:
        self._validators[key] = self._validator(schema)
        event_schemas = events if isinstance(events, dict) else {}
        self._event_validators[key] = {
            name: self._validator(event_schema) for name, event_schema in event_schemas.items()
        }

    @staticmethod
    def _validator(schema: object) -> jsonschema.protocols.Validator | None:
        if not isinstance(schema, dict):
            return None
        return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())

    async def handle(self, request: object, *, worker_id: str | None = None) -> object:
        """Carry out one decoded request and return its reply.

        Raises:
            AikiError: a subclass whose ``code`` and ``http_status`` describe the failure.
        """
        match request:
            case StartRun():
                return await self.start_run(request)
            case GetRun():
                return await self.get_run(request)
            case ListRuns():
                return await self.list_runs(request)
            case WaitRun():
                return await self.wait_run(request)
            case RegisterWorker():
                return await self.register_worker(request)
            case ClaimRun():
                return await self.claim_run(request)
            case RecordTask():
                return await self.record_task(request)
            case TransitionRun():
                return await self.transition_run(request, worker_id)
            case Heartbeat():
                return await self.heartbeat(request)
            case RequeueRun():
                return await self.requeue_run(request)
            case ReportProgress():
                return await self.report_progress(request)
            case DescribeRun():
                return await self.describe_run(request)
            case ListWorkers():
                return await self.list_workers(request)
            case _:
                raise BadRequestError(f"unknown request {type(request).__name__}")

    # -- starting and reading runs -------------------------------------------------------------

    async def _check_input(self, workflow: str, version: str, input_json: object) -> None:
        key = (workflow, version)
        if key not in self._validators:
            await self.load_registry()
        if key not in self._validators:
            raise WorkflowNotFoundError(
                f"workflow {workflow!r} version {version!r} is not registered: start a worker "
                "that serves it before starting runs"
            )
        validator = self._validators[key]
        if validator is None:
            return
        found = validator.iter_errors(input_json)  # type: ignore[arg-type]
        problems = sorted(found, key=lambda error: [str(part) for part in error.absolute_path])
        if problems:
            errors = tuple(f"{problem.message} @ {_path(problem)}" for problem in problems)
            raise ValidationError(
                f"input of {workflow}@{version} does not match its type: " + "; ".join(errors),
                errors=errors,
            )

    async def start_run(self, request: StartRun) -> RunStarted:
        """Validate the input against the version's schema and create the run (idempotently)."""
        await self._check_input(request.workflow, request.version, request.input)
        options = request.options
        input_hash = hashlib.sha256(canonical_json(request.input)).hexdigest()
        run_id = _store.new_run_id()

        def start(tx: Transaction) -> RunStarted:
            if options.reference_id is not None and (
                existing := self._existing(tx, request, input_hash)
            ):
                return existing
            created = _store.insert_run(
                tx,
                run_id=run_id,
                workflow=request.workflow,
                version=request.version,
                input_json=request.input,
                input_hash=input_hash,
                options=options,
            )
            if created is not None:
                return RunStarted(run=created, created=True)
            # Another start with this reference ID committed in between.
            existing = self._existing(tx, request, input_hash)
            assert existing is not None
            return existing

        started: RunStarted = await self.transact(start)
        if started.created:
            self.after_start(started.run)
        return started

    def after_start(self, run: RunInfo) -> None:
        """Wake the dispatcher (queued) or the timers (scheduled start, run deadline)."""
        self.metrics.runs_started.labels(run.workflow).inc()
        if run.status == "queued":
            self._on_queued()
        for when in (run.wake_at, run.deadline_at):
            if when is not None:
                self._on_deadline(when)

    @staticmethod
    def _existing(tx: Transaction, request: StartRun, input_hash: str) -> RunStarted | None:
        reference_id = request.options.reference_id
        assert reference_id is not None
        found = _store.find_by_reference(tx, request.workflow, request.version, reference_id)
        if found is None:
            return None
        run, existing_hash = found
        if request.options.conflict == "error" and existing_hash != input_hash:
            raise ReferenceConflictError(
                f"a run of {request.workflow}@{request.version} with reference ID "
                f"{reference_id!r} exists with a different input (run {run.id})",
                run_id=run.id,
            )
        return RunStarted(run=run, created=False)

    def _run_uuid(self, run_id: str) -> uuid.UUID:
        parsed = _store.parse_run_id(run_id)
        if parsed is None:
            raise RunNotFoundError(f"no run with ID {run_id!r}")
        return parsed

    async def report_progress(self, request: ReportProgress) -> ProgressReported:
        """Keep a running task's latest progress (pushed to subscribers that ask)."""
        run_id = self._run_uuid(request.run_id)
        written = await self.transact(
            lambda tx: _store_updates.report_progress(tx, request, run_id)
        )
        if not written:
            raise await self._fenced_out(run_id, request.run_id, request.revision)
        self.notifier.on_change()
        return ProgressReported(run_id=request.run_id)

    async def describe_run(self, request: DescribeRun) -> RunDetails:
        """A run with its tasks, their failed attempts, and its timeline."""
        run_id = self._run_uuid(request.run_id)
        details = await self.transact(lambda tx: _store_views.describe_run(tx, run_id))
        if details is None:
            raise RunNotFoundError(f"no run with ID {request.run_id!r}")
        return details

    async def list_workers(self, request: ListWorkers) -> WorkerList:
        """The registered workers (alive ones, unless ``include_gone``)."""
        workers = await self.transact(
            lambda tx: _store_views.list_workers(tx, include_gone=request.include_gone)
        )
        return WorkerList(workers=tuple(workers))

    async def get_run(self, request: GetRun) -> RunInfo:
        """Find a run by ID or by reference ID."""
        if request.run_id is not None:
            run_id = self._run_uuid(request.run_id)
            run: RunInfo | None = await self.transact(lambda tx: _store.get_run(tx, run_id))
            if run is None:
                raise RunNotFoundError(f"no run with ID {request.run_id!r}")
            return run
        if request.workflow and request.version and request.reference_id:
            workflow, version, reference_id = (
                request.workflow,
                request.version,
                request.reference_id,
            )
            found = await self.transact(
                lambda tx: _store.find_by_reference(tx, workflow, version, reference_id)
            )
            if found is None:
                raise RunNotFoundError(
                    f"no run of {workflow}@{version} with reference ID {reference_id!r}"
                )
            return found[0]
        raise BadRequestError(
            "get_run needs run_id, or workflow, version and reference_id together",
            errors=("missing @ $.run_id",),
        )

    async def list_runs(self, request: ListRuns) -> RunPage:
        """A page of runs, newest first."""
        if not 1 <= request.limit <= MAX_PAGE:
            raise BadRequestError(f"limit must be within 1..{MAX_PAGE}", errors=("@ $.limit",))
        runs, cursor = await self.transact(
            lambda tx: _store.list_runs(
                tx,
                workflow=request.workflow,
                version=request.version,
                statuses=request.statuses,
                limit=request.limit,
                cursor=request.cursor,
            )
        )
        return RunPage(runs=tuple(runs), next_cursor=cursor)

    async def wait_run(self, request: WaitRun) -> RunInfo:
        """Reply when the run reaches one of the statuses (or any terminal one), or on timeout."""
        if not 0 <= request.timeout_seconds <= MAX_WAIT_SECONDS:
            raise BadRequestError(
                f"timeout_seconds must be within 0..{MAX_WAIT_SECONDS:g}",
                errors=("@ $.timeout_seconds",),
            )
        wanted = set(request.statuses) | TERMINAL
        get = GetRun(run_id=request.run_id)
        with trio.move_on_after(request.timeout_seconds):
            while True:
                changed = self.notifier.event_for(request.run_id)
                run = await self.get_run(get)
                if run.status in wanted:
                    return run
                with trio.move_on_after(WAIT_RECHECK_SECONDS):
                    await changed.wait()
        return await self.get_run(get)

    # -- workers -------------------------------------------------------------------------------

    async def register_worker(self, request: RegisterWorker) -> WorkerRegistered:
        """Record a worker and the versions it serves; their schemas validate future starts."""
        for spec in request.versions:
            for schema in (spec.input_schema, *spec.event_schemas.values()):
                if schema is None:
                    continue
                try:
                    jsonschema.Draft202012Validator.check_schema(schema)  # type: ignore[arg-type]
                except jsonschema.SchemaError as exc:
                    raise BadRequestError(
                        f"invalid schema for {spec.workflow}@{spec.version}: {exc.message}"
                    ) from None
        await self.transact(
            lambda tx: _store.register_worker(
                tx, request.worker_id, request.versions, request.pools, request.concurrency
            )
        )
        for spec in request.versions:
            self._remember((spec.workflow, spec.version), spec.input_schema, spec.event_schemas)
        logger.info(
            "worker %s registered %d versions",
            request.worker_id,
            len(request.versions),
            extra={"worker_id": request.worker_id},
        )
        return WorkerRegistered(worker_id=request.worker_id)

    async def claim_run(self, request: ClaimRun) -> RunClaimed | ClaimRejected:
        """Give a queued run to a worker, with the task outcomes recorded so far."""
        run_id = self._run_uuid(request.run_id)

        def claim(tx: Transaction) -> RunClaimed | ClaimRejected:
            run = _store.claim_run(tx, run_id, request.worker_id)
            if run is None:
                current = _store.run_status(tx, run_id)
                if current is None:
                    raise RunNotFoundError(f"no run with ID {request.run_id!r}")
                return ClaimRejected(
                    run_id=request.run_id,
                    status=current[0],
                    reason=f"run is {current[0]}, not queued",
                )
            if run.revision == 2:  # the first claim: nothing can have been recorded yet
                return RunClaimed(run=run)
            tasks, unfinished = _store.recorded_tasks(tx, run_id)
            waits, children = _store_waits.recorded_waits_and_children(tx, run_id)
            return RunClaimed(
                run=run, tasks=tuple(tasks), task_attempts=tuple(unfinished),
                waits=tuple(waits), children=tuple(children),
            )  # fmt: skip

        reply: RunClaimed | ClaimRejected = await self.transact(claim)
        if isinstance(reply, RunClaimed):
            self.notifier.notify(request.run_id)
        return reply

    async def _fenced_out(self, run_id: uuid.UUID, request_id: str, revision: int) -> AikiError:
        current = await self.transact(lambda tx: _store.run_status(tx, run_id))
        if current is None:
            return RunNotFoundError(f"no run with ID {request_id!r}")
        status, current_revision = current
        if current_revision != revision:
            return StaleRevisionError(
                f"run {request_id} is at revision {current_revision} ({status}); this write "
                f"carried revision {revision}: the run was taken over"
            )
        return InvalidTransitionError(f"run {request_id} is {status}, not running")

    async def record_task(self, request: RecordTask) -> TaskRecorded:
        """Store a task outcome, fenced by the worker's revision."""
        self._check_task(request)
        run_id = self._run_uuid(request.run_id)
        written = await self.transact(lambda tx: _store.record_task(tx, request, run_id))
        if not written:
            raise await self._fenced_out(run_id, request.run_id, request.revision)
        self._observe(request)
        return TaskRecorded(address=request.address, seq=request.seq)

    def _observe(self, request: RecordTask) -> None:
        if request.duration_seconds is not None and request.duration_seconds >= 0:
            self.metrics.task_seconds.labels(request.name).observe(request.duration_seconds)

    @staticmethod
    def _check_task(request: RecordTask) -> None:
        if request.state != "completed" and request.error is None:
            raise BadRequestError("a failed task attempt needs an error", errors=("@ $.error",))
        if request.attempt < 1 or request.seq < 0:
            raise BadRequestError("attempt starts at 1 and seq at 0")

    async def transition_run(
        self, request: TransitionRun, worker_id: str | None
    ) -> RunTransitioned:
        """Move a claimed run on (complete, fail, retry later, give back), fenced by revision."""
        if request.status not in ALL_STATUSES:
            raise BadRequestError(f"unknown status {request.status!r}")
        if request.status not in WORKER_TRANSITIONS or not can_transition(
            "running", request.status
        ):
            raise InvalidTransitionError(f"a worker cannot move a run to {request.status!r}")
        if request.status == "awaiting_retry" and (request.retry_delay_seconds or -1) < 0:
            raise BadRequestError("awaiting_retry needs retry_delay_seconds >= 0")
        if request.status == "failed" and request.error is None:
            raise BadRequestError("a failed run needs an error", errors=("@ $.error",))
        for task in request.tasks:
            if (task.run_id, task.revision) != (request.run_id, request.revision):
                raise BadRequestError("tasks carried by a transition must be of its run and "
                                      "revision", errors=("@ $.tasks",))  # fmt: skip
            self._check_task(task)
        run_id = self._run_uuid(request.run_id)

        def move(tx: Transaction) -> tuple[RunInfo | None, int]:
            for task in request.tasks:
                if not _store.record_task(tx, task, run_id):
                    return None, 0  # fenced: nothing was written
            moved = _store.transition_run(tx, request, run_id, worker_id)
            parents = 0
            if moved is not None and moved.parent_id is not None and moved.status in TERMINAL:
                parents = _store_waits.resolve_child_waits(tx, [run_id])
            return moved, parents

        moved, parents_queued = await self.transact(move)
        if moved is not None:
            for task in request.tasks:
                self._observe(task)
            if moved.status == "completed":
                self.metrics.runs_completed.labels(moved.workflow).inc()
            elif moved.status == "failed":
                self.metrics.runs_failed.labels(moved.workflow).inc()
        if moved is None:
            raise await self._fenced_out(run_id, request.run_id, request.revision)
        self.notifier.notify(request.run_id)
        if moved.status == "queued" or parents_queued:
            self._on_queued()
        if moved.status == "awaiting_retry" and moved.wake_at is not None:
            self._on_deadline(moved.wake_at)
        return RunTransitioned(run_id=moved.id, status=moved.status, revision=moved.revision)

    async def requeue_run(self, request: RequeueRun) -> RunTransitioned:
        """Release a run's claim and queue it again (recovery)."""
        run_id = self._run_uuid(request.run_id)
        moved: RunInfo | None = await self.transact(
            lambda tx: _store.requeue_run(tx, run_id, request.reason)
        )
        if moved is None:
            current = await self.get_run(GetRun(run_id=request.run_id))
            allowed = " or ".join(_store.REQUEUEABLE)
            raise InvalidTransitionError(
                f"run {request.run_id} is {current.status}; only {allowed} runs can be requeued"
            )
        self.notifier.notify(request.run_id)
        self._on_queued()
        return RunTransitioned(run_id=moved.id, status=moved.status, revision=moved.revision)

    async def heartbeat(self, request: Heartbeat) -> HeartbeatAck:
        """Note that a worker is alive."""
        if not await self.transact(lambda tx: _store.heartbeat(tx, request.worker_id)):
            raise NotFoundError(f"worker {request.worker_id!r} is not registered")
        return HeartbeatAck(worker_id=request.worker_id)
