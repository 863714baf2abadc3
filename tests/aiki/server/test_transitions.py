"""The SQL that moves runs (`store.transitions.move`) decides as the lifecycle's `step`
does, on a real PostgreSQL: a run in every status (held by a worker while running), every
event, every target asked for; the statement moves the run if and only if `step` does,
to the same status, revision and holder, with `step`'s history row, and an outbox row
exactly when `step` dispatches."""

from __future__ import annotations

import itertools
import uuid
from typing import get_args

import psycopg

from aiki.protocol import RunStatus
from aiki.server import migrations
from aiki.server.lifecycle import (
    EVENTS,
    MOVES,
    Change,
    Event,
    Moved,
    RunState,
    allowed,
    sources,
    step,
    targets,
)
from aiki.server.store.transitions import move
from transport.migrations import apply_migrations_sync

STATUSES: tuple[RunStatus, ...] = get_args(RunStatus)
MOVING = [event for event in EVENTS if sources(event)]
"""Events that move existing runs."""


def _statement(event: Event) -> str:
    several = len(targets(event)) > 1
    return f"""
        WITH c AS (SELECT id, status, worker_id FROM aiki_runs WHERE id = %(id)s FOR UPDATE),
        {move(event, "c", reason="'test'", target="%(target)s::text" if several else None,
              worker="%(worker)s::text", returning="r.id, r.status, r.revision, r.worker_id")}
        SELECT from_status, status, revision, worker_id FROM moved
    """  # fmt: skip


def test_the_statements_move_a_run_exactly_as_the_table_allows(pg_url: str) -> None:
    apply_migrations_sync(pg_url, migrations())
    checked = 0
    with psycopg.connect(pg_url, autocommit=True) as conn:
        for event, status in itertools.product(MOVING, STATUSES):
            for target in sorted(targets(event)):
                run = uuid.uuid4()
                holder = "w1" if status == "running" else None
                conn.execute(
                    "INSERT INTO aiki_runs (id, workflow, version, status, revision, input,"
                    " input_hash, worker_id) VALUES (%s, 'wf', '1', %s, 5, 'null', 'h', %s)",
                    (run, status, holder),
                )
                row = conn.execute(_statement(event), {"id": run, "target": target,
                                                        "worker": "w1"}).fetchone()  # fmt: skip
                before = RunState(status=status, revision=5, worker=holder)
                decided = step(before, Change(event, "test", target=target, worker="w1",
                                              revision=5))  # fmt: skip
                history = conn.execute(
                    "SELECT from_status, to_status, revision, worker_id FROM aiki_transitions"
                    " WHERE run_id = %s", (run,)).fetchall()  # fmt: skip
                outbox = conn.execute("SELECT revision FROM aiki_outbox WHERE run_id = %s",
                                      (run,)).fetchall()  # fmt: skip
                assert isinstance(decided, Moved) == allowed(event, status, target)
                if isinstance(decided, Moved):
                    assert row is not None, (event, status, target)
                    after, moved = decided.run, decided.transition
                    assert row == (status, after.status, after.revision, after.worker)
                    assert history == [(moved.from_status, moved.to_status, moved.revision,
                                        moved.worker)]  # fmt: skip
                    assert outbox == ([(after.revision,)] if decided.dispatch else [])
                else:
                    assert row is None, (event, status, target)
                    assert history == []
                    assert outbox == []
                checked += 1
    assert checked == sum(len(targets(event)) for event in MOVING) * len(STATUSES)
    assert set(EVENTS) - set(MOVING) == {"start", "schedule"}  # new runs: `record`
    assert all(status in STATUSES for moves in MOVES.values() for status in moves if status)
