"""SQL for the order in which a run's steps settled, and what an execution adds to it.

Each execution of a run notes where each step settled (the handler received its outcome,
or gave the step up): ``aiki_step_order``, one row per step by position. Replay delivers
recorded outcomes in that order. A worker sends what it added with its next write (or on
its own, `record_history`): final task outcomes, and settlements; a settled wait the
handler gave up is withdrawn in the same transaction.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Final

from ...protocol import RunClaimed, Settled
from . import runs, waits
from .runs import as_int

if TYPE_CHECKING:
    from transport.postgres import Transaction

    from ...protocol import HistoryUpdate, RunInfo

_WAIT_KINDS: Final = {"sleep": "sleep", "event": "event", "wait": "child"}
"""Address prefix of a wait -> its kind (see `aiki.protocol.wait_address`)."""


def record_history(
    tx: Transaction, history: HistoryUpdate, run_id: uuid.UUID, revision: int, worker_id: str
) -> bool:
    """Store ``history`` if ``worker_id`` holds the run at ``revision``; False if fenced
    (nothing is written). Repeating a request stores nothing twice.

    One statement per part: the task records and the settlements each check the fence
    themselves (the run row stays locked against a takeover until the transaction ends).
    """
    for task in history.tasks:
        if not runs.record_task(tx, task, run_id, worker_id):
            return False
    settled = history.settled
    if not settled:
        return bool(history.tasks) or waits.holds_revision(
            tx, run_id, revision, worker_id) is not None  # fmt: skip
    row = tx.fetch_one(
        f"""
        WITH {runs.FENCE}, stored AS (
            INSERT INTO aiki_step_order (run_id, position, address, seq, withdrawn, error)
            SELECT owner.id, s.* FROM owner,
                unnest(%(positions)s::int[], %(addresses)s::text[], %(seqs)s::int[],
                       %(withdrawn)s::bool[], %(errors)s::jsonb[]) AS s
            ON CONFLICT DO NOTHING
        )
        SELECT count(*) FROM owner
        """,
        {"run": run_id, "revision": revision, "worker": worker_id,
         "positions": [s.position for s in settled], "addresses": [s.address for s in settled],
         "seqs": [s.seq for s in settled], "withdrawn": [s.withdrawn for s in settled],
         "errors": [runs.error_json(s.error) for s in settled]},
    )  # fmt: skip
    if row is None or not as_int(row[0]):
        return False
    for entry in settled:
        prefix, _, key = entry.address.partition(":")
        if entry.withdrawn and prefix in _WAIT_KINDS:
            waits.withdraw(tx, run_id, _WAIT_KINDS[prefix], key, entry.seq)
    return True


def claimed(tx: Transaction, run: RunInfo) -> RunClaimed:
    """A claim of ``run`` with everything its replay needs: final task outcomes, failed
    attempts of unfinished tasks, waits (in resolution order), children, step order."""
    run_id = uuid.UUID(run.id)
    tasks, unfinished = runs.recorded_tasks(tx, run_id)
    recorded_waits, children = waits.recorded_waits_and_children(tx, run_id)
    return RunClaimed(
        run=run, tasks=tuple(tasks), task_attempts=tuple(unfinished),
        waits=tuple(recorded_waits), children=tuple(children),
        settled=tuple(step_order(tx, run_id)),
    )  # fmt: skip


def step_order(tx: Transaction, run_id: uuid.UUID) -> list[Settled]:
    """Where the run's steps settled so far, by position (for replay after a claim)."""
    found = []
    for position, address, seq, withdrawn, error in tx.fetch_all(
        "SELECT position, address, seq, withdrawn, error FROM aiki_step_order"
        " WHERE run_id = %s ORDER BY position", (run_id,),
    ):  # fmt: skip
        found.append(Settled(
            address=str(address), seq=as_int(seq), position=as_int(position),
            withdrawn=bool(withdrawn),
            error=None if error is None else runs.error_of(error),
        ))  # fmt: skip
    return found


def forget(tx: Transaction, run_ids: list[uuid.UUID]) -> None:
    """Drop the order of the runs' steps (a new workflow attempt replays what is recorded
    by address, in the order its handler reaches it)."""
    tx.execute("DELETE FROM aiki_step_order WHERE run_id = ANY(%s)", (run_ids,))
