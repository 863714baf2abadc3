"""SQL for the outbox: runs queued and not yet published to their Redis stream.

A transition to ``queued`` writes an outbox row in the same transaction (`runs`); the
dispatcher leases rows (so several servers can each take some), publishes them, and
deletes them. Runs published long ago and still queued are published again
(`recovery.redeliverable`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

from .runs import as_int

if TYPE_CHECKING:
    from transport.postgres import Transaction


@attrs.frozen
class OutboxEntry:
    """A run to publish: where, and at which revision."""

    outbox_id: int
    run_id: str
    revision: int
    workflow: str
    version: str
    pool: str | None
    namespace: str


def lease_outbox(tx: Transaction, limit: int, lease_seconds: float) -> list[OutboxEntry]:
    """Take up to ``limit`` unpublished outbox rows for ``lease_seconds``."""
    rows = tx.fetch_all(
        """
        UPDATE aiki_outbox o SET leased_until = now() + make_interval(secs => %(lease)s)
        FROM aiki_runs r
        WHERE o.id IN (
            SELECT id FROM aiki_outbox
            WHERE leased_until IS NULL OR leased_until < now()
            ORDER BY id LIMIT %(limit)s
            FOR UPDATE SKIP LOCKED
        ) AND r.id = o.run_id
        RETURNING o.id, o.run_id, o.revision, r.workflow, r.version, r.pool, r.namespace
        """,
        {"lease": lease_seconds, "limit": limit},
    )
    return [
        OutboxEntry(
            as_int(oid),
            str(run_id),
            as_int(rev),
            str(wf),
            str(ver),
            None if pool is None else str(pool),
            str(namespace),
        )
        for oid, run_id, rev, wf, ver, pool, namespace in rows
    ]


def forget_outbox(tx: Transaction, outbox_ids: list[int]) -> None:
    """Forget outbox rows whose runs the fast lane published (their runs were marked
    published when they were queued).

    Committed without waiting for the disk (``synchronous_commit`` off for this
    transaction only): a forget lost in a PostgreSQL crash only publishes those runs once
    more (a duplicate entry, refused at claim), and not waiting keeps this bookkeeping
    out of the way of the commits that runs wait for.
    """
    tx.execute("SET LOCAL synchronous_commit TO off")
    tx.execute("DELETE FROM aiki_outbox WHERE id = ANY(%s)", (outbox_ids,))


def delete_outbox(tx: Transaction, outbox_ids: list[int]) -> None:
    """Forget outbox rows once their runs are published, and note when they were."""
    tx.execute(
        "WITH done AS (DELETE FROM aiki_outbox WHERE id = ANY(%s) RETURNING run_id)"
        " UPDATE aiki_runs SET published_at = now() WHERE id IN (SELECT run_id FROM done)",
        (outbox_ids,),
    )
