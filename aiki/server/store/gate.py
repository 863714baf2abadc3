"""SQL for the gate: runs waiting for their concurrency limits, and letting them through.

A workflow version may name concurrency limits (`aiki.protocol.ConcurrencyLimit`); each
run of it takes one slot of each (``aiki_run_slots``: the limit's name and the key its
input gave, computed in SQL by ``aiki_limit_key`` when the run is created, however it is
created). Which of its slots a run holds is a column of its own row (``slots_held``), so
it changes in the very update that moves the run (`transitions.move`): no count can drift
from the runs that make it, and a crash leaks nothing.

A run that becomes ``queued`` without all its slots waits at the gate (``gated_at``, no
outbox row). `gate_pass`, under one advisory lock (so every server and server process
enforces one limit together), reads the waiting runs, counts the slots held, lets the
pure gate (`aiki.server.gate.release`) choose, and ``admit``s the chosen runs: they take
their slots and their outbox rows in the same statement. Counts only grow there, so
reading them under the lock is enough; every other change only frees slots.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from fractions import Fraction
from typing import TYPE_CHECKING, Final

import attrs

from ..gate import Held, Limit, Waiting, release
from .outbox import OutboxEntry
from .runs import as_int
from .transitions import move

if TYPE_CHECKING:
    from transport.postgres import Transaction


GATE_LOCK: Final = 0x61696B6967617465  # "aikigate": one gate pass at a time, cluster-wide
SEPARATOR: Final = "\x1f"
"""Joins a namespace to a limit's name or a fairness key for the pure gate (neither may
hold it)."""


_WAITING: Final = """
        WITH waiting AS (
            SELECT id, namespace, priority, fairness_key, fairness_weight, gated_at, slots_held
            FROM aiki_runs WHERE gated_at IS NOT NULL AND status = 'queued'
        ), wanted AS (
            SELECT s.run_id, s.namespace, s.name, s.key,
                   row_number() OVER (PARTITION BY s.namespace, s.name, s.key
                                      ORDER BY w.priority DESC, w.gated_at, w.id) AS place
            FROM waiting w JOIN aiki_run_slots s ON s.run_id = w.id
            WHERE w.slots_held = 'none' OR s.holds = 'executing'
        )
        SELECT w.id, w.namespace, w.priority, w.fairness_key, w.fairness_weight,
               array_remove(array_agg(s.name), NULL), array_remove(array_agg(s.key), NULL)
        FROM waiting w LEFT JOIN wanted s ON s.run_id = w.id
        LEFT JOIN aiki_limits l ON (l.namespace, l.name) = (s.namespace, s.name)
        GROUP BY w.id, w.namespace, w.priority, w.fairness_key, w.fairness_weight, w.gated_at
        HAVING bool_and(s.place IS NULL OR l.per_key IS NULL OR s.place <= l.per_key)
        ORDER BY w.priority DESC, w.gated_at, w.id
        LIMIT %(limit)s
        """
"""The waiting runs that may go now, in order: of each key, only as many as its limit
could let through in one pass (a key with 20,000 runs waiting is read as two)."""

_HELD: Final = """
        SELECT s.namespace, s.name, s.key, count(*)
        FROM aiki_runs r JOIN aiki_run_slots s ON s.run_id = r.id
        WHERE r.slots_held IN ('all', 'open') AND (r.slots_held = 'all' OR s.holds = 'open')
        GROUP BY s.namespace, s.name, s.key
        """
"""Slots held now, by limit and key."""

_ADMIT: Final = f"""
        WITH picked AS (
            SELECT id, status, worker_id FROM aiki_runs
            WHERE id = ANY(%(ids)s::uuid[]) AND gated_at IS NOT NULL
            FOR UPDATE
        ), {
    move(
        "admit",
        "picked",
        reason="'admitted by the gate'",
        sets="published_at = now()",
        returning="r.id, r.status, r.revision, r.workflow, r.version, r.pool, r.namespace",
        lease="now() + make_interval(secs => %(lease)s::float8)",
    )
}
        SELECT o.id, m.id, m.revision, m.workflow, m.version, m.pool, m.namespace
        FROM moved m JOIN moved_outbox o ON o.run_id = m.id
        """


@attrs.frozen
class GatePass:
    """What one pass of the gate did."""

    admitted: list[OutboxEntry]
    """The runs let through, with their outbox rows (leased for the caller to publish)."""
    waiting: int
    """Runs it read as waiting (0: the gate has nothing to do)."""
    passes: Mapping[str, Fraction]
    """The fairness keys' passes afterwards, for the next pass."""


def gate_pass(
    tx: Transaction,
    batch: int,
    lease_seconds: float,
    passes: Mapping[str, Fraction] | None = None,
) -> GatePass:
    """Let through up to ``batch`` waiting runs that their limits admit (`release`),
    one pass at a time across the cluster. Their outbox rows are leased for
    ``lease_seconds`` (the caller publishes them at once; the outbox does otherwise)."""
    tx.execute("SELECT pg_advisory_xact_lock(%s)", (GATE_LOCK,))
    rows = tx.fetch_all(_WAITING, {"limit": batch * 4})
    if not rows:
        return GatePass(admitted=[], waiting=0, passes=dict(passes or {}))
    waiting = [
        Waiting(
            run_id=str(run_id), seq=seq, priority=as_int(priority),
            fairness_key=f"{namespace}{SEPARATOR}{fairness_key}",
            weight=as_int(weight),
            slots=tuple((f"{namespace}{SEPARATOR}{name}", str(key))
                        for name, key in zip(names, keys, strict=True)),  # type: ignore[call-overload]
        )
        for seq, (run_id, namespace, priority, fairness_key, weight, names, keys)
        in enumerate(rows)
    ]  # fmt: skip
    per_key: dict[tuple[str, str], int] = {}
    total: dict[str, int] = {}
    for namespace, name, key, count in tx.fetch_all(_HELD):
        limit = f"{namespace}{SEPARATOR}{name}"
        per_key[(limit, str(key))] = as_int(count)
        total[limit] = total.get(limit, 0) + as_int(count)
    limits = {
        f"{namespace}{SEPARATOR}{name}": Limit(
            name=f"{namespace}{SEPARATOR}{name}", per_key=as_int(bound),
            total=None if whole is None else as_int(whole))
        for namespace, name, bound, whole in tx.fetch_all(
            "SELECT namespace, name, per_key, total FROM aiki_limits")
    }  # fmt: skip
    decided = release(waiting, limits, Held(per_key=per_key, total=total), batch, passes)
    admitted: list[OutboxEntry] = []
    if decided.run_ids:
        ids = [uuid.UUID(run_id) for run_id in decided.run_ids]
        for oid, run_id, revision, workflow, version, pool, namespace in tx.fetch_all(
            _ADMIT, {"ids": ids, "lease": lease_seconds}
        ):
            admitted.append(OutboxEntry(
                as_int(oid), str(run_id), as_int(revision), str(workflow), str(version),
                None if pool is None else str(pool), str(namespace)))  # fmt: skip
    return GatePass(admitted=admitted, waiting=len(rows), passes=decided.passes)


# -- why a run waits ----------------------------------------------------------------------------


@attrs.frozen
class SlotState:
    """One slot a run waiting at the gate needs, and how full its limit is."""

    limit: str
    key: str
    holding: int
    """Runs of this key holding a slot now."""
    per_key: int | None
    """The limit's bound per key (None: the limit is not declared any more)."""
    total_holding: int
    total: int | None


def waiting_slots(tx: Transaction, run_id: uuid.UUID) -> list[SlotState]:
    """The slots the run still needs, each with its limit's counts (empty: the run does
    not wait at the gate)."""
    rows = tx.fetch_all(
        """
        SELECT s.name, s.key, l.per_key, l.total,
               (SELECT count(*) FROM aiki_run_slots h JOIN aiki_runs hr ON hr.id = h.run_id
                WHERE (h.namespace, h.name, h.key) = (s.namespace, s.name, s.key)
                  AND (hr.slots_held = 'all' OR (hr.slots_held = 'open' AND h.holds = 'open'))),
               (SELECT count(*) FROM aiki_run_slots h JOIN aiki_runs hr ON hr.id = h.run_id
                WHERE (h.namespace, h.name) = (s.namespace, s.name)
                  AND (hr.slots_held = 'all' OR (hr.slots_held = 'open' AND h.holds = 'open')))
        FROM aiki_runs r JOIN aiki_run_slots s ON s.run_id = r.id
        LEFT JOIN aiki_limits l ON (l.namespace, l.name) = (s.namespace, s.name)
        WHERE r.id = %s AND r.gated_at IS NOT NULL
          AND (r.slots_held = 'none' OR s.holds = 'executing')
        ORDER BY s.name
        """,
        (run_id,),
    )
    return [
        SlotState(str(name), str(key), as_int(held), None if bound is None else as_int(bound),
                  as_int(all_held), None if whole is None else as_int(whole))
        for name, key, bound, whole, held, all_held in rows
    ]  # fmt: skip


def waiting_ahead(tx: Transaction, run_id: uuid.UUID) -> tuple[int, int]:
    """Runs waiting at the gate ahead of this one: of a higher priority, and of its own
    priority that started waiting before it."""
    row = tx.fetch_one(
        """
        SELECT count(*) FILTER (WHERE o.priority > r.priority),
               count(*) FILTER (WHERE o.priority = r.priority
                                AND (o.gated_at, o.id) < (r.gated_at, r.id))
        FROM aiki_runs r JOIN aiki_runs o ON o.gated_at IS NOT NULL AND o.namespace = r.namespace
        WHERE r.id = %s AND r.gated_at IS NOT NULL
        """,
        (run_id,),
    )
    return (0, 0) if row is None else (as_int(row[0] or 0), as_int(row[1] or 0))
