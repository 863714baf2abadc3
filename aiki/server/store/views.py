"""SQL for operators' views: a run in full (tasks, attempts, waits, timeline), the workers,
and the workflow versions with their open runs and who serves them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import attrs

from ...protocol import (
    ALL_STATUSES,
    TERMINAL,
    PendingWait,
    RunDetails,
    TaskAttempt,
    TaskDetail,
    TaskState,
    Transition,
    VersionInfo,
    WorkerInfo,
    is_task_state,
)
from . import gate, limits
from .runs import as_int, as_status, as_time, error_of, get_run
from .updates import latest_progress

if TYPE_CHECKING:
    import uuid

    from transport.postgres import Transaction

    from ...errors import ErrorInfo


def _task_state(value: object) -> TaskState:
    if not is_task_state(value):
        raise TypeError(f"expected a task state from PostgreSQL, got {value!r}")
    return value


def _error(value: object) -> ErrorInfo | None:
    return None if value is None else error_of(value)


def describe_run(tx: Transaction, run_id: uuid.UUID) -> RunDetails | None:
    """The run, its tasks (in call order) with failed attempts, and its transitions."""
    run = get_run(tx, run_id)
    if run is None:
        return None
    failures: dict[tuple[str, int], list[TaskAttempt]] = {}
    for address, seq, attempt, error, at in tx.fetch_all(
        "SELECT address, seq, attempt, error, recorded_at FROM aiki_task_attempts"
        " WHERE run_id = %s ORDER BY address, seq, attempt",
        (run_id,),
    ):
        failures.setdefault((str(address), as_int(seq)), []).append(
            TaskAttempt(attempt=as_int(attempt), error=_error(error), at=as_time(at))
        )
    tasks = []
    for row in tx.fetch_all(
        "SELECT address, seq, name, state, attempts, input, output, error, created_at,"
        " updated_at FROM aiki_tasks WHERE run_id = %s ORDER BY created_at, address, seq",
        (run_id,),
    ):
        address, seq, name, state, attempts, task_input, output, error, created, updated = row
        key = (str(address), as_int(seq))
        tasks.append(
            TaskDetail(
                address=key[0], seq=key[1], name=str(name), state=_task_state(state),
                attempts=as_int(attempts), input=task_input, output=output, error=_error(error),
                failed_attempts=tuple(failures.get(key, ())),
                created_at=as_time(created),
                updated_at=as_time(updated),
            )
        )  # fmt: skip
    timeline = []
    for previous, status, revision, reason, worker, at in tx.fetch_all(
        "SELECT from_status, to_status, revision, reason, worker_id, at"
        " FROM aiki_transitions WHERE run_id = %s ORDER BY revision, id",
        (run_id,),
    ):
        timeline.append(
            Transition(
                previous=None if previous is None else as_status(previous),
                status=as_status(status), revision=as_int(revision),
                reason=None if reason is None else str(reason),
                worker_id=None if worker is None else str(worker),
                at=as_time(at),
            )
        )  # fmt: skip
    progress = tuple(latest_progress(tx, run_id))
    waits = tuple(pending_waits(tx, run_id)) if run.status in _SUSPENDED else ()
    if run.status == "sleeping" and (ends := [w.until for w in waits if w.until]):
        run = attrs.evolve(run, wake_at=min(ends))
    unserved = None
    if run.status in ("queued", "stalled"):
        unserved = unserved_run(tx, run.namespace, run.workflow, run.version, run.pool)
    gate_wait = None if run.gated_at is None else gate.gate_wait(tx, run_id, run)
    return RunDetails(run=run, tasks=tuple(tasks), timeline=tuple(timeline), progress=progress,
                      waits=waits, unserved=unserved, gate=gate_wait)  # fmt: skip


_SUSPENDED: Final = frozenset({"sleeping", "awaiting_event", "awaiting_child_workflow"})


def _serves(namespace: str, workflow: str, version: str) -> str:
    """SQL: the worker ``w`` registered the version named by these SQL expressions, in
    its namespace."""
    return (f"w.namespace = {namespace} AND w.versions @> jsonb_build_array("
            f"jsonb_build_array({workflow}, {version}))")  # fmt: skip


_SERVES_NAMED: Final = _serves("%(namespace)s", "%(workflow)s::text", "%(version)s::text")
_SERVES_ROW: Final = _serves("v.namespace", "v.workflow", "v.version")


def pending_waits(tx: Transaction, run_id: uuid.UUID) -> list[PendingWait]:
    """The run's unresolved waits, earliest reached first."""
    return [
        PendingWait(kind=kind, key=str(key), seq=as_int(seq),
                    until=None if until is None else as_time(until), since=as_time(since))
        for kind, key, seq, until, since in tx.fetch_all(
            "SELECT kind, key, seq, wake_at, created_at FROM aiki_waits"
            " WHERE run_id = %s AND state = 'pending' ORDER BY created_at, kind, key, seq"
            " LIMIT 100", (run_id,),
        )
        if kind in ("sleep", "event", "child")
    ]  # fmt: skip


def unserved_run(
    tx: Transaction, namespace: str, workflow: str, version: str, pool: str | None
) -> str | None:
    """Why a queued run of this version (and pool) is not taken, if no live worker serves
    them: ``no live worker serves signup@1 since …``; None if one does."""
    row = tx.fetch_one(
        f"""
        SELECT bool_or(w.alive AND w.session IS NOT NULL
                       AND w.pools @> jsonb_build_array(%(pool)s::text)),
               max(w.last_seen_at) FILTER (WHERE w.pools @> jsonb_build_array(%(pool)s::text)),
               (SELECT registered_at FROM aiki_workflow_versions
                WHERE (namespace, workflow, version) = (%(namespace)s, %(workflow)s, %(version)s))
        FROM aiki_workers w WHERE {_SERVES_NAMED}
        """,
        {"namespace": namespace, "workflow": workflow, "version": version, "pool": pool},
    )  # fmt: skip
    if row is None or row[0]:
        return None
    _, seen, registered = row
    named = f"{workflow}@{version}" + ("" if pool is None else f" in pool {pool!r}")
    since = seen if seen is not None else registered
    if since is None:
        return f"no live worker serves {named}"
    return f"no live worker serves {named} since {as_time(since).isoformat(timespec='seconds')}"


def list_versions(
    tx: Transaction, *, namespace: str | None, workflow: str | None
) -> list[VersionInfo]:
    """The registered versions (of ``namespace``; None: of all; of ``workflow`` if given),
    with their open runs by status and their live workers (at most 1000)."""
    open_runs: dict[tuple[str, str, str], dict[str, int]] = {}
    for where, name, version, status, count in tx.fetch_all(
        "SELECT namespace, workflow, version, status, count(*) FROM aiki_runs"
        " WHERE status = ANY(%(open)s::text[])"  # (by the status index: open runs only)
        " AND (%(namespace)s::text IS NULL OR namespace = %(namespace)s)"
        " AND (%(workflow)s::text IS NULL OR workflow = %(workflow)s)"
        " GROUP BY namespace, workflow, version, status",
        {"open": sorted(ALL_STATUSES - TERMINAL), "namespace": namespace, "workflow": workflow},
    ):  # fmt: skip
        open_runs.setdefault((str(where), str(name), str(version)), {})[str(status)] = as_int(count)
    declared = limits.version_limits(tx)
    versions = []
    for where, name, version, registered, live, seen in tx.fetch_all(
        f"""
        SELECT v.namespace, v.workflow, v.version, v.registered_at,
               array(SELECT w.id FROM aiki_workers w
                     WHERE {_SERVES_ROW} AND w.alive AND w.session IS NOT NULL
                     ORDER BY w.id LIMIT 100),
               (SELECT max(w.last_seen_at) FROM aiki_workers w WHERE {_SERVES_ROW})
        FROM aiki_workflow_versions v
        WHERE (%(namespace)s::text IS NULL OR v.namespace = %(namespace)s)
          AND (%(workflow)s::text IS NULL OR v.workflow = %(workflow)s)
        ORDER BY v.namespace, v.workflow, v.version
        LIMIT 1000
        """,
        {"namespace": namespace, "workflow": workflow},
    ):  # fmt: skip
        key = (str(where), str(name), str(version))
        workers = tuple(str(worker) for worker in (live or ()))  # type: ignore[attr-defined]
        runs = open_runs.get(key, {})
        since = None
        if runs and not workers:
            since = as_time(seen if seen is not None else registered)
        versions.append(VersionInfo(
            workflow=key[1], version=key[2], namespace=key[0], registered_at=as_time(registered),
            open_runs=runs, workers=workers, unserved_since=since,
            limits=declared.get(key, ()),
        ))  # fmt: skip
    return versions


def unserved_versions(tx: Transaction) -> list[VersionInfo]:
    """The versions (of every namespace) with open runs and no live worker."""
    return [version for version in list_versions(tx, namespace=None, workflow=None)
            if version.unserved_since is not None]  # fmt: skip


def list_workers(tx: Transaction, *, namespace: str | None, include_gone: bool) -> list[WorkerInfo]:
    """Registered workers (of ``namespace``; None: of all), most recently seen first, with
    how many runs each holds."""
    rows = tx.fetch_all(
        """
        SELECT w.id, w.versions, w.pools, w.concurrency, w.alive, w.registered_at,
               w.last_seen_at, w.session IS NOT NULL,
               (SELECT count(*) FROM aiki_runs r WHERE r.worker_id = w.id AND r.status = 'running'),
               w.namespace
        FROM aiki_workers w
        WHERE (w.alive OR %(gone)s) AND (%(namespace)s::text IS NULL OR w.namespace = %(namespace)s)
        ORDER BY w.last_seen_at DESC, w.id
        LIMIT 1000
        """,
        {"gone": include_gone, "namespace": namespace},
    )
    workers = []
    for (worker_id, versions, pools, concurrency, alive, registered, seen, connected, active,
         where) in rows:  # fmt: skip
        assert isinstance(versions, list)
        assert isinstance(pools, list)
        workers.append(
            WorkerInfo(
                id=str(worker_id),
                versions=tuple(f"{workflow}@{version}" for workflow, version in versions),
                pools=tuple(None if pool is None else str(pool) for pool in pools),
                concurrency=as_int(concurrency),
                alive=bool(alive),
                connected=bool(alive) and bool(connected),
                active_runs=as_int(active),
                registered_at=as_time(registered),
                last_seen_at=as_time(seen),
                namespace=str(where),
            )
        )
    return workers
