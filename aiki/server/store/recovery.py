"""SQL for recovery: claim freshness, stale claims, dead workers, redelivery, pull claims.

A worker's heartbeat refreshes ``claimed_at`` of the runs it holds. A run whose claim is
older than the claim timeout is released and queued again (reason ``recovery``); the
revision bump fences the old owner, which gets a conflict on its next write. Each such
release counts as a lost execution of the run; the one that reaches the server's bound
fails the run instead (a poison pill must not cost workers forever). Runs queued
but published long ago are re-published (Redis may have lost them). While Redis is down,
workers pull queued runs through the server instead (`claim_next`).
"""

from __future__ import annotations

import functools
import uuid
from typing import TYPE_CHECKING, Final

import attrs

from . import history
from .outbox import OutboxEntry
from .runs import R_COLUMNS, RUN_COLUMNS, as_int, run_info
from .transitions import move
from .waits import Stopped, cancel_tree_below, resolve_child_waits

if TYPE_CHECKING:
    from transport.postgres import Transaction

    from ...protocol import RunClaimed


def refresh_claims(tx: Transaction, worker_id: str, run_ids: list[str]) -> list[str] | None:
    """A heartbeat: the worker is alive; refresh the claims it still holds among ``run_ids``
    and return those (None if the worker is not registered)."""
    seen = tx.execute(
        "UPDATE aiki_workers SET last_seen_at = now(), alive = true WHERE id = %s", (worker_id,)
    )
    if not seen:
        return None
    if not run_ids:
        return []
    rows = tx.fetch_all(
        "UPDATE aiki_runs SET claimed_at = now()"
        " WHERE id = ANY(%s::uuid[]) AND worker_id = %s AND status = 'running' RETURNING id",
        (run_ids, worker_id),
    )
    return sorted(str(run_id) for (run_id,) in rows)


LOST: Final = "executions lost"


@attrs.frozen
class LostBound:
    """After how many lost executions a run fails instead of being queued again, and the
    error (JSON) it fails with."""

    max_lost: int
    error_json: str


_LOST_SETS: Final = """lost_executions = r.lost_executions + 1, error = %(error)s::jsonb,
    stop_reason = 'executions lost', claimed_at = NULL, wake_at = NULL,"""


@functools.cache
def _release(where: str, reason: str, *, lost: bool) -> str:
    counted = "r.lost_executions + 1" if lost else "r.lost_executions"
    return f"""
        WITH stale AS (
            SELECT id, status, worker_id FROM aiki_runs WHERE status = 'running' AND {where}
            ORDER BY claimed_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED
        ), {
        move(
            "release",
            "stale",
            reason=f"'{reason}'",
            sets=f"lost_executions = {counted}, claimed_at = NULL,",
        )
    }
        SELECT id, old_worker FROM moved
        """


def _fail_lost(tx: Transaction, where: str, params: dict[str, object], bound: LostBound,
               cause: str) -> list[Stopped]:  # fmt: skip
    """Fail the running runs matching ``where`` whose execution this release would lose
    for the ``max_lost``-th time (cancelling their descendants, resolving parents' waits).
    Returns what stopped: the failed runs first (reason ``executions lost``), then their
    descendants."""
    rows = tx.fetch_all(
        f"""
        WITH doomed AS (
            SELECT id, status, worker_id FROM aiki_runs
            WHERE status = 'running' AND {where} AND lost_executions + 1 >= %(max_lost)s
            ORDER BY claimed_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED
        ), {move("lose", "doomed", reason="%(reason)s", sets=_LOST_SETS)}
        SELECT id, old_worker FROM moved
        """,
        {
            **params,
            "max_lost": bound.max_lost,
            "error": bound.error_json,
            "reason": f"execution lost {bound.max_lost} times ({cause})",
        },
    )
    failed = [Stopped(str(run), "running", None if worker is None else str(worker), LOST)
              for run, worker in rows]  # fmt: skip
    stopped = list(failed)
    for run in failed:
        stopped += cancel_tree_below(tx, uuid.UUID(run.run_id), "parent failed")
    resolve_child_waits(tx, [uuid.UUID(run.run_id) for run in failed])
    return stopped


def release_stale_claims(
    tx: Transaction, claim_timeout_seconds: float, limit: int, bound: LostBound
) -> tuple[list[tuple[str, str | None]], list[Stopped]]:
    """Queue again running runs whose claim was not refreshed in time: (run, old worker)
    for each; and the runs failed instead, their execution lost too often."""
    where = "claimed_at < now() - make_interval(secs => %(timeout)s::float8)"
    params: dict[str, object] = {"timeout": claim_timeout_seconds, "limit": limit}
    failed = _fail_lost(tx, where, params, bound, "claim went stale")
    rows = tx.fetch_all(_release(where, "recovery", lost=True), params)
    released = [(str(run), None if worker is None else str(worker)) for run, worker in rows]
    return released, failed


def mark_dead_workers(
    tx: Transaction, worker_timeout_seconds: float, limit: int, bound: LostBound
) -> tuple[list[str], list[Stopped]]:
    """Workers silent for longer than the timeout are dead; release every run they held
    (failing those whose execution was lost too often). Returns (dead workers, failed)."""
    dead = [str(worker) for (worker,) in tx.fetch_all(
        "UPDATE aiki_workers SET alive = false WHERE alive"
        " AND last_seen_at < now() - make_interval(secs => %s::float8) RETURNING id",
        (worker_timeout_seconds,),
    )]  # fmt: skip
    if not dead:
        return dead, []
    where = "worker_id = ANY(%(dead)s::text[])"
    params: dict[str, object] = {"dead": dead, "limit": limit}
    failed = _fail_lost(tx, where, params, bound, "worker dead")
    tx.fetch_all(_release(where, "worker dead", lost=True), params)
    return dead, failed


def deregister(tx: Transaction, worker_id: str, limit: int) -> int:
    """A worker stopped: mark it gone and queue again the runs it still holds; return how
    many runs were queued."""
    tx.execute(
        "UPDATE aiki_workers SET alive = false, last_seen_at = now() WHERE id = %s", (worker_id,)
    )
    released = tx.fetch_all(
        _release("worker_id = %(worker)s", "worker stopped", lost=False),
        {"worker": worker_id, "limit": limit},
    )
    return len(released)


def redeliverable(tx: Transaction, redelivery_seconds: float, limit: int) -> list[OutboxEntry]:
    """Queued runs published longer ago than the redelivery timeout (Redis may have lost
    them): their publish time is reset, and the caller publishes them again."""
    rows = tx.fetch_all(
        """
        WITH stale AS (
            SELECT id FROM aiki_runs
            WHERE status = 'queued' AND gated_at IS NULL
              AND published_at < now() - make_interval(secs => %(timeout)s::float8)
            ORDER BY published_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED
        )
        UPDATE aiki_runs r SET published_at = now() FROM stale WHERE r.id = stale.id
        RETURNING r.id, r.revision, r.workflow, r.version, r.pool, r.namespace
        """,
        {"timeout": redelivery_seconds, "limit": limit},
    )
    return [
        OutboxEntry(0, str(run), as_int(revision), str(workflow), str(version),
                    None if pool is None else str(pool), str(namespace))
        for run, revision, workflow, version, pool, namespace in rows
    ]  # fmt: skip


def claim_next(tx: Transaction, worker_id: str, limit: int) -> list[RunClaimed]:
    """Claim up to ``limit`` queued runs this worker serves (oldest first), with history."""
    rows = tx.fetch_all(
        f"""
        WITH worker AS (
            SELECT versions, pools, namespace FROM aiki_workers WHERE id = %(worker)s
        ), served AS (
            SELECT v ->> 0 AS workflow, v ->> 1 AS version
            FROM worker, jsonb_array_elements(worker.versions) v
        ), picked AS (
            SELECT r.id, r.status, r.worker_id FROM aiki_runs r, worker
            WHERE r.status = 'queued' AND r.gated_at IS NULL AND r.namespace = worker.namespace
              AND (r.workflow, r.version) IN (SELECT workflow, version FROM served)
              AND ((r.pool IS NULL AND worker.pools @> '[null]'::jsonb)
                   OR worker.pools @> jsonb_build_array(r.pool))
            ORDER BY r.updated_at LIMIT %(limit)s
            FOR UPDATE OF r SKIP LOCKED
        ), {
            move(
                "claim",
                "picked",
                reason="'claimed (pull)'",
                worker="%(worker)s::text",
                returning=R_COLUMNS,
            )
        }
        SELECT {RUN_COLUMNS} FROM moved
        """,
        {"worker": worker_id, "limit": limit},
    )
    return [history.claimed(tx, run_info(row)) for row in rows]
