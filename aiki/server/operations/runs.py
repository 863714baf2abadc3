"""Operations on runs: start (idempotently), read, list, and wait for a status."""

from __future__ import annotations

import hashlib
import uuid
from typing import TYPE_CHECKING, Final

import attrs
import trio

from ...errors import BadRequestError, ReferenceConflictError, RunNotFoundError
from ...protocol import (
    GET_RUN,
    LIST_RUNS,
    START_RUN,
    TERMINAL,
    WAIT_RUN,
    ConcurrencyLimit,
    GetRun,
    ListRuns,
    RunInfo,
    RunPage,
    RunStarted,
    StartRun,
    WaitRun,
    canonical_json,
)
from ..delivery import FAST_LEASE_SECONDS
from ..store.scoped import Stopped, new_id, parse_id
from ._handlers import Handlers
from ._services import run_uuid

if TYPE_CHECKING:
    from ..store.scoped import Scoped
    from ._services import Caller, Services

WAIT_RECHECK_SECONDS: Final = 5.0
"""A long-poll re-reads the run this often, for changes made by other server instances."""


def input_hash(input_json: object) -> str:
    """The hash that tells whether two starts with one reference ID had the same input."""
    return hashlib.sha256(canonical_json(input_json)).hexdigest()


def existing_start(scoped: Scoped, request: StartRun, digest: str) -> RunStarted | None:
    """The caller's run already started with ``request``'s reference ID, if any.

    Raises:
        aiki.ReferenceConflictError: it has another input, and the policy is ``error``.
    """
    reference_id = request.options.reference_id
    assert reference_id is not None
    found = scoped.run_by_reference(request.workflow, request.version, reference_id)
    if found is None:
        return None
    run, existing_hash = found
    if request.options.conflict == "error" and existing_hash != digest:
        raise ReferenceConflictError(
            f"a run of {request.workflow}@{request.version} with reference ID "
            f"{reference_id!r} exists with a different input (run {run.id})",
            run_id=run.id,
        )
    return RunStarted(run=run, created=False)


@attrs.define
class LimitsAtStart:
    """What a start does about its version's concurrency limits, in its transaction and
    after it (one implementation for client and child starts)."""

    run_id: uuid.UUID
    acting: list[tuple[ConcurrencyLimit, str]]
    """Its limits that refuse or cancel when full, with its keys."""
    slots: list[tuple[str, str]]
    """Every (limit, key) it takes, if it may take them at once (its queue has room)."""
    stopped: list[Stopped] = attrs.Factory(list)

    @classmethod
    def of(
        cls, services: Services, namespace: str, request: StartRun, run_id: uuid.UUID,
        *, straight: bool,
    ) -> LimitsAtStart:  # fmt: skip
        """Those of ``request`` (``straight``: its queue has room, it is not scheduled)."""
        found = services.schemas
        return cls(
            run_id,
            found.acting_limits(namespace, request.workflow, request.version, request.input),
            found.slots(namespace, request.workflow, request.version, request.input)
            if straight else [],
        )  # fmt: skip

    def before_insert(self, scoped: Scoped) -> bool:
        """Under the gate's lock: refuse or make room (`Scoped.make_room`); return whether
        the run takes its slots at once (they are free: no gate pass)."""
        if self.acting:
            self.stopped[:] = scoped.make_room(self.acting, f"cancelled for run {self.run_id} "
                                               "(a newer run of the key, on a concurrency "
                                               "limit)")  # fmt: skip
        return bool(self.slots) and scoped.may_admit(self.slots)

    def after_commit(self, services: Services) -> None:
        """Stop the runs cancelled for this one on their workers."""
        if self.stopped:
            services.metrics.runs_cancelled.inc(len(self.stopped))
            services.stop_all(self.stopped, "cancelled")
            services.wakeups.queued()  # parents waiting on these runs may have been queued


async def start_run(services: Services, request: StartRun, caller: Caller) -> RunStarted:
    """Validate the input against the version's schema and create the run (idempotently)
    in the caller's namespace."""
    namespace = caller.home
    await services.check_input(namespace, request.workflow, request.version, request.input)
    options = request.options
    digest = input_hash(request.input)
    run_id = new_id()
    # A worker's free slot, if one is offered for this queue: the run is created claimed
    # by that worker (eager dispatch, `_offers`).
    # Not for a run that waits at the gate: one with concurrency limits (for its slots),
    # or one for a queue without room (its workers are saturated, or runs wait for it).
    scheduled = options.start_delay_seconds is not None or options.start_at is not None
    queue = (namespace, request.workflow, request.version, options.pool)
    wait = not scheduled and not services.wakeups.room.take(queue)
    gated = wait or services.schemas.gated(namespace, request.workflow, request.version)
    offer = None if scheduled or gated else services.offers.take(queue)
    claimed_by = None if offer is None else offer.worker_id

    outbox: list[int | None] = [None]
    limits = LimitsAtStart.of(services, namespace, request, run_id,
                              straight=not (wait or scheduled))  # fmt: skip

    def start(scoped: Scoped) -> RunStarted:
        if limits.acting and options.reference_id is not None and (
                existing := existing_start(scoped, request, digest)):  # fmt: skip
            return existing  # (before a refusal: a repeated start finds its run)
        admit = limits.before_insert(scoped)
        # Insert first: a new run takes one statement; a repeated start (the reference ID
        # exists) a second one that reads the existing run.
        created = scoped.insert_run(
            run_id=run_id, workflow=request.workflow,
            version=request.version, input_json=request.input, input_hash=digest,
            options=options, fast_lease_seconds=FAST_LEASE_SECONDS, claimed_by=claimed_by,
            wait=wait, admit=admit,
        )  # fmt: skip
        if created is not None:
            outbox[0] = created[1]
            return RunStarted(run=created[0], created=True)
        # The reference ID exists: this start repeats an earlier one (or races it).
        existing = existing_start(scoped, request, digest)
        assert existing is not None
        return existing

    try:
        # With an offer, shielded: its outcome must reach the offer (a claimed run whose
        # worker never hears of it would wait for the claim timeout); the committer
        # bounds a transaction anyway.
        with trio.CancelScope(shield=offer is not None):
            started = await services.transact(caller, start)
    except BaseException:
        if offer is not None:
            offer.answer(None)  # no run: the worker offers its slot again
        raise
    if started.created:
        services.after_start(started.run, outbox[0])
    limits.after_commit(services)
    if offer is not None:
        await services.hand_over(offer, started)
    return started


async def get_run(services: Services, request: GetRun, caller: Caller) -> RunInfo:
    """Find a run by ID or by reference ID (in the caller's namespace: a run of another is
    not found)."""
    if request.run_id is not None:
        run_id = run_uuid(request.run_id)
        run = await services.transact(caller, lambda scoped: scoped.run(run_id))
        if run is None:
            raise RunNotFoundError(f"no run with ID {request.run_id!r}")
        return run
    if request.workflow and request.version and request.reference_id:
        workflow, version, reference_id = request.workflow, request.version, request.reference_id
        found = await services.transact(
            caller, lambda scoped: scoped.run_by_reference(workflow, version, reference_id)
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


async def list_runs(services: Services, request: ListRuns, caller: Caller) -> RunPage:
    """A page of runs, newest first (``limit`` is bounded where requests are decoded)."""
    parent = None if request.parent_id is None else parse_id(request.parent_id)
    if request.parent_id is not None and parent is None:
        raise BadRequestError(f"parent_id {request.parent_id!r} is not a run ID",
                              errors=("not a run ID @ $.parent_id",))  # fmt: skip
    runs, cursor = await services.transact(caller, lambda scoped: scoped.list_runs(
        workflow=request.workflow, version=request.version, statuses=request.statuses,
        reference_id=request.reference_id, parent_id=parent, limit=request.limit,
        cursor=request.cursor))  # fmt: skip
    return RunPage(runs=tuple(runs), next_cursor=cursor)


async def wait_run(services: Services, request: WaitRun, caller: Caller) -> RunInfo:
    """Reply when the run reaches one of the statuses (or any terminal one), or on timeout."""
    wanted = set(request.statuses) | TERMINAL
    get = GetRun(run_id=request.run_id)
    with trio.move_on_after(request.timeout_seconds):
        while True:
            changed = services.notifier.event_for(request.run_id)
            run = await get_run(services, get, caller)
            if run.status in wanted:
                return run
            with trio.move_on_after(WAIT_RECHECK_SECONDS):
                await changed.wait()
    return await get_run(services, get, caller)


HANDLERS: Final = (
    Handlers()
    .on(START_RUN, start_run)
    .on(GET_RUN, get_run)
    .on(LIST_RUNS, list_runs)
    .on(WAIT_RUN, wait_run)
)
"""The handlers of the run operations."""
