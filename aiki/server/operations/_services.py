"""What every operation handler works with, and who called it.

`Services` is built once by the server's tree (`aiki.server.serve`) from the addresses
of the actors the operations wake (dispatcher, timers, scheduler, broadcaster) and the
shared tables (registered schemas, worker sessions, live subscriptions); handlers get it
as their first argument. `Caller` is the session (or HTTP request) a request came on.

Handlers reach the store only through `Services.transact`, whose work gets a
`aiki.server.store.scoped.Scoped` transaction bound to the caller's namespace and worker.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, Protocol, TypeVar

import attrs
import jsonschema
import trio

from actors import Address
from transport import StorageError, StorageUnavailableError
from transport.postgres import PostgresStore

from ...errors import (
    AikiError,
    InvalidTransitionError,
    RunNotFoundError,
    StaleRevisionError,
    UnavailableError,
    ValidationError,
    WorkflowNotFoundError,
)
from ...protocol import (
    TERMINAL,
    ConcurrencyLimit,
    LimitKeyError,
    RunClaimed,
    RunStarted,
    RunUpdate,
    StopRun,
    TransitionRun,
    limit_key,
)
from .. import _committer, store
from .._auth import Authenticator, Principal
from .._broadcaster import Subscriber, Subscriptions
from .._broadcaster import poke as poke_broadcaster
from .._committer import Commit
from .._metrics import ServerMetrics
from .._quotas import KeyQuotas
from .._redis_grants import RedisGrants
from .._timers import Deadline
from .._timers import schedule as schedule_deadline
from ..delivery import FastLane, Offer, Offers, Open, Room, Wake, open_gate
from ..delivery import poke as poke_dispatcher
from ..store.outbox import OutboxEntry
from ..store.scoped import Scope, Scoped

if TYPE_CHECKING:
    import datetime as dt
    import uuid

    from transport.postgres import Transaction

    from ...protocol import RunInfo, RunStatus
    from .._broadcaster import Poke
    from ..store.waits import Stopped

T = TypeVar("T")

GIVE_BACK_SECONDS: Final = 10.0
"""How long a start waits to give back a claim its offer could no longer take."""

logger = logging.getLogger(__name__)


class SessionHandle(Protocol):
    """What a handler may ask of the WebSocket session its request came on."""

    @property
    def worker_id(self) -> str | None:
        """The worker registered on this session, if one is."""
        ...

    def bind_worker(self, worker_id: str) -> None:
        """This session is worker ``worker_id``'s: route pushes for it here."""
        ...

    @property
    def subscription_count(self) -> int:
        """How many subscriptions this session holds."""
        ...

    @property
    def session_id(self) -> str:
        """Names this session (the worker registered over it is connected while its row
        names it)."""
        ...

    @property
    def incarnation(self) -> str:
        """A secret of this session: what a worker registering without an incarnation of
        its own is held by."""
        ...

    def reserve(self, subscriber: Subscriber) -> None:
        """Count ``subscriber`` as one of this session's subscriptions."""
        ...

    def unfollow(self, subscription: str) -> None:
        """End one of this session's subscriptions (not one of another session's)."""
        ...


@attrs.define(eq=False)
class Caller:
    """Who sent a request: the key's principal, and the WebSocket session it came on
    (``session`` None: an HTTP request)."""

    principal: Principal
    session: SessionHandle | None = None
    followed: list[Subscriber] = attrs.Factory(list)
    """Subscriptions the request made; the session pushes their updates after the reply."""

    @property
    def worker_id(self) -> str | None:
        """The worker registered on the caller's session, if one is."""
        return None if self.session is None else self.session.worker_id

    @property
    def scope(self) -> Scope:
        """Whom the caller's transactions act for: its key's namespace, its session's
        worker."""
        return Scope(self.principal.namespace, self.worker_id)

    @property
    def home(self) -> str:
        """The namespace what the caller creates goes to (`Scope.home`)."""
        return self.scope.home

    def attributed(self, reason: str) -> str:
        """``reason`` as the run's history records it: with the key that acted
        (``cancelled, by key ab12cd… (ops)``), when there is one."""
        if self.principal.prefix is None:
            return reason
        return f"{reason}, by {self.principal}"

    def follow(self, subscriber: Subscriber) -> None:
        """Push ``subscriber``'s updates on the caller's session, once the reply is sent."""
        assert self.session is not None
        self.session.reserve(subscriber)
        self.followed.append(subscriber)


Push = Callable[[StopRun], None]
"""Queues a push on a session (never waits on the peer)."""


class WorkerSessions:
    """Worker WebSocket sessions by worker ID, for pushes."""

    def __init__(self) -> None:
        self._pushes: dict[str, Push] = {}

    def attach(self, worker_id: str, push: Push) -> None:
        """Route pushes for ``worker_id`` to this session."""
        self._pushes[worker_id] = push

    def detach(self, worker_id: str, push: Push) -> None:
        """Forget the session (unless another one took over the worker ID)."""
        if self._pushes.get(worker_id) == push:  # (bound methods: equal, not identical)
            del self._pushes[worker_id]

    def push(self, worker_id: str | None, message: StopRun) -> None:
        """Queue ``message`` for the worker if it is connected here; best effort (fencing
        stops the worker at its next write anyway). Never waits."""
        push = self._pushes.get(worker_id) if worker_id else None
        if push is not None:
            push(message)


class RunNotifier:
    """Wakes long-poll waiters when this server changes a run, and the broadcaster."""

    def __init__(self, broadcaster: Address[Poke]) -> None:
        self._broadcaster = broadcaster
        self._events: dict[str, trio.Event] = {}

    def event_for(self, run_id: str) -> trio.Event:
        """An event set at the next change of ``run_id``; take it *before* reading the run."""
        return self._events.setdefault(run_id, trio.Event())

    def changed(self) -> None:
        """Something committed that subscribers may want (the broadcaster reads)."""
        poke_broadcaster(self._broadcaster)

    def notify(self, run_id: str) -> None:
        """The run changed (call after the transaction committed)."""
        self.changed()
        event = self._events.pop(run_id, None)
        if event is not None:
            event.set()


def _path(error: jsonschema.ValidationError) -> str:
    path = "$"
    for part in error.absolute_path:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def _validator(schema: object) -> jsonschema.protocols.Validator | None:
    if not isinstance(schema, dict):
        return None
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


def _problems(validator: jsonschema.protocols.Validator, value: object) -> tuple[str, ...]:
    found = validator.iter_errors(value)  # type: ignore[arg-type]
    ordered = sorted(found, key=lambda error: [str(part) for part in error.absolute_path])
    return tuple(f"{problem.message} @ {_path(problem)}" for problem in ordered)


Version = tuple[str, str, str]
"""A workflow version in its namespace: (namespace, workflow, version)."""


class Schemas:
    """The JSON Schemas workers registered for each version's input and events (each
    namespace has its own versions)."""

    def __init__(self) -> None:
        self._inputs: dict[Version, jsonschema.protocols.Validator | None] = {}
        self._events: dict[Version, dict[str, jsonschema.protocols.Validator | None]] = {}
        self._limits: dict[Version, tuple[ConcurrencyLimit, ...]] = {}

    def knows(self, namespace: str, workflow: str, version: str) -> bool:
        """Whether ``workflow@version`` has been registered in ``namespace`` (as far as this
        server knows)."""
        return (namespace, workflow, version) in self._inputs

    def remember(
        self,
        namespace: str,
        workflow: str,
        version: str,
        schema: object,
        events: object,
        limits: tuple[ConcurrencyLimit, ...] = (),
    ) -> None:
        """Keep the schemas of one registered version, and the concurrency limits its runs
        take a slot of (their key paths; the numbers live in the store)."""
        self._limits[(namespace, workflow, version)] = limits
        self._inputs[(namespace, workflow, version)] = _validator(schema)
        event_schemas = events if isinstance(events, dict) else {}
        self._events[(namespace, workflow, version)] = {
            name: _validator(event_schema) for name, event_schema in event_schemas.items()
        }

    def check_input(self, namespace: str, workflow: str, version: str, input_json: object) -> None:
        """Validate a start's input.

        Raises:
            aiki.WorkflowNotFoundError: the version is not registered.
            aiki.ValidationError: the input does not match the schema (``errors`` name the
                fields).
        """
        if not self.knows(namespace, workflow, version):
            raise WorkflowNotFoundError(
                f"workflow {workflow!r} version {version!r} is not registered in namespace "
                f"{namespace!r}: start a worker that serves it before starting runs"
            )
        validator = self._inputs[(namespace, workflow, version)]
        if validator is not None and (errors := _problems(validator, input_json)):
            raise ValidationError(
                f"input of {workflow}@{version} does not match its type: " + "; ".join(errors),
                errors=errors,
            )
        for limit in self._limits.get((namespace, workflow, version), ()):
            try:
                limit_key(limit, input_json)
            except LimitKeyError as exc:
                where = "$.input" + exc.path[1:]
                raise ValidationError(str(exc), errors=(f"{exc} @ {where}",)) from None

    def slots(
        self, namespace: str, workflow: str, version: str, input_json: object
    ) -> list[tuple[str, str]]:
        """The (limit name, key) slots a run of the version with ``input_json`` takes
        (checked by `check_input` already)."""
        return [(limit.name, limit_key(limit, input_json))
                for limit in self._limits.get((namespace, workflow, version), ())]  # fmt: skip

    def acting_limits(
        self, namespace: str, workflow: str, version: str, input_json: object
    ) -> list[tuple[ConcurrencyLimit, str]]:
        """The version's limits that refuse or cancel when full, each with the key of
        ``input_json`` (checked by `check_input` already)."""
        return [(limit, limit_key(limit, input_json))
                for limit in self._limits.get((namespace, workflow, version), ())
                if limit.on_limit != "wait"]  # fmt: skip

    def gated(self, namespace: str, workflow: str, version: str) -> bool:
        """Whether runs of the version take concurrency-limit slots (they pass the gate)."""
        return bool(self._limits.get((namespace, workflow, version)))

    def check_event(
        self, namespace: str, workflow: str, version: str, name: str, payload: object
    ) -> None:
        """Validate an event's payload.

        Raises:
            aiki.ValidationError: the version declares no such event (a mistake in the
                request, not a missing resource: the run exists), or the payload does not
                match its schema.
        """
        events = self._events.get((namespace, workflow, version), {})
        if name not in events:
            declared = ", ".join(sorted(events)) or "none"
            raise ValidationError(
                f"{workflow}@{version} declares no event {name!r} (declared: {declared})",
                errors=(f"undeclared event {name!r} @ $.name",),
            )
        validator = events[name]
        if validator is not None and (errors := _problems(validator, payload)):
            raise ValidationError(
                f"payload of event {name!r} does not match its type: " + "; ".join(errors),
                errors=errors,
            )


def _registry(
    tx: Transaction,
) -> tuple[dict[Version, tuple[object, object]], dict[Version, tuple[ConcurrencyLimit, ...]]]:
    """Every registered version's schemas and concurrency limits."""
    return store.workers.registered_versions(tx), store.limits.version_limits(tx)


@attrs.frozen
class Wakeups:
    """The actors operations wake after they commit, by address."""

    dispatcher: Address[Wake]
    timers: Address[Deadline]
    scheduler: Address[Deadline]
    gate: Address[Open]
    lane: FastLane = attrs.Factory(FastLane)
    """Runs this server just queued, published by the dispatcher at once."""
    room: Room = attrs.Factory(Room)
    """Which queues a start may go straight to (the gate's last pass)."""

    def gated(self) -> None:
        """A run waits at the gate: a pass now."""
        open_gate(self.gate)

    def room_changed(self) -> None:
        """A run was claimed (one fewer in flight) or left a worker (a slot freed): if runs
        wait at the gate, a pass."""
        if self.room.waiting:
            open_gate(self.gate)

    def queued(self) -> None:
        """Runs were queued: the dispatcher publishes them."""
        poke_dispatcher(self.dispatcher)

    def deadline(self, when: dt.datetime) -> None:
        """Something is due at ``when`` (a sleep, a retry, a delayed start, a timeout)."""
        schedule_deadline(self.timers, when)

    def schedule_due(self, when: dt.datetime) -> None:
        """A schedule is due at ``when``."""
        schedule_deadline(self.scheduler, when)


@attrs.define(eq=False)
class Services:
    """What handlers work with (see the module docstring)."""

    _store: PostgresStore
    _committer: Address[Commit[object]]
    metrics: ServerMetrics
    wakeups: Wakeups
    notifier: RunNotifier
    subscriptions: Subscriptions
    lease_seconds: float
    """The claim timeout, told to workers so they stop a run before it is released; a
    worker not heard from for as long is gone (its ID may be registered again)."""
    max_events_per_run: int
    """Events a run takes at most (duplicates aside)."""
    schemas: Schemas = attrs.Factory(Schemas)
    sessions: WorkerSessions = attrs.Factory(WorkerSessions)
    authenticator: Authenticator | None = None
    """Checks API keys (None: the server runs without authentication)."""
    quotas: KeyQuotas | None = None
    """Each key's request quota (None: none)."""
    redis_grants: RedisGrants | None = None
    """Makes workers' Redis users (None: this server makes none)."""
    offers: Offers = attrs.Factory(Offers)
    """Free slots workers offer to this server's starts (eager dispatch)."""
    stream_shards: int = 1
    """Sub-streams per queue (told to workers when they register)."""

    def moved(self, run: RunInfo, previous: RunStatus, reason: str | None) -> None:
        """``run`` (as it is now) moved from ``previous``, committed by this server: wake
        its long-poll waiters and the broadcaster, and hand the change to the run's
        subscribers at once (`Subscriptions.push_committed`)."""
        ended = run.status in TERMINAL
        self.subscriptions.push_committed(RunUpdate(
            run_id=run.id, workflow=run.workflow, version=run.version, status=run.status,
            revision=run.revision, previous=previous, reason=reason, at=run.updated_at,
            output=run.output if ended else None, error=run.error if ended else None,
            run=run if ended else None, namespace=run.namespace,
        ))  # fmt: skip
        self.notifier.notify(run.id)

    async def transact(self, caller: Caller, work: Callable[[Scoped], T]) -> T:
        """Run ``work`` in a transaction (through the committer) seen as ``caller`` sees the
        store (`aiki.server.store.scoped`): the only transaction handlers get.

        Raises:
            aiki.UnavailableError: PostgreSQL is down or busy (retry later).
        """
        scope = caller.scope
        return await self._transact(lambda tx: work(Scoped(tx, scope)))

    async def _transact(self, work: Callable[[Transaction], T], *, alone: bool = False) -> T:
        """Run ``work`` in a transaction (through the committer, unless ``alone``: before the
        committer runs), with storage errors mapped to Aiki errors."""
        try:
            if alone:
                return await self._store.transact(work)
            return await _committer.transact(self._committer, work)
        except StorageUnavailableError as exc:
            raise UnavailableError(f"storage unavailable, retry later: {exc}") from exc
        except StorageError as exc:
            if exc.retryable:
                raise UnavailableError(f"storage busy, retry: {exc}") from exc
            raise

    async def render_metrics(self, namespace: str | None = None) -> bytes:
        """The Prometheus exposition (`ServerMetrics.render`): of ``namespace``'s series
        only, if one is given."""
        return await self.metrics.render(self._store, namespace)

    async def load_schemas(self) -> None:
        """Read every registered version's schemas (at start, and when one is unknown)."""
        versions, limits = await self._transact(_registry, alone=True)
        for (namespace, workflow, version), (schema, events) in versions.items():
            self.schemas.remember(namespace, workflow, version, schema, events,
                                  limits.get((namespace, workflow, version), ()))  # fmt: skip

    async def check_input(
        self, namespace: str, workflow: str, version: str, input_json: object
    ) -> None:
        """`Schemas.check_input`, reading the registry again first if the version is new
        to this server (another instance may have registered it)."""
        if not self.schemas.knows(namespace, workflow, version):
            await self.load_schemas()
        self.schemas.check_input(namespace, workflow, version, input_json)

    def after_start(self, run: RunInfo, outbox_id: int | None = None) -> None:
        """Publish a queued run at once (its outbox row ``outbox_id`` was leased for this;
        if the fast lane is full, the outbox publishes it once the lease ends), or wake the
        timers (scheduled start, run deadline)."""
        self.metrics.runs_started.labels(run.namespace, self.metrics.workflow(run.workflow)).inc()
        if run.gated_at is not None:
            self.wakeups.gated()
        elif run.status == "queued":
            entry = None if outbox_id is None else OutboxEntry(
                outbox_id, run.id, run.revision, run.workflow, run.version, run.pool,
                run.namespace)  # fmt: skip
            if entry is None or not self.wakeups.lane.add(entry):
                self.wakeups.queued()
        for when in (run.wake_at, run.deadline_at):
            if when is not None:
                self.wakeups.deadline(when)

    async def hand_over(self, offer: Offer, started: RunStarted) -> None:
        """Answer ``offer`` with the claim its start made (nothing if the start found an
        existing run); a claim its request can no longer take is given back at once.

        Cancellation: the give-back is shielded (bounded), so a claim is not stranded
            until the claim timeout because the starting client went away.
        """
        run = started.run
        if not started.created or run.status != "running":
            offer.answer(None)
            return
        if offer.answer(RunClaimed(run=run)):
            return
        give_back = TransitionRun(run_id=run.id, revision=run.revision, status="queued",
                                  reason="offered slot withdrawn")  # fmt: skip
        run_id = run_uuid(run.id)
        with trio.move_on_after(GIVE_BACK_SECONDS, shield=True), contextlib.suppress(AikiError):
            moved = await self._transact(
                lambda tx: store.runs.transition_run(tx, give_back, run_id, offer.worker_id)
            )
            if moved is not None:
                self.moved(moved, "running", give_back.reason)
                self.wakeups.queued()

    async def session_ended(self, worker_id: str, session_id: str) -> None:
        """The session ``session_id`` of worker ``worker_id`` ended: show the worker
        disconnected at once (unless it registered over another session meanwhile). Its
        runs stay its own until its claims time out: it may be back in a moment."""
        try:
            ended = await self._transact(
                lambda tx: store.workers.disconnected(tx, worker_id, session_id)
            )
        except (UnavailableError, StorageError) as exc:
            logger.warning("worker %s disconnected; not recorded (%s)", worker_id, exc,
                           extra={"worker_id": worker_id})  # fmt: skip
            return
        if ended:
            logger.info("worker %s disconnected", worker_id, extra={"worker_id": worker_id})

    def stop_all(self, stopped: list[Stopped], reason: str) -> None:
        """Wake waiters on the stopped runs and push a stop to the workers running them
        (queued on their sessions: never waits on a worker)."""
        for run in stopped:
            self.notifier.notify(run.run_id)
            if run.from_status == "running":
                why = run.reason or reason
                self.sessions.push(run.worker_id, StopRun(run_id=run.run_id, reason=why))

    async def fenced_out(
        self, run_id: uuid.UUID, request_id: str, revision: int, caller: Caller
    ) -> AikiError:
        """Why a fenced write by the caller's worker, carrying ``revision``, was refused
        (a run of a namespace the caller does not see is one that does not exist)."""
        worker_id = caller.worker_id
        current = await self.transact(caller, lambda scoped: scoped.holder(run_id))
        if current is None:
            return RunNotFoundError(f"no run with ID {request_id!r}")
        status, current_revision, holder = current
        if current_revision != revision:
            return StaleRevisionError(
                f"run {request_id} is at revision {current_revision} ({status}); this write "
                f"carried revision {revision}: the run was taken over"
            )
        if status == "running" and holder != worker_id:
            return StaleRevisionError(
                f"run {request_id} is held by another worker, not by {worker_id!r}: a worker "
                "writes only to the runs it claimed"
            )
        return InvalidTransitionError(f"run {request_id} is {status}, not running")


def run_uuid(run_id: str) -> uuid.UUID:
    """The UUID of a run ID.

    Raises:
        aiki.RunNotFoundError: ``run_id`` is not a run ID.
    """
    parsed = store.runs.parse_run_id(run_id)
    if parsed is None:
        raise RunNotFoundError(f"no run with ID {run_id!r}")
    return parsed
