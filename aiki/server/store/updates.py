"""SQL for live updates: committed transitions, read in commit-safe windows.

Each transition row carries the id of the transaction that wrote it (``tx``). Every
transaction with an id below the oldest one still running (the snapshot's ``xmin``) has
finished, so the rows in ``[previous xmin, current xmin)`` are final: reading window after
window sees every committed transition exactly once, whatever order transactions commit in.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Final

import orjson

from ...protocol import RunUpdate, TaskProgress
from .runs import RUN_COLUMNS, as_int, as_time, parse_run_id, prefixed_run_columns, run_info

if TYPE_CHECKING:
    from transport.postgres import Row, Transaction

    from ...protocol import ReportProgress, RunInfo

_UPDATE_COLUMNS: Final = f"""
    t.run_id, r.workflow, r.version, t.to_status, t.revision, t.from_status, t.reason, t.at,
    t.to_status IN ('completed', 'failed', 'cancelled') AND r.revision = t.revision,
    r.namespace, {prefixed_run_columns("r")}
"""
_FIXED: Final = 10


def horizon(tx: Transaction) -> int:
    """The oldest transaction id still running: every id below it has finished."""
    row = tx.fetch_one("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint")
    assert row is not None
    return as_int(row[0])


def committed_since(
    tx: Transaction, since: int, only: list[str] | None = None, until: int | None = None
) -> tuple[list[RunUpdate], int]:
    """Transitions written by transactions in ``[since, horizon)`` (of the runs in ``only``,
    if given; below ``until`` too, if given), and that horizon (the next call's ``since``).
    Each run's updates come in revision order."""
    ids = None if only is None else [run for text in only if (run := parse_run_id(text))]
    rows = tx.fetch_all(
        f"""
        WITH h AS (SELECT pg_snapshot_xmin(pg_current_snapshot()) AS x)
        SELECT (SELECT x FROM h)::text::bigint, {_UPDATE_COLUMNS}
        FROM h LEFT JOIN aiki_transitions t
            ON t.tx >= %(since)s::text::xid8 AND t.tx < h.x
               AND (%(until)s::text IS NULL OR t.tx < %(until)s::text::xid8)
               AND (%(all)s OR t.run_id = ANY(%(ids)s::uuid[]))
        LEFT JOIN aiki_runs r ON r.id = t.run_id
        ORDER BY t.run_id, t.revision
        """,
        {
            "since": str(since),
            "until": None if until is None else str(until),
            "all": ids is None,
            "ids": ids or [],
        },
    )
    following = as_int(rows[0][0]) if rows else since
    return [_update(row[1:]) for row in rows if row[1] is not None], following


def history(tx: Transaction, run_ids: tuple[str, ...], after_revision: int) -> list[RunUpdate]:
    """The recorded transitions of ``run_ids`` after ``after_revision``, oldest first."""
    ids = [run_id for text in run_ids if (run_id := parse_run_id(text)) is not None]
    if not ids:
        return []
    rows = tx.fetch_all(
        f"""
        SELECT {_UPDATE_COLUMNS}
        FROM aiki_transitions t JOIN aiki_runs r ON r.id = t.run_id
        WHERE t.run_id = ANY(%(ids)s) AND t.revision > %(after)s
        ORDER BY t.run_id, t.revision
        """,
        {"ids": ids, "after": after_revision},
    )
    return [_update(row) for row in rows]


def _update(row: Row) -> RunUpdate:
    run_id, workflow, version, status, revision, previous, reason, at, final, namespace = row[
        :_FIXED
    ]
    assert isinstance(run_id, uuid.UUID)
    # The run as it ended, when this update is its end (and nothing moved it since).
    run = run_info(row[_FIXED:]) if final else None
    return RunUpdate(
        run_id=str(run_id),
        workflow=str(workflow),
        version=str(version),
        status=status,  # type: ignore[arg-type]
        revision=as_int(revision),
        previous=previous,  # type: ignore[arg-type]
        reason=None if reason is None else str(reason),
        at=at,  # type: ignore[arg-type]
        output=None if run is None else run.output,
        error=None if run is None else run.error,
        run=run,
        namespace=str(namespace),
    )


def runs(tx: Transaction, run_ids: tuple[str, ...]) -> dict[str, RunInfo]:
    """The runs among ``run_ids`` that exist, by ID."""
    ids = [run_id for text in run_ids if (run_id := parse_run_id(text)) is not None]
    rows = tx.fetch_all(f"SELECT {RUN_COLUMNS} FROM aiki_runs WHERE id = ANY(%s)", (ids,))
    found = [run_info(row) for row in rows]
    return {run.id: run for run in found}


def report_progress(
    tx: Transaction, request: ReportProgress, run_id: uuid.UUID, worker_id: str
) -> bool:
    """Keep a running task's latest progress; False unless ``worker_id`` holds the run at
    the request's revision."""
    row = tx.fetch_one(
        """
        INSERT INTO aiki_progress (run_id, address, seq, task, details)
        SELECT id, %(address)s, %(seq)s, %(task)s, %(details)s::jsonb FROM aiki_runs
        WHERE id = %(run)s AND revision = %(revision)s AND status = 'running'
          AND worker_id = %(worker)s
        ON CONFLICT (run_id, address, seq) DO UPDATE
            SET details = EXCLUDED.details, at = now(), tx = pg_current_xact_id()
        RETURNING 1
        """,
        {"run": run_id, "revision": request.revision, "worker": worker_id,
         "address": request.address,
         "seq": request.seq, "task": request.task,
         "details": orjson.dumps(request.details).decode()},
    )  # fmt: skip
    return row is not None


_PROGRESS_COLUMNS: Final = (
    "p.run_id, r.workflow, r.version, p.address, p.seq, p.task, p.details, p.at, r.namespace"
)


def progress_between(
    tx: Transaction, since: int, until: int, only: list[str] | None
) -> list[TaskProgress]:
    """Progress written by transactions in ``[since, until)`` (of the runs in ``only``)."""
    ids = None if only is None else [run for text in only if (run := parse_run_id(text))]
    rows = tx.fetch_all(
        f"""
        SELECT {_PROGRESS_COLUMNS} FROM aiki_progress p JOIN aiki_runs r ON r.id = p.run_id
        WHERE p.tx >= %(since)s::text::xid8 AND p.tx < %(until)s::text::xid8
          AND (%(all)s OR p.run_id = ANY(%(ids)s::uuid[]))
        ORDER BY p.at
        """,
        {"since": str(since), "until": str(until), "all": ids is None, "ids": ids or []},
    )
    return [_progress(row) for row in rows]


def latest_progress(tx: Transaction, run_id: uuid.UUID) -> list[TaskProgress]:
    """Each task's latest progress for one run."""
    rows = tx.fetch_all(
        f"SELECT {_PROGRESS_COLUMNS} FROM aiki_progress p JOIN aiki_runs r ON r.id = p.run_id"
        " WHERE p.run_id = %s ORDER BY p.at",
        (run_id,),
    )
    return [_progress(row) for row in rows]


def _progress(row: Row) -> TaskProgress:
    run_id, workflow, version, address, seq, task, details, at, namespace = row
    return TaskProgress(
        run_id=str(run_id), workflow=str(workflow), version=str(version), address=str(address),
        seq=as_int(seq), task=str(task), details=details, at=as_time(at),
        namespace=str(namespace),
    )  # fmt: skip
