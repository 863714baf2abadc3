"""SQL for operators' views: a run in full (tasks, attempts, timeline) and the workers."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...protocol import (
    RunDetails,
    TaskAttempt,
    TaskDetail,
    TaskState,
    Transition,
    WorkerInfo,
    is_task_state,
)
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
    return RunDetails(run=run, tasks=tuple(tasks), timeline=tuple(timeline), progress=progress)


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
