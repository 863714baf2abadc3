"""SQL for retrying failed runs after a fix (the lifecycle's ``rerun``).

A retried run is queued again as a fresh first attempt of its version, like a workflow
retry (`runs.fresh_attempt`): its failed tasks run again, its completed tasks are
replayed. Its failed descendants are retried in the same statement, and the
waits of their parents on them are pending again: the parent replays up to the child's
wait and waits for the child's new outcome.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Final

from .runs import R_COLUMNS, RUN_COLUMNS, fresh_attempt, run_info
from .transitions import move

if TYPE_CHECKING:
    import datetime as dt

    from transport.postgres import Transaction

    from ...protocol import RunInfo

_RETRY: Final = f"""
        WITH RECURSIVE tree (id) AS (
            SELECT id FROM aiki_runs WHERE id = ANY(%(roots)s::uuid[]) AND parent_id IS NULL
            UNION
            SELECT c.id FROM aiki_runs c JOIN tree t ON c.parent_id = t.id
            WHERE c.status = 'failed'
        ), old AS (
            SELECT id, status, worker_id FROM aiki_runs
            WHERE id IN (SELECT id FROM tree) AND status = 'failed'
            ORDER BY id FOR UPDATE
        ), {fresh_attempt("old")}, reopened AS (
            UPDATE aiki_waits w SET state = 'pending', result = NULL, resolved_at = NULL
            FROM old parent, old child
            WHERE w.run_id = parent.id AND w.kind = 'child' AND w.key = child.id::text
              AND w.state = 'completed'
        ), {
    move(
        "rerun",
        "old",
        reason="%(reason)s",
        returning=R_COLUMNS,
        sets="error = NULL, output = NULL, wake_at = NULL, stop_reason = NULL,"
        " lost_executions = 0,",
    )
}
        SELECT {RUN_COLUMNS} FROM moved
        """


def retry_runs(tx: Transaction, roots: list[uuid.UUID], reason: str) -> list[RunInfo]:
    """Queue the failed top-level runs among ``roots`` again, with their failed
    descendants; return every run queued (child runs and runs not failed are left
    alone)."""
    return [run_info(row) for row in tx.fetch_all(_RETRY, {"roots": roots, "reason": reason})]


def failed_roots(
    tx: Transaction,
    *,
    namespace: str | None,
    workflow: str,
    version: str | None,
    after: dt.datetime | None,
    before: dt.datetime | None,
    limit: int,
) -> tuple[list[uuid.UUID], bool]:
    """Up to ``limit`` failed top-level runs (of ``namespace``; None: of all) of the
    workflow (and version) that failed in [``after``, ``before``), the earliest first,
    and whether there are more."""
    rows = tx.fetch_all(
        "SELECT id FROM aiki_runs WHERE status = 'failed' AND parent_id IS NULL"
        " AND (%(namespace)s::text IS NULL OR namespace = %(namespace)s)"
        " AND workflow = %(workflow)s"
        " AND (%(version)s::text IS NULL OR version = %(version)s)"
        " AND (%(after)s::timestamptz IS NULL OR updated_at >= %(after)s)"
        " AND (%(before)s::timestamptz IS NULL OR updated_at < %(before)s)"
        " ORDER BY updated_at, id LIMIT %(limit)s + 1",
        {"namespace": namespace, "workflow": workflow, "version": version,
         "after": after, "before": before, "limit": limit},
    )  # fmt: skip
    found = [uuid.UUID(str(row[0])) for row in rows]
    return found[:limit], len(found) > limit
