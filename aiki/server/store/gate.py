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

from ...protocol import GateWait, LimitWait
from ..gate import Held, Limit, Waiting, release, room_of
from .outbox import OutboxEntry
from .runs import as_int
from .slots import ADMITTED
from .transitions import move

if TYPE_CHECKING:
    from transport.postgres import Transaction

    from ...protocol import RunInfo


GATE_LOCK: Final = 0x61696B6967617465  # "aikigate": one gate pass at a time, cluster-wide
SEPARATOR: Final = "\x1f"
"""Joins a namespace to a limit's name or a fairness key for the pure gate (neither may
hold it)."""


Queue = tuple[str, str, str, str | None]
"""Runs of one queue: namespace, workflow, version, pool."""

_GROUP: Final = "namespace, workflow, version, COALESCE(pool, ''), fairness_key, priority"
"""What splits the waiting runs without limits into groups: their queue, fairness key and
priority (the order of ``aiki_runs_gate_groups``)."""

_WAITING_FREE: Final = f"""
        WITH RECURSIVE groups (ns, wf, ver, pl, fk, pr) AS (
            (SELECT {_GROUP} FROM aiki_runs
             WHERE gated_at IS NOT NULL AND slots_held IS NULL
             ORDER BY {_GROUP} LIMIT 1)
            UNION ALL
            SELECT n.* FROM groups g CROSS JOIN LATERAL (
                SELECT {_GROUP} FROM aiki_runs
                WHERE gated_at IS NOT NULL AND slots_held IS NULL
                  AND ({_GROUP}) > (g.ns, g.wf, g.ver, g.pl, g.fk, g.pr)
                ORDER BY {_GROUP} LIMIT 1
            ) n
        )
        SELECT r.id, r.namespace, r.workflow, r.version, r.pool, r.priority, r.fairness_key,
               r.fairness_weight, '{{}}'::text[], '{{}}'::text[], r.gated_at
        FROM groups g CROSS JOIN LATERAL (
            SELECT * FROM aiki_runs
            WHERE gated_at IS NOT NULL AND slots_held IS NULL
              AND namespace = g.ns AND workflow = g.wf AND version = g.ver
              AND COALESCE(pool, '') = g.pl AND fairness_key = g.fk AND priority = g.pr
            ORDER BY gated_at, id
            LIMIT %(per_group)s
        ) r
        """
"""The waiting runs without limits that may go now: of each group (queue, fairness key,
priority), the oldest ``per_group`` (as many as the roomiest queue could take now). The
groups are found by skipping through the index one group at a time, and each group's runs
read from it in order, so a pass reads a few runs per group however many wait (20,000
runs of one tenant are read as a handful)."""

_WAITING_LIMITED: Final = """
        WITH waiting AS (
            SELECT id, namespace, workflow, version, pool, priority, fairness_key,
                   fairness_weight, gated_at, slots_held
            FROM aiki_runs r
            WHERE gated_at IS NOT NULL AND slots_held IS NOT NULL
              AND NOT EXISTS (
                  SELECT FROM aiki_run_slots s
                  WHERE s.run_id = r.id AND (r.slots_held = 'none' OR s.holds = 'executing')
                    AND (s.namespace, s.name, s.key) IN (
                        SELECT * FROM unnest(%(full_namespaces)s::text[], %(full_names)s::text[],
                                             %(full_keys)s::text[])))
            ORDER BY priority DESC, gated_at, id
            LIMIT %(limit)s
        ), wanted AS (
            SELECT s.run_id, s.namespace, s.name, s.key,
                   row_number() OVER (PARTITION BY s.namespace, s.name, s.key
                                      ORDER BY w.priority DESC, w.gated_at, w.id) AS place
            FROM waiting w JOIN aiki_run_slots s ON s.run_id = w.id
            WHERE w.slots_held = 'none' OR s.holds = 'executing'
        )
        SELECT w.id, w.namespace, w.workflow, w.version, w.pool, w.priority, w.fairness_key,
               w.fairness_weight, array_remove(array_agg(s.name), NULL),
               array_remove(array_agg(s.key), NULL), w.gated_at
        FROM waiting w LEFT JOIN wanted s ON s.run_id = w.id
        LEFT JOIN aiki_limits l ON (l.namespace, l.name) = (s.namespace, s.name)
        GROUP BY w.id, w.namespace, w.workflow, w.version, w.pool, w.priority, w.fairness_key,
                 w.fairness_weight, w.gated_at
        HAVING bool_and(s.place IS NULL OR l.per_key IS NULL OR s.place <= l.per_key)
        """
"""The waiting runs with limits that may go now: the first ``limit`` in order whose keys
have a free slot (the full keys are given: runs of a key with 20,000 waiting and none
free are skipped, not read into the pass), and of each key only as many as its limit
could let through."""

_HELD: Final = """
        SELECT s.namespace, s.name, s.key, count(*)
        FROM aiki_runs r JOIN aiki_run_slots s ON s.run_id = r.id
        WHERE r.slots_held IN ('all', 'open') AND (r.slots_held = 'all' OR s.holds = 'open')
        GROUP BY s.namespace, s.name, s.key
        """
"""Slots held now, by limit and key."""

_ROOM: Final = """
        WITH live AS (
            SELECT w.id, w.namespace, w.concurrency, w.versions, w.pools
            FROM aiki_workers w
            WHERE w.alive AND w.last_seen_at > now() - make_interval(secs => %(live)s::float8)
        ), busy AS (
            SELECT worker_id, count(*) AS running FROM aiki_runs
            WHERE status = 'running' AND worker_id IN (SELECT id FROM live)
            GROUP BY worker_id
        ), free AS (
            SELECT l.namespace, v ->> 0 AS workflow, v ->> 1 AS version, p #>> '{}' AS pool,
                   sum(greatest(l.concurrency - COALESCE(b.running, 0), 0))::bigint AS slots,
                   count(*) AS workers
            FROM live l LEFT JOIN busy b ON b.worker_id = l.id,
                 jsonb_array_elements(l.versions) v, jsonb_array_elements(l.pools) p
            GROUP BY 1, 2, 3, 4
        ), sent AS (
            SELECT namespace, workflow, version, pool, count(*) AS runs FROM aiki_runs
            WHERE status = 'queued' AND gated_at IS NULL
            GROUP BY namespace, workflow, version, pool
        )
        SELECT f.namespace, f.workflow, f.version, f.pool, f.slots, f.workers,
               COALESCE(s.runs, 0)
        FROM free f LEFT JOIN sent s
          ON (s.namespace, s.workflow, s.version) = (f.namespace, f.workflow, f.version)
         AND s.pool IS NOT DISTINCT FROM f.pool
        """
"""Per queue some live worker serves: its workers' free slots (their concurrency less
the runs they hold; a worker serving several queues counts for each), how many they are,
and the runs sent to it and not yet claimed (`aiki.server.gate.room` makes the room of
them). A queue no live worker serves has no entry: its runs go to its stream as they come
(and wait there for a worker, or stall)."""

_ADMIT: Final = f"""
        WITH picked AS (
            SELECT id, status, worker_id FROM aiki_runs
            WHERE id = ANY(%(ids)s::uuid[]) AND gated_at IS NOT NULL
            FOR UPDATE
        ), {
    move(
        "admit",
        "picked",
        reason=f"'{ADMITTED}'",
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
    """What one pass of the gate did, and what it saw."""

    admitted: list[OutboxEntry]
    """The runs let through, with their outbox rows (leased for the caller to publish)."""
    waiting: int
    """Runs waiting at the gate before the pass (0: it has nothing to do)."""
    passes: Mapping[str, Fraction]
    """The fairness keys' passes afterwards, for the next pass."""
    room: Mapping[Queue, int]
    """Per queue a live worker serves, how many more runs it can take now (after those
    admitted): a start may go straight to a queue with room and nothing waiting."""
    backlog: frozenset[Queue]
    """Queues with runs still waiting at the gate after the pass."""


def lock(tx: Transaction) -> None:
    """Hold the gate's lock until the transaction ends: no pass, on any server, admits
    a run meanwhile (a start that refuses or cancels for a limit decides under it)."""
    tx.execute("SELECT pg_advisory_xact_lock(%s)", (GATE_LOCK,))


_FREE_SLOT: Final = """
        SELECT l.per_key, l.total,
               (SELECT count(*) FROM aiki_run_slots h JOIN aiki_runs r ON r.id = h.run_id
                WHERE (h.namespace, h.name, h.key) = (l.namespace, l.name, %(key)s)
                  AND (r.slots_held = 'all' OR (r.slots_held = 'open' AND h.holds = 'open'))),
               EXISTS (SELECT FROM aiki_run_slots h JOIN aiki_runs r ON r.id = h.run_id
                       WHERE (h.namespace, h.name, h.key) = (l.namespace, l.name, %(key)s)
                         AND r.gated_at IS NOT NULL),
               CASE WHEN l.total IS NULL THEN 0 ELSE (
                   SELECT count(*) FROM aiki_run_slots h JOIN aiki_runs r ON r.id = h.run_id
                   WHERE (h.namespace, h.name) = (l.namespace, l.name)
                     AND (r.slots_held = 'all' OR (r.slots_held = 'open' AND h.holds = 'open')))
               END
        FROM aiki_limits l WHERE (l.namespace, l.name) = (%(namespace)s, %(name)s)
        """
"""A limit's bounds, the runs of one key holding its slot, whether any run waits at the
gate for that key, and the runs holding its slots over all keys (counted only if it
has a total)."""


def may_admit(tx: Transaction, namespace: str, slots: list[tuple[str, str]]) -> bool:
    """Whether a new run needing ``slots`` ((limit name, key) pairs) may take them at
    once: each key has a slot free and no run waits for it (first come, first served),
    and each limit's total has room. Takes the gate's lock (until the transaction
    ends): no pass admits meanwhile, so the answer holds until the run is inserted."""
    lock(tx)
    for name, key in slots:
        row = tx.fetch_one(_FREE_SLOT, {"namespace": namespace, "name": name, "key": key})
        if row is None:
            continue  # not declared any more: it bounds nothing
        per_key, total, holding, queued, all_holding = row
        if queued or as_int(holding) >= as_int(per_key):
            return False
        if total is not None and as_int(all_holding) >= as_int(total):
            return False
    return True


def gate_pass(
    tx: Transaction,
    batch: int,
    lease_seconds: float,
    live_seconds: float,
    ahead: int = 0,
    offered: Mapping[Queue, int] | None = None,
    passes: Mapping[str, Fraction] | None = None,
) -> GatePass:
    """Let through up to ``batch`` waiting runs that their queues have room for and
    their limits admit (`release`), one pass at a time across the cluster. Their outbox
    rows are leased for ``lease_seconds`` (the caller publishes them at once; the outbox
    does otherwise). Workers not seen for ``live_seconds`` count for nothing; each live
    one has room for ``ahead`` runs more than its free slots (kept busy between passes),
    and none for the slots ``offered`` to starts (a worker reads no stream for those)."""
    lock(tx)
    # Small queries the planner overestimates (JSON arrays): compiling them cost more than
    # running them (90 ms against 3).
    tx.execute("SET LOCAL jit = off")
    offers = offered or {}
    room: dict[Queue, int] = {}
    for ns, wf, ver, pool, free, workers, sent in tx.fetch_all(_ROOM, {"live": live_seconds}):
        queue = (str(ns), str(wf), str(ver), None if pool is None else str(pool))
        room[queue] = room_of(free=as_int(free) - offers.get(queue, 0),
                              workers=as_int(workers), sent=as_int(sent), ahead=ahead)  # fmt: skip
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
    full = [(*limit.split(SEPARATOR, 1), key) for (limit, key), count in per_key.items()
            if limit in limits and count >= limits[limit].per_key]  # fmt: skip
    # As many per group as the roomiest queue can take (a queue no live worker serves
    # takes a batch: it has no room to count).
    per_group = max(1, min(batch, max(room.values()) if room else batch))
    rows = sorted(
        tx.fetch_all(_WAITING_FREE, {"per_group": per_group})
        + tx.fetch_all(_WAITING_LIMITED, {
            "limit": batch, "full_namespaces": [ns for ns, _, _ in full],
            "full_names": [name for _, name, _ in full], "full_keys": [key for _, _, key in full],
        }),
        key=lambda row: (-as_int(row[5]), row[10], str(row[0])),
    )  # fmt: skip
    if not rows:
        return GatePass(admitted=[], waiting=0, passes=dict(passes or {}), room=room,
                        backlog=frozenset())  # fmt: skip
    queues: dict[Queue, list[Waiting]] = {}
    for seq, (run_id, namespace, workflow, version, pool, priority, fairness_key, weight,
              names, keys, _) in enumerate(rows):  # fmt: skip
        queue = (str(namespace), str(workflow), str(version), None if pool is None else str(pool))
        queues.setdefault(queue, []).append(Waiting(
            run_id=str(run_id), seq=seq, priority=as_int(priority),
            fairness_key=SEPARATOR.join(map(str, (*queue, fairness_key))), weight=as_int(weight),
            slots=tuple((f"{namespace}{SEPARATOR}{name}", str(key))
                        for name, key in zip(names, keys, strict=True)),  # type: ignore[call-overload]
        ))  # fmt: skip
    held = Held(per_key=per_key, total=total)
    kept = dict(passes or {})
    chosen: list[str] = []
    backlog: set[Queue] = set()
    for queue, waiting in queues.items():
        capacity = min(batch - len(chosen), max(0, room.get(queue, batch)))
        decided = release(waiting, limits, held, capacity, kept)
        held, kept = decided.held, dict(decided.passes)
        chosen += decided.run_ids
        if queue in room:
            room[queue] -= len(decided.run_ids)
        if len(decided.run_ids) < len(waiting):
            backlog.add(queue)
    admitted: list[OutboxEntry] = []
    if chosen:
        ids = [uuid.UUID(run_id) for run_id in chosen]
        for oid, run_id, revision, workflow, version, pool, namespace in tx.fetch_all(
            _ADMIT, {"ids": ids, "lease": lease_seconds}
        ):
            admitted.append(OutboxEntry(
                as_int(oid), str(run_id), as_int(revision), str(workflow), str(version),
                None if pool is None else str(pool), str(namespace)))  # fmt: skip
    return GatePass(admitted=admitted, waiting=len(rows), passes=kept, room=room,
                    backlog=frozenset(backlog))  # fmt: skip


# -- why a run waits ----------------------------------------------------------------------------


def gate_wait(tx: Transaction, run_id: uuid.UUID, run: RunInfo) -> GateWait | None:
    """Why the run waits at the gate: the limits whose slots it lacks, each as full as
    it is, and the runs waiting ahead of it; None if it does not wait."""
    if run.gated_at is None:
        return None
    limits = tuple(
        LimitWait(limit=str(name), key=str(key), holding=as_int(held),
                  per_key=None if bound is None else as_int(bound),
                  total_holding=as_int(all_held), total=None if whole is None else as_int(whole))
        for name, key, bound, whole, held, all_held in tx.fetch_all(_SLOTS_WANTED, (run_id,))
    )  # fmt: skip
    row = tx.fetch_one(_AHEAD, (run_id,))
    higher, same = (0, 0) if row is None else (as_int(row[0] or 0), as_int(row[1] or 0))
    return GateWait(since=run.gated_at, limits=limits, ahead=higher + same, ahead_higher=higher,
                    summary=summary(limits, higher, same, run.priority))  # fmt: skip


def summary(limits: tuple[LimitWait, ...], higher: int, same: int, priority: int) -> str:
    """Why a run waits at the gate, in a sentence."""
    full = [limit for limit in limits if limit.per_key is not None and (
        limit.holding >= limit.per_key
        or (limit.total is not None and limit.total_holding >= limit.total))]  # fmt: skip
    parts = []
    for limit in full:
        assert limit.per_key is not None
        if limit.holding >= limit.per_key:
            of = f"key {limit.key}: " if limit.key else ""
            parts.append(f"waiting for limit {limit.limit!r} ({of}{limit.holding} of "
                         f"{limit.per_key} running)")  # fmt: skip
        else:
            parts.append(f"waiting for limit {limit.limit!r} ({limit.total_holding} of "
                         f"{limit.total} running over all keys)")  # fmt: skip
    if higher:
        parts.append(f"behind {higher} waiting runs of a higher priority than {priority}")
    if same:
        parts.append(f"behind {same} waiting runs of priority {priority}")
    if not parts:
        parts.append("its turn is next (a worker slot of its queue is to free up)")
    return "; ".join(parts)


_SLOTS_WANTED: Final = """
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
        """
"""The slots a waiting run lacks, with its limits' counts."""

_AHEAD: Final = """
        SELECT count(*) FILTER (WHERE o.priority > r.priority),
               count(*) FILTER (WHERE o.priority = r.priority
                                AND (o.gated_at, o.id) < (r.gated_at, r.id))
        FROM aiki_runs r JOIN aiki_runs o
          ON o.gated_at IS NOT NULL AND o.status = 'queued' AND o.namespace = r.namespace
         AND (o.workflow, o.version) = (r.workflow, r.version)
         AND o.pool IS NOT DISTINCT FROM r.pool
        WHERE r.id = %s AND r.gated_at IS NOT NULL
        """
"""Runs waiting at the gate ahead of one in its queue: of a higher priority, and of its
priority waiting since earlier."""


def waiting_by_priority(tx: Transaction) -> list[tuple[str, int, int]]:
    """Runs waiting at the gate, by namespace and priority."""
    return [
        (str(namespace), as_int(priority), as_int(count))
        for namespace, priority, count in tx.fetch_all(
            "SELECT namespace, priority, count(*) FROM aiki_runs"
            " WHERE gated_at IS NOT NULL AND status = 'queued' GROUP BY namespace, priority"
        )
    ]
