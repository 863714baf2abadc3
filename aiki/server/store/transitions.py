"""The one place that changes a run's status and writes its history, in SQL generated
from the lifecycle's table (`aiki.server.lifecycle.MOVES`).

Every statement that moves runs is built from `move`: a CTE of candidate runs (locked,
with their current status), the event, and what else the statement sets. `move` adds
what the lifecycle decides the same way for every event: the guard (the candidate's
status and the new one must be a pair the table allows for the event: SQL cannot move a
run the table does not let move), the revision bump, the holding worker (set only when
the run becomes ``running``), the attempt (a retry starts the next), the history row,
the concurrency-limit slots the run holds (`_gate_assignments`), and the outbox row of a
run that becomes ``queued`` (it is dispatched exactly then, unless it must first wait at
the gate for its slots). A new run's history goes through `record` too: the one
statement that writes history.

Each statement still moves its runs in one round trip: the lifecycle is compiled into
the statement, not consulted row by row.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from ...protocol import TERMINAL
from ..lifecycle import BY_WORKER, LOSING, MOVES, Event, sources, targets

if TYPE_CHECKING:
    from collections.abc import Sequence


def record(name: str, rows: str) -> str:
    """A CTE ``name`` writing run history: ``rows`` is a SELECT of (run ID, from status,
    to status, revision, reason, worker) for each change."""
    return f"""{name} AS (
            INSERT INTO aiki_transitions (run_id, from_status, to_status, revision, reason,
                                          worker_id)
            {rows}
        )"""


def _literal(text: str) -> str:
    assert "'" not in text, text  # statuses and events are identifiers
    return f"'{text}'"


@functools.cache  # the same statement text for the same arguments, built once
def move(
    event: Event,
    candidates: str,
    *,
    reason: str,
    name: str = "moved",
    target: str | None = None,
    sets: str = "",
    worker: str | None = None,
    returning: str = "r.id, r.status, r.revision",
    lease: str | None = None,
) -> str:
    """CTEs moving the runs of the CTE ``candidates`` by ``event``.

    Args:
        candidates: a CTE with ``id``, ``status`` and ``worker_id`` of each run, locked
            ``FOR UPDATE`` (the statuses the event does not apply to are left alone).
        reason: SQL for the history's reason.
        name: the CTE of the moved runs (``from_status``, ``old_worker`` and
            ``returning``); the history and outbox CTEs are ``<name>_history`` and
            ``<name>_outbox``.
        target: SQL for the new status where the event allows several (a parameter the
            caller checked with the lifecycle); None: the event's only target.
        sets: further assignments (``error = ..., wake_at = NULL``).
        worker: SQL naming the worker causing a claim or a worker's own change.
        returning: columns of ``aiki_runs r`` the moved CTE returns besides ``from_status``
            and ``old_worker``; they include ``id``, ``status`` (the new one) and
            ``revision``, which the history and the outbox read.
        lease: SQL for the outbox row's ``leased_until`` (the dispatcher's fast lane).
    """
    if not sources(event):
        raise ValueError(f"{event} creates runs: their history is written with record()")
    if target is None:
        (only,) = targets(event)
        target = _literal(only)
    pairs = ", ".join(f"({_literal(source)}, {_literal(to)})"
                      for source, choices in sorted(MOVES[event].items(), key=str)
                      if source is not None for to in sorted(choices))  # fmt: skip
    holder = worker if worker is not None else "NULL"
    assignments = [
        f"status = {target}",
        "revision = r.revision + 1",
        f"worker_id = CASE WHEN {target} = 'running' THEN {holder} END",
        "updated_at = now()",
    ]
    if "running" in targets(event):
        assignments.append(f"claimed_at = CASE WHEN {target} = 'running' THEN now() END")
    if event == "retry":
        assignments.append("attempt = r.attempt + 1")
    elif event == "rerun":  # a client's retry of a failed run: its policy applies afresh
        assignments.append("attempt = 1")
    ending = sorted(targets(event) & TERMINAL)
    if ending:  # an ended run has no deadline left
        assignments.append(
            f"deadline_at = CASE WHEN {target} IN ({', '.join(map(_literal, ending))})"
            " THEN NULL ELSE r.deadline_at END"
        )
    if event in BY_WORKER:
        by = holder
    elif event in LOSING:
        by = "old_worker"  # the worker whose execution was lost
    else:
        by = "NULL"
    assignments += _gate_assignments(event, target, ending)
    extra = sets.strip().rstrip(",")
    if extra:
        assignments.insert(0, extra)
    ctes = [
        f"""{name} AS (
            UPDATE aiki_runs r SET {", ".join(assignments)}
            FROM {candidates} c
            WHERE r.id = c.id AND (c.status, {target}) IN (VALUES {pairs})
            RETURNING c.status AS from_status, c.worker_id AS old_worker,
                      r.gated_at IS NOT NULL AS gated, {returning}
        )""",
        record(f"{name}_history",
               f"SELECT id, from_status, status, revision, {reason}, {by} FROM {name}"),
    ]  # fmt: skip
    if "queued" in targets(event):
        columns, values = ("run_id, revision", "id, revision")
        if lease is not None:
            columns, values = columns + ", leased_until", values + f", {lease}"
        ctes.append(f"""{name}_outbox AS (
            INSERT INTO aiki_outbox ({columns})
            SELECT {values} FROM {name} WHERE status = 'queued' AND NOT gated
            RETURNING id, run_id
        )""")
    return ",\n        ".join(ctes)


def _gate_assignments(event: Event, target: str, ending: Sequence[str]) -> list[str]:
    """What a move does to the run's concurrency-limit slots (runs without any have
    ``slots_held`` NULL and keep it).

    Which slots a run holds is a column of its own row (``slots_held``: ``none``, ``all``,
    or ``open``: only those held for the run's whole open life), so it changes in the
    very update that moves the run, under the run's row lock, and a crash or a race
    cannot leave a slot held by a run that moved on. A run holds all its slots while
    queued after the gate let it through, or running; a run leaving for any other
    status keeps only its ``open`` slots, and an ending run none. A run becoming
    ``queued`` without all its slots waits at the gate (``gated_at``) and gets no outbox
    row; the gate ``admit``s it: it takes all its slots, and its outbox row (`store.gate`).
    """
    if event == "admit":
        return [
            "slots_held = CASE WHEN r.slots_held IS NULL THEN NULL ELSE 'all' END",
            "gated_at = NULL",
        ]
    keeps_all = "(r.slots_held = 'all' OR (r.slots_held = 'open' AND r.slots_kind = 'open'))"
    ends = f"{target} IN ({', '.join(map(_literal, ending))})" if ending else "false"
    return [
        f"""slots_held = CASE
            WHEN r.slots_held IS NULL THEN NULL
            WHEN {ends} THEN 'none'
            WHEN {target} IN ('queued', 'running') THEN
                CASE WHEN {keeps_all} THEN 'all' ELSE r.slots_held END
            WHEN r.slots_held IN ('all', 'open') AND r.slots_kind <> 'executing' THEN 'open'
            ELSE 'none' END""",
        f"""gated_at = CASE
            WHEN r.slots_held IS NOT NULL AND {target} = 'queued' AND NOT {keeps_all}
            THEN COALESCE(r.gated_at, now()) END""",
    ]
