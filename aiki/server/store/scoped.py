"""The store as one caller sees it: what operation handlers read and write through.

A handler never holds a `transport.postgres.Transaction`. The server's services hand it a
`Scoped` transaction instead, bound to the caller's `Scope`: the namespace its key acts in
(None: every namespace, for an admin key without one, or without authentication) and the
worker its session registered, if any. Every method applies the scope itself:

- what a caller **creates** (runs, schedules, workers) goes to its namespace (`Scope.home`);
- what it **finds by ID** in another namespace does not exist (None, or
  `aiki.RunNotFoundError` for what changes a run): its existence is not told;
- **listings** hold the caller's namespace only;
- **a worker's writes** (task records, history, waits, moves) are fenced by the worker its
  session registered, never one a request names; a worker's ID is bound to its namespace
  when it registers.

The handlers' modules may not import the rest of the store (an import-linter contract in
``pyproject.toml``), so a read or write that skips the scope does not type-check: the one
transaction a handler gets is a `Scoped`, and no store function takes one.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import attrs

from ...errors import ForbiddenError, LimitReachedError, RunNotFoundError
from ...protocol import DEFAULT_NAMESPACE, TERMINAL
from . import (
    gate,
    history,
    keys,
    limits,
    recovery,
    retries,
    runs,
    schedules,
    updates,
    views,
    waits,
    workers,
)

if TYPE_CHECKING:
    import datetime as dt

    from transport.postgres import Transaction

    from ...protocol import (
        BeginWait,
        ConcurrencyLimit,
        HistoryUpdate,
        KeyInfo,
        LimitInfo,
        RecordedWait,
        RecordTask,
        ReportProgress,
        Role,
        RunClaimed,
        RunDetails,
        RunInfo,
        RunStatus,
        RunUpdate,
        ScheduleInfo,
        ScheduleStatus,
        StartOptions,
        TransitionRun,
        VersionInfo,
        VersionSpec,
        WorkerInfo,
    )

__all__ = [
    "EventOutcome",
    "Scope",
    "Scoped",
    "Stopped",
    "WorkerElsewhere",
    "WorkerTaken",
    "new_id",
    "parse_id",
]

EventOutcome = waits.EventOutcome
Stopped = waits.Stopped
WorkerElsewhere = workers.WorkerElsewhere
WorkerTaken = workers.WorkerTaken
new_id = runs.new_run_id
"""A new run or schedule ID (time-ordered)."""
parse_id = runs.parse_run_id
"""The UUID in a run or schedule ID, or None if the text is not one."""


@attrs.frozen
class Scope:
    """Whom a transaction acts for: the namespace the caller's key acts in (None: every
    namespace) and the worker its session registered (None: not a worker's session)."""

    namespace: str | None
    worker_id: str | None = None

    @property
    def home(self) -> str:
        """The namespace what the caller creates goes to: its key's (an admin key's, or
        any caller's without authentication: ``default``)."""
        return self.namespace or DEFAULT_NAMESPACE

    def sees(self, namespace: str) -> bool:
        """Whether the caller may see (and act on) what belongs to ``namespace``."""
        return self.namespace is None or self.namespace == namespace


class Scoped:
    """One transaction, seen through a `Scope` (see the module docstring). Built by the
    server's services for each handler's transaction; lives as long as it."""

    __slots__ = ("_seen", "_tx", "scope")

    def __init__(self, tx: Transaction, scope: Scope) -> None:
        self._tx = tx
        self.scope = scope
        """Whom this transaction acts for."""
        self._seen: set[uuid.UUID] = set()  # runs and schedules found in scope

    # -- the scope ---------------------------------------------------------------------------

    def _visible(self, namespace: str, found: uuid.UUID) -> bool:
        if not self.scope.sees(namespace):
            return False
        self._seen.add(found)
        return True

    def _require_run(self, run_id: uuid.UUID) -> None:
        """Raise unless the run is the caller's to act on (every namespace's: no read)."""
        if self.scope.namespace is None or run_id in self._seen:
            return
        row = self._tx.fetch_one("SELECT namespace FROM aiki_runs WHERE id = %s", (run_id,))
        if row is None or not self._visible(str(row[0]), run_id):
            raise RunNotFoundError(f"no run with ID {str(run_id)!r}")

    def _worker(self) -> str:
        worker_id = self.scope.worker_id
        if worker_id is None:
            raise ForbiddenError("a worker operation needs a worker's session")
        return worker_id

    def now(self) -> dt.datetime:
        """The database's clock (one clock for every server)."""
        return schedules.now(self._tx)

    # -- runs --------------------------------------------------------------------------------

    def insert_run(
        self,
        *,
        run_id: uuid.UUID,
        workflow: str,
        version: str,
        input_json: object,
        input_hash: str,
        options: StartOptions,
        parent_id: uuid.UUID | None = None,
        child_address: str | None = None,
        child_seq: int | None = None,
        fast_lease_seconds: float = 0.0,
        claimed_by: str | None = None,
        wait: bool = False,
        admit: bool = False,
    ) -> tuple[RunInfo, int | None] | None:
        """`runs.insert_run` in the caller's namespace."""
        return runs.insert_run(
            self._tx, namespace=self.scope.home, run_id=run_id, workflow=workflow,
            version=version, input_json=input_json, input_hash=input_hash, options=options,
            parent_id=parent_id, child_address=child_address, child_seq=child_seq,
            fast_lease_seconds=fast_lease_seconds, claimed_by=claimed_by, wait=wait,
            admit=admit,
        )  # fmt: skip

    def run_by_reference(
        self, workflow: str, version: str, reference_id: str
    ) -> tuple[RunInfo, str] | None:
        """The caller's run with this reference ID, and its input hash."""
        return runs.find_by_reference(self._tx, self.scope.home, workflow, version, reference_id)

    def run(self, run_id: uuid.UUID) -> RunInfo | None:
        """The run with this ID, if the caller sees it."""
        run = runs.get_run(self._tx, run_id)
        return run if run is not None and self._visible(run.namespace, run_id) else None

    def run_status(self, run_id: uuid.UUID) -> tuple[RunStatus, int] | None:
        """The run's status and revision, if the caller sees it."""
        found = runs.run_status(self._tx, run_id)
        if found is None or not self._visible(found[2], run_id):
            return None
        return found[0], found[1]

    def holder(self, run_id: uuid.UUID) -> tuple[RunStatus, int, str | None] | None:
        """The run's status, revision and claim holder, if the caller sees it."""
        found = runs.holder(self._tx, run_id)
        if found is None or not self._visible(found[3], run_id):
            return None
        return found[0], found[1], found[2]

    def list_runs(
        self,
        *,
        workflow: str | None,
        version: str | None,
        statuses: tuple[str, ...],
        reference_id: str | None = None,
        parent_id: uuid.UUID | None = None,
        limit: int,
        cursor: str | None,
    ) -> tuple[list[RunInfo], str | None]:
        """`runs.list_runs` of the caller's namespace."""
        return runs.list_runs(
            self._tx, namespace=self.scope.namespace, workflow=workflow, version=version,
            statuses=statuses, reference_id=reference_id, parent_id=parent_id, limit=limit,
            cursor=cursor,
        )  # fmt: skip

    def describe_run(self, run_id: uuid.UUID) -> RunDetails | None:
        """The run in full, if the caller sees it."""
        details = views.describe_run(self._tx, run_id)
        if details is None or not self._visible(details.run.namespace, run_id):
            return None
        return details

    def runs_by_id(self, run_ids: tuple[str, ...]) -> dict[str, RunInfo]:
        """The runs among ``run_ids`` that exist and the caller sees, by ID."""
        found = updates.runs(self._tx, run_ids)
        return {key: run for key, run in found.items()
                if self._visible(run.namespace, uuid.UUID(run.id))}  # fmt: skip

    def changes_after(self, run_ids: tuple[str, ...], after_revision: int) -> list[RunUpdate]:
        """The recorded changes of the caller's runs among ``run_ids`` after a revision."""
        found = updates.history(self._tx, run_ids, after_revision)
        return [update for update in found if self.scope.sees(update.namespace)]

    def list_workers(self, *, include_gone: bool) -> list[WorkerInfo]:
        """The workers of the caller's namespace."""
        return views.list_workers(
            self._tx, namespace=self.scope.namespace, include_gone=include_gone
        )

    def list_versions(self, *, workflow: str | None) -> list[VersionInfo]:
        """The workflow versions of the caller's namespace."""
        return views.list_versions(self._tx, namespace=self.scope.namespace, workflow=workflow)

    # -- control: each raises aiki.RunNotFoundError for a run the caller does not see ----

    def cancel_tree(self, run_id: uuid.UUID, reason: str) -> list[Stopped]:
        """`waits.cancel_tree` of the caller's run."""
        self._require_run(run_id)
        return waits.cancel_tree(self._tx, run_id, reason)

    def pause(self, run_id: uuid.UUID, reason: str) -> Stopped | None:
        """`waits.pause` of the caller's run."""
        self._require_run(run_id)
        return waits.pause(self._tx, run_id, reason)

    def resume(self, run_id: uuid.UUID, reason: str) -> RunInfo | None:
        """`waits.resume` of the caller's run."""
        self._require_run(run_id)
        return waits.resume(self._tx, run_id, reason)

    def wakeup(self, run_id: uuid.UUID) -> int:
        """`waits.wakeup` of the caller's run."""
        self._require_run(run_id)
        return waits.wakeup(self._tx, run_id)

    def requeue_run(self, run_id: uuid.UUID, reason: str) -> RunInfo | None:
        """`runs.requeue_run` of the caller's run."""
        self._require_run(run_id)
        return runs.requeue_run(self._tx, run_id, reason)

    def retry_run(self, run_id: uuid.UUID, reason: str) -> list[RunInfo]:
        """`retries.retry_runs` of the caller's run (and its failed descendants)."""
        self._require_run(run_id)
        return retries.retry_runs(self._tx, [run_id], reason)

    def retry_failed(
        self,
        *,
        workflow: str,
        version: str | None,
        after: dt.datetime | None,
        before: dt.datetime | None,
        limit: int,
        reason: str,
    ) -> tuple[list[RunInfo], bool]:
        """`retries.retry_runs` of the caller's `retries.failed_roots`, and whether more
        match."""
        roots, more = retries.failed_roots(
            self._tx, namespace=self.scope.namespace, workflow=workflow, version=version,
            after=after, before=before, limit=limit,
        )  # fmt: skip
        return retries.retry_runs(self._tx, roots, reason), more

    def lock_run(self, run_id: uuid.UUID) -> tuple[str, str, str, str] | None:
        """`waits.lock_run` (namespace, workflow, version, status), if the caller sees it."""
        found = waits.lock_run(self._tx, run_id)
        return found if found is not None and self._visible(found[0], run_id) else None

    def delivered(self, run_id: uuid.UUID, name: str, reference_id: str) -> EventOutcome | None:
        """`waits.delivered` to the caller's run."""
        self._require_run(run_id)
        return waits.delivered(self._tx, run_id, name, reference_id)

    def send_event(
        self,
        run_id: uuid.UUID,
        name: str,
        payload: object,
        reference_id: str | None,
        *,
        limit: int,
    ) -> EventOutcome | None:
        """`waits.send_event` to the caller's run (locked by `lock_run` first); None if
        the run has taken ``limit`` events already."""
        self._require_run(run_id)
        return waits.send_event(self._tx, run_id, name, payload, reference_id, limit=limit)

    # -- a worker's own runs: fenced by the worker of the caller's session ------------------

    def register_worker(
        self,
        worker_id: str,
        versions: tuple[VersionSpec, ...],
        pools: tuple[str | None, ...],
        concurrency: int,
        *,
        incarnation: str,
        live_seconds: float,
        session: str | None = None,
    ) -> list[tuple[str, str]]:
        """`workers.register_worker` in the caller's namespace.

        Raises:
            WorkerElsewhere: the worker ID is registered in another namespace.
            WorkerTaken: a live worker of another incarnation holds the ID.
        """
        return workers.register_worker(
            self._tx, self.scope.home, worker_id, versions, pools, concurrency,
            incarnation=incarnation, live_seconds=live_seconds, session=session,
        )  # fmt: skip

    def claim_run(self, run_id: uuid.UUID) -> RunInfo | None:
        """`runs.claim_run` of a queued run of the caller's namespace, by its worker."""
        run = runs.claim_run(self._tx, self.scope.home, run_id, self._worker())
        if run is not None:
            self._seen.add(run_id)
        return run

    def claimed(self, run: RunInfo) -> RunClaimed:
        """`history.claimed`: a run the caller's worker just claimed, with its history."""
        if uuid.UUID(run.id) not in self._seen:
            raise RunNotFoundError(f"run {run.id} was not claimed in this transaction")
        return history.claimed(self._tx, run)

    def claim_next(self, limit: int) -> list[RunClaimed]:
        """`recovery.claim_next` for the caller's worker."""
        return recovery.claim_next(self._tx, self._worker(), limit)

    def refresh_claims(self, run_ids: list[str]) -> list[str] | None:
        """`recovery.refresh_claims` of the caller's worker."""
        return recovery.refresh_claims(self._tx, self._worker(), run_ids)

    def deregister(self, limit: int) -> int:
        """`recovery.deregister` the caller's worker."""
        return recovery.deregister(self._tx, self._worker(), limit)

    def record_history(self, update: HistoryUpdate, run_id: uuid.UUID, revision: int) -> bool:
        """`history.record_history`, fenced by the caller's worker."""
        return history.record_history(self._tx, update, run_id, revision, self._worker())

    def record_task(self, request: RecordTask, run_id: uuid.UUID) -> bool:
        """`runs.record_task`, fenced by the caller's worker."""
        return runs.record_task(self._tx, request, run_id, self._worker())

    def report_progress(self, request: ReportProgress, run_id: uuid.UUID) -> bool:
        """`updates.report_progress`, fenced by the caller's worker."""
        return updates.report_progress(self._tx, request, run_id, self._worker())

    def finish(self, request: TransitionRun, run_id: uuid.UUID) -> tuple[RunInfo | None, int]:
        """`runs.transition_run`, fenced by the caller's worker; a child run that ended
        resolves its parent's waits on it. Returns the run as moved (None: fenced out) and
        how many parents were queued."""
        moved = runs.transition_run(self._tx, request, run_id, self._worker())
        parents = 0
        if moved is not None and moved.parent_id is not None and moved.status in TERMINAL:
            parents = waits.resolve_child_waits(self._tx, [run_id])
        return moved, parents

    def begin_wait(self, request: BeginWait, run_id: uuid.UUID) -> RecordedWait | None:
        """`waits.begin_wait`, fenced by the caller's worker."""
        return waits.begin_wait(self._tx, request, run_id, self._worker())

    def suspend(
        self, run_id: uuid.UUID, revision: int, blocked_on: list[tuple[str, str, int]]
    ) -> RunInfo | None:
        """`waits.suspend`, fenced by the caller's worker."""
        return waits.suspend(self._tx, run_id, revision, self._worker(), blocked_on)

    def holds_revision(self, run_id: uuid.UUID, revision: int) -> bool:
        """Whether the caller's worker holds the run at ``revision`` (and locks it)."""
        if waits.holds_revision(self._tx, run_id, revision, self._worker()) is None:
            return False
        self._seen.add(run_id)
        return True

    def child_of(self, parent_id: uuid.UUID, address: str, seq: int) -> RunInfo | None:
        """The child run the caller's run started for a step, if it did."""
        self._require_run(parent_id)
        return runs.child_of(self._tx, parent_id, address, seq)

    # -- schedules ---------------------------------------------------------------------------

    def live_schedule(self, identity: str) -> tuple[ScheduleInfo, str] | None:
        """`schedules.find_live` in the caller's namespace."""
        return schedules.find_live(self._tx, self.scope.home, identity)

    def insert_schedule(
        self,
        *,
        schedule_id: uuid.UUID,
        identity: str,
        definition_hash: str,
        request: object,
        anchor: dt.datetime,
        next_at: dt.datetime,
        due_at: dt.datetime,
    ) -> ScheduleInfo | None:
        """`schedules.insert` in the caller's namespace."""
        return schedules.insert(
            self._tx, namespace=self.scope.home, schedule_id=schedule_id, identity=identity,
            definition_hash=definition_hash, request=request, anchor=anchor,
            next_at=next_at, due_at=due_at,
        )  # fmt: skip

    def schedule(
        self, schedule_id: uuid.UUID, *, lock: bool = False
    ) -> tuple[ScheduleInfo, dt.datetime] | None:
        """The schedule and its anchor, if the caller sees it (locked if ``lock``)."""
        row = schedules.get(self._tx, schedule_id, lock=lock)
        if row is None:
            return None
        info = schedules.schedule_info(row)
        if not self._visible(info.namespace, schedule_id):
            return None
        return info, schedules.anchor_of(row)

    def schedule_by_reference(self, reference_id: str) -> tuple[ScheduleInfo, dt.datetime] | None:
        """The caller's schedule with this reference ID (the live one, else the latest
        deactivated) and its anchor."""
        row = schedules.find_by_reference(self._tx, self.scope.home, reference_id)
        if row is None:
            return None
        info = schedules.schedule_info(row)
        self._seen.add(uuid.UUID(info.id))
        return info, schedules.anchor_of(row)

    def _require_schedule(self, schedule_id: uuid.UUID) -> None:
        if schedule_id not in self._seen and self.schedule(schedule_id) is None:
            raise LookupError(f"schedule {schedule_id} is not the caller's")

    def set_schedule_status(
        self,
        schedule_id: uuid.UUID,
        status: ScheduleStatus,
        next_at: dt.datetime | None = None,
        due_at: dt.datetime | None = None,
    ) -> ScheduleInfo:
        """`schedules.set_status` of a schedule `schedule` found (and locked).

        Raises:
            LookupError: the caller does not see the schedule.
        """
        self._require_schedule(schedule_id)
        return schedules.set_status(self._tx, schedule_id, status, next_at, due_at)

    def recent_runs(self, schedule_id: uuid.UUID, limit: int) -> list[RunInfo]:
        """`schedules.recent_runs` of a schedule the caller sees (else none)."""
        if schedule_id not in self._seen and self.schedule(schedule_id) is None:
            return []
        return schedules.recent_runs(self._tx, schedule_id, limit)

    def list_schedules(
        self,
        *,
        workflow: str | None,
        statuses: tuple[str, ...],
        limit: int,
        cursor: str | None,
    ) -> tuple[list[ScheduleInfo], str | None]:
        """`schedules.list_page` of the caller's namespace."""
        return schedules.list_page(
            self._tx, namespace=self.scope.namespace, workflow=workflow, statuses=statuses,
            limit=limit, cursor=cursor,
        )  # fmt: skip

    # -- concurrency limits ------------------------------------------------------------------

    def list_limits(self, name: str | None) -> list[LimitInfo]:
        """`limits.list_limits` of the caller's namespace."""
        return limits.list_limits(self._tx, self.scope.home, name)

    def may_admit(self, slots: list[tuple[str, str]]) -> bool:
        """`gate.may_admit` in the caller's namespace (the gate's lock held from now on)."""
        return gate.may_admit(self._tx, self.scope.home, slots)

    def make_room(self, slots: list[tuple[ConcurrencyLimit, str]], reason: str) -> list[Stopped]:
        """Before a start of a version whose limits refuse or cancel (under the gate's
        lock): for each such limit whose key is full, refuse the start, or cancel the
        oldest runs of the key (with their descendants) to make room for it.

        Raises:
            aiki.LimitReachedError: a ``refuse`` limit is full (the caller's transaction
                is rolled back: nothing is stored).
        """
        gate.lock(self._tx)
        stopped: list[Stopped] = []
        namespace = self.scope.home
        for limit, key in slots:
            bound, runs = limits.taken(self._tx, namespace, limit.name, key)
            if bound == 0 or len(runs) < bound:
                continue
            if limit.on_limit == "refuse":
                of = f" (key {key})" if limit.key is not None else ""
                raise LimitReachedError(
                    f"limit {limit.name!r}{of} has {len(runs)} of {bound} runs; run {runs[0]} "
                    "holds a slot longest (the limit refuses more)", run_id=runs[0])  # fmt: skip
            for run_id in runs[: len(runs) - bound + 1]:
                stopped += waits.cancel_tree(self._tx, uuid.UUID(run_id), reason)
        return stopped

    def set_limit(self, name: str, per_key: int, total: int | None, by: str) -> LimitInfo | None:
        """`limits.set_limit` in the caller's namespace."""
        return limits.set_limit(self._tx, self.scope.home, name, per_key, total, by)

    # -- API keys ----------------------------------------------------------------------------

    def create_key(
        self, *, role: Role, namespace: str | None, name: str, expires_at: dt.datetime | None
    ) -> tuple[str, KeyInfo]:
        """`keys.create`: a key of the caller's namespace (an admin key of one namespace
        never makes one of another, or of every namespace).

        Raises:
            aiki.ForbiddenError: ``namespace`` is not the caller's.
        """
        bound = self.scope.namespace
        if bound is not None and namespace != bound:
            raise ForbiddenError(f"this admin key acts in namespace {bound!r}: it makes keys "
                                 "of that namespace only @ $.namespace")  # fmt: skip
        return keys.create(
            self._tx, role=role, namespace=namespace, name=name, expires_at=expires_at
        )

    def list_keys(self, *, include_revoked: bool) -> list[KeyInfo]:
        """`keys.listing` of the caller's namespace."""
        return keys.listing(
            self._tx, include_revoked=include_revoked, namespace=self.scope.namespace
        )

    def revoke_key(self, prefix: str) -> KeyInfo | None:
        """`keys.revoke` of a key of the caller's namespace (another's: None)."""
        return keys.revoke(self._tx, prefix, namespace=self.scope.namespace)
