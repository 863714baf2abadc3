"""SQL for durable waits, events, child runs and run control.

A wait is a row in ``aiki_waits``; the server resolves it (a sleep ran out or was cut
short, an event arrived, a child ended, a timeout passed) and, if its run is suspended
on waits, queues the run again in the same statement. Control operations (cancel,
pause, resume, wakeup) and the timers' firing work on sets of rows in single statements.
"""

from __future__ import annotations

import functools
import uuid
from typing import TYPE_CHECKING, Final

import attrs

from ...protocol import RecordedChild, RecordedWait
from ..lifecycle import ACTIVE
from . import runs
from .runs import R_COLUMNS, RUN_COLUMNS, as_int, as_time, as_uuid, run_info
from .transitions import move

if TYPE_CHECKING:
    import datetime as dt

    from transport.postgres import Transaction

    from ...protocol import BeginWait, RunInfo

_SUSPEND: Final = f"""
        WITH held AS (
            SELECT id, status, worker_id FROM aiki_runs
            WHERE id = %(run)s AND revision = %(revision)s AND status = 'running' FOR UPDATE
        ), {
    move(
        "suspend",
        "held",
        reason="%(reason)s",
        target="%(target)s::text",
        worker="%(worker)s::text",
        returning=R_COLUMNS,
    )
}
        SELECT {RUN_COLUMNS} FROM moved
        """


@functools.cache
def _requeue_suspended(source: str, reason: str) -> str:
    """CTEs that queue the suspended runs whose IDs the CTE ``source`` returns as run_id.

    Every affected run row is locked *whatever its status*: a worker suspending the run
    holds it ``FOR SHARE`` while it checks its waits, so the two serialize and a wait
    resolved during a suspension cannot be missed (the run would sleep forever).
    """
    return f"""
        locked AS (
            SELECT id, status, worker_id FROM aiki_runs
            WHERE id IN (SELECT run_id FROM {source})
            FOR UPDATE
        ), {move("wake", "locked", name="requeued", reason=f"'{reason}'")}"""


def _wait_record(row: tuple[object, ...]) -> RecordedWait:
    kind, key, seq, state, result = row
    return RecordedWait(kind=kind, key=str(key), seq=as_int(seq), state=state,  # type: ignore[arg-type]
                        result=result)  # fmt: skip


# -- waits ---------------------------------------------------------------------------------------


def holds_revision(tx: Transaction, run_id: uuid.UUID, revision: int, worker_id: str) -> str | None:
    """The run's namespace if ``worker_id`` holds it at ``revision`` (it runs, claimed by
    that worker), else None; the row stays locked against a takeover until the
    transaction ends."""
    row = tx.fetch_one(
        "SELECT namespace FROM aiki_runs WHERE id = %s AND revision = %s AND status = 'running'"
        " AND worker_id = %s FOR SHARE", (run_id, revision, worker_id),
    )  # fmt: skip
    return None if row is None else str(row[0])


def begin_wait(
    tx: Transaction, request: BeginWait, run_id: uuid.UUID, worker_id: str
) -> RecordedWait | None:
    """Record a wait the run reached and resolve it at once if possible; None if fenced."""
    if not holds_revision(tx, run_id, request.revision, worker_id):
        return None
    identity = (run_id, request.kind, request.key, request.seq)
    existing = tx.fetch_one(
        "SELECT kind, key, seq, state, result FROM aiki_waits"
        " WHERE run_id = %s AND kind = %s AND key = %s AND seq = %s", identity,
    )  # fmt: skip
    if existing is not None:  # a repeated request (its reply was lost)
        return _wait_record(existing)
    state, result = "pending", None
    if request.kind == "event":
        taken = tx.fetch_one(
            """
            UPDATE aiki_events SET consumed_by = %(seq)s
            WHERE (run_id, name, seq) = (
                SELECT run_id, name, seq FROM aiki_events
                WHERE run_id = %(run)s AND name = %(name)s AND consumed_by IS NULL
                ORDER BY seq LIMIT 1 FOR UPDATE)
            RETURNING payload
            """,
            {"seq": request.seq, "run": run_id, "name": request.key},
        )
        if taken is not None:
            state, result = "completed", taken[0]
    elif request.kind == "child":
        child = runs.parse_run_id(request.key)
        # FOR SHARE: a child ending right now holds its row until it commits; reading the
        # status only after that means either we see it ended, or it sees this wait.
        row = None if child is None else tx.fetch_one(
            "SELECT status, output, error FROM aiki_runs WHERE id = %s AND parent_id = %s"
            " FOR SHARE", (child, run_id),
        )  # fmt: skip
        if row is None:
            raise LookupError(f"run {request.key} is not a child of run {run_id}")
        if row[0] in ("completed", "failed", "cancelled"):
            state, result = "completed", {"status": row[0], "output": row[1], "error": row[2]}
    tx.execute(
        """
        INSERT INTO aiki_waits (run_id, kind, key, seq, state, wake_at, result, resolved_at)
        VALUES (%s, %s, %s, %s, %s,
                CASE WHEN %s::float8 IS NULL THEN NULL
                     ELSE now() + make_interval(secs => %s::float8) END,
                %s::jsonb, CASE WHEN %s = 'pending' THEN NULL ELSE now() END)
        """,
        (*identity, state, request.seconds, request.seconds,
         None if result is None else runs.to_json(result), state),
    )  # fmt: skip
    return RecordedWait(kind=request.kind, key=request.key, seq=request.seq, state=state,  # type: ignore[arg-type]
                        result=result)  # fmt: skip


def suspend(
    tx: Transaction,
    run_id: uuid.UUID,
    revision: int,
    worker_id: str,
    blocked_on: list[tuple[str, str, int]],
) -> RunInfo | None:
    """Suspend a running run on its pending waits, or queue it again right away if one of
    the waits it blocked on was resolved meanwhile. None if fenced out."""
    if not holds_revision(tx, run_id, revision, worker_id):
        return None
    kinds = [kind for kind, _, _ in blocked_on]
    still_pending = tx.fetch_one(
        "SELECT count(*) FROM aiki_waits WHERE run_id = %s AND state = 'pending'"
        " AND (kind, key, seq) IN (SELECT * FROM unnest(%s::text[], %s::text[], %s::int[]))",
        (run_id, kinds, [key for _, key, _ in blocked_on], [seq for _, _, seq in blocked_on]),
    )  # fmt: skip
    ready = still_pending is None or as_int(still_pending[0]) < len(blocked_on) or not blocked_on
    if ready:
        target, reason = "queued", "wait satisfied"
    elif "event" in kinds:
        target, reason = "awaiting_event", "suspended"
    elif "child" in kinds:
        target, reason = "awaiting_child_workflow", "suspended"
    else:
        target, reason = "sleeping", "suspended"
    row = tx.fetch_one(
        _SUSPEND,
        {
            "target": target,
            "run": run_id,
            "revision": revision,
            "reason": reason,
            "worker": worker_id,
        },
    )
    return None if row is None else run_info(row)


def recorded_waits_and_children(
    tx: Transaction, run_id: uuid.UUID
) -> tuple[list[RecordedWait], list[RecordedChild]]:
    """Every wait of a run, in the order the server resolved them (the order replay
    delivers outcomes no execution received yet), and every child it started (for replay
    after a claim)."""
    waits = [_wait_record(row) for row in tx.fetch_all(
        "SELECT kind, key, seq, state, result FROM aiki_waits WHERE run_id = %s"
        " ORDER BY resolved_at NULLS LAST, kind, key, seq", (run_id,),
    )]  # fmt: skip
    children = [
        RecordedChild(address=str(address), seq=as_int(seq), run_id=str(child))
        for child, address, seq in tx.fetch_all(
            "SELECT id, child_address, child_seq FROM aiki_runs WHERE parent_id = %s"
            " ORDER BY created_at, child_address, child_seq",
            (run_id,),
        )
    ]
    return waits, children


def resolve_child_waits(tx: Transaction, ended: list[uuid.UUID]) -> int:
    """Resolve parents' waits on these (now terminal) runs; queue suspended parents."""
    if not ended:
        return 0
    row = tx.fetch_one(
        f"""
        WITH ended AS (
            SELECT id, status, output, error FROM aiki_runs WHERE id = ANY(%(ended)s)
        ), resolved AS (
            UPDATE aiki_waits w
            SET state = 'completed', resolved_at = now(),
                result = jsonb_build_object('status', e.status, 'output', e.output,
                                            'error', e.error)
            FROM ended e
            WHERE w.kind = 'child' AND w.key = e.id::text AND w.state = 'pending'
            RETURNING w.run_id
        ), {_requeue_suspended("resolved", "child ended")}
        SELECT count(*) FROM requeued
        """,
        {"ended": ended},
    )
    return 0 if row is None else as_int(row[0])


# -- events --------------------------------------------------------------------------------------


def lock_run(tx: Transaction, run_id: uuid.UUID) -> tuple[str, str, str, str] | None:
    """Lock a run row for update; return its namespace, workflow, version and status."""
    row = tx.fetch_one(
        "SELECT namespace, workflow, version, status FROM aiki_runs WHERE id = %s FOR UPDATE",
        (run_id,),
    )
    return None if row is None else (str(row[0]), str(row[1]), str(row[2]), str(row[3]))


@attrs.frozen
class EventOutcome:
    """What `send_event` did."""

    seq: int
    duplicate: bool
    requeued: bool


def delivered(
    tx: Transaction, run_id: uuid.UUID, name: str, reference_id: str
) -> EventOutcome | None:
    """The event of this name and reference ID the run already has (a duplicate), or None."""
    seen = tx.fetch_one(
        "SELECT seq FROM aiki_events WHERE run_id = %s AND name = %s AND reference_id = %s",
        (run_id, name, reference_id),
    )
    return None if seen is None else EventOutcome(as_int(seen[0]), duplicate=True, requeued=False)


def send_event(
    tx: Transaction,
    run_id: uuid.UUID,
    name: str,
    payload: object,
    reference_id: str | None,
    *,
    limit: int,
) -> EventOutcome | None:
    """Store an event; hand it to the oldest pending wait for it (queuing a suspended run).
    None, and nothing stored, if the run has taken ``limit`` events already.

    The caller has locked the run row (``lock_run``): events and waits of one run are
    handled one at a time; it has made sure the event is not a duplicate (`delivered`).
    """
    row = tx.fetch_one(
        """
        WITH counted AS (
            UPDATE aiki_runs SET events_received = events_received + 1
            WHERE id = %(run)s AND events_received < %(limit)s RETURNING id
        )
        INSERT INTO aiki_events (run_id, name, seq, reference_id, payload)
        SELECT %(run)s, %(name)s, COALESCE(max(seq), 0) + 1, %(reference)s, %(payload)s::jsonb
        FROM aiki_events WHERE run_id = %(run)s AND name = %(name)s
        HAVING EXISTS (SELECT FROM counted)
        RETURNING seq
        """,
        {"run": run_id, "name": name, "reference": reference_id,
         "payload": runs.to_json(payload), "limit": limit},
    )  # fmt: skip
    if row is None:
        return None
    requeued = route_events(tx, run_id, name)
    return EventOutcome(as_int(row[0]), duplicate=False, requeued=requeued > 0)


def route_events(tx: Transaction, run_id: uuid.UUID, name: str) -> int:
    """Hand the run's events of ``name`` not taken yet to its pending waits for them,
    oldest event to oldest wait (withdrawn waits take none); queue the run if it is
    suspended. Returns how many runs were queued (0 or 1)."""
    row = tx.fetch_one(
        f"""
        WITH free AS (
            SELECT seq, payload, row_number() OVER (ORDER BY seq) AS n FROM aiki_events
            WHERE run_id = %(run)s AND name = %(name)s AND consumed_by IS NULL
        ), waiting AS (
            SELECT seq, row_number() OVER (ORDER BY seq) AS n FROM aiki_waits
            WHERE run_id = %(run)s AND kind = 'event' AND key = %(name)s AND state = 'pending'
        ), pairs AS (
            SELECT f.seq AS event_seq, f.payload, w.seq AS wait_seq
            FROM free f JOIN waiting w USING (n)
        ), taken AS (
            UPDATE aiki_events e SET consumed_by = p.wait_seq FROM pairs p
            WHERE e.run_id = %(run)s AND e.name = %(name)s AND e.seq = p.event_seq
        ), resolved AS (
            UPDATE aiki_waits w SET state = 'completed', result = p.payload, resolved_at = now()
            FROM pairs p
            WHERE w.run_id = %(run)s AND w.kind = 'event' AND w.key = %(name)s
              AND w.seq = p.wait_seq
            RETURNING w.run_id
        ), {_requeue_suspended("resolved", "event received")}
        SELECT count(*) FROM requeued
        """,
        {"run": run_id, "name": name},
    )
    return 0 if row is None else as_int(row[0])


def withdraw(tx: Transaction, run_id: uuid.UUID, kind: str, key: str, seq: int) -> None:
    """The handler gave a wait up (its branch was cancelled): it takes no event and wakes
    nothing. An event it had taken, unseen, goes to the next pending wait for it."""
    row = tx.fetch_one(
        "UPDATE aiki_waits SET state = 'withdrawn', result = NULL,"
        " resolved_at = COALESCE(resolved_at, now())"
        " WHERE run_id = %s AND kind = %s AND key = %s AND seq = %s AND state <> 'withdrawn'"
        " RETURNING kind", (run_id, kind, key, seq),
    )  # fmt: skip
    if row is not None and kind == "event":
        tx.execute(
            "UPDATE aiki_events SET consumed_by = NULL"
            " WHERE run_id = %s AND name = %s AND consumed_by = %s", (run_id, key, seq),
        )  # fmt: skip
        route_events(tx, run_id, key)


# -- control -------------------------------------------------------------------------------------


@attrs.frozen
class Stopped:
    """A run that control moved: where it was, and the worker that held it (if running)."""

    run_id: str
    from_status: str
    worker_id: str | None
    reason: str | None = None
    """Why, when it differs from the whole batch's (e.g. a failed run among the
    descendants cancelled with it)."""


def cancel_tree(tx: Transaction, run_id: uuid.UUID, reason: str) -> list[Stopped]:
    """Cancel the run and every non-terminal descendant (the run first in the result, if it
    was active); resolve parents' waits on them."""
    rows = tx.fetch_all(
        f"""
        WITH RECURSIVE tree AS (
            SELECT id FROM aiki_runs WHERE id = %(run)s
            UNION ALL
            SELECT r.id FROM aiki_runs r JOIN tree t ON r.parent_id = t.id
        ), old AS (
            SELECT id, status, worker_id FROM aiki_runs
            WHERE id IN (SELECT id FROM tree) AND status = ANY(%(active)s::text[])
            FOR UPDATE
        ), {
            move(
                "cancel",
                "old",
                reason="%(reason)s",
                sets="stop_reason = %(reason)s, wake_at = NULL,",
            )
        }
        SELECT id, from_status, old_worker FROM moved
        """,
        {"run": run_id, "active": list(ACTIVE), "reason": reason},
    )
    stopped = [Stopped(str(rid), str(status), None if worker is None else str(worker))
               for rid, status, worker in rows]  # fmt: skip
    # RETURNING has no order: the requested run first (callers check it was active).
    stopped.sort(key=lambda moved: moved.run_id != str(run_id))
    resolve_child_waits(tx, [uuid.UUID(s.run_id) for s in stopped])
    return stopped


def pause(tx: Transaction, run_id: uuid.UUID, reason: str) -> Stopped | None:
    """Pause an active run; None if its status cannot be paused."""
    row = tx.fetch_one(
        f"""
        WITH old AS (
            SELECT id, status, worker_id FROM aiki_runs WHERE id = %(run)s FOR UPDATE
        ), {move("pause", "old", reason="%(reason)s", sets="stop_reason = %(reason)s,")}
        SELECT id, from_status, old_worker FROM moved
        """,
        {"run": run_id, "reason": reason},
    )
    if row is None:
        return None
    return Stopped(str(row[0]), str(row[1]), None if row[2] is None else str(row[2]))


def resume(tx: Transaction, run_id: uuid.UUID, reason: str = "resumed") -> RunInfo | None:
    """Queue a paused run again; None if it is not paused."""
    row = tx.fetch_one(
        f"""
        WITH old AS (
            SELECT id, status, worker_id FROM aiki_runs
            WHERE id = %(run)s AND status = 'paused' FOR UPDATE
        ), {
            move(
                "resume",
                "old",
                reason="%(reason)s",
                sets="stop_reason = NULL,",
                returning=R_COLUMNS,
            )
        }
        SELECT {RUN_COLUMNS} FROM moved
        """,
        {"run": run_id, "reason": reason},
    )
    return None if row is None else run_info(row)


def wakeup(tx: Transaction, run_id: uuid.UUID) -> int:
    """Cut the run's pending sleeps short; queue it if suspended. Returns how many sleeps."""
    row = tx.fetch_one(
        f"""
        WITH resolved AS (
            UPDATE aiki_waits SET state = 'cut_short', resolved_at = now()
            WHERE run_id = %(run)s AND kind = 'sleep' AND state = 'pending'
            RETURNING run_id
        ), {_requeue_suspended("resolved", "woken up")}
        SELECT count(*) FROM resolved
        """,
        {"run": run_id},
    )
    return 0 if row is None else as_int(row[0])


# -- timers --------------------------------------------------------------------------------------


def fire_due_waits(tx: Transaction, limit: int) -> int:
    """Resolve waits whose time came (sleeps end, timeouts pass); queue suspended runs."""
    row = tx.fetch_one(
        f"""
        WITH due AS (
            SELECT run_id, kind, key, seq FROM aiki_waits
            WHERE state = 'pending' AND wake_at <= now()
            ORDER BY wake_at LIMIT %(limit)s
            FOR UPDATE SKIP LOCKED
        ), resolved AS (
            UPDATE aiki_waits w
            SET state = CASE WHEN w.kind = 'sleep' THEN 'completed' ELSE 'timed_out' END,
                resolved_at = now()
            FROM due
            WHERE (w.run_id, w.kind, w.key, w.seq) = (due.run_id, due.kind, due.key, due.seq)
            RETURNING w.run_id
        ), {_requeue_suspended("resolved", "wait due")}
        SELECT count(*) FROM resolved
        """,
        {"limit": limit},
    )
    return 0 if row is None else as_int(row[0])


def queue_scheduled(tx: Transaction, limit: int) -> int:
    """Queue scheduled runs whose start time came."""
    row = tx.fetch_one(
        f"""
        WITH due AS (
            SELECT id, status, worker_id FROM aiki_runs
            WHERE status = 'scheduled' AND wake_at <= now()
            ORDER BY wake_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED
        ), {move("trigger", "due", reason="'triggered'", sets="wake_at = NULL,")}
        SELECT count(*) FROM moved
        """,
        {"limit": limit},
    )
    return 0 if row is None else as_int(row[0])


def fail_overdue(tx: Transaction, limit: int, error_json: str) -> list[Stopped]:
    """Fail runs past their deadline (and cancel their descendants); return what stopped."""
    rows = tx.fetch_all(
        f"""
        WITH due AS (
            SELECT id, status, worker_id FROM aiki_runs
            WHERE deadline_at <= now() AND status = ANY(%(active)s::text[])
            ORDER BY deadline_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED
        ), {
            move(
                "time_out",
                "due",
                reason="'run timeout'",
                sets="error = %(error)s::jsonb, stop_reason = 'timed out', wake_at = NULL,",
            )
        }
        SELECT id, from_status, old_worker FROM moved
        """,
        {"active": list(ACTIVE), "limit": limit, "error": error_json},
    )
    failed = [Stopped(str(rid), str(status), None if worker is None else str(worker))
              for rid, status, worker in rows]  # fmt: skip
    stopped = list(failed)
    for run in failed:
        stopped += cancel_tree_below(tx, uuid.UUID(run.run_id), "parent timed out")
    resolve_child_waits(tx, [uuid.UUID(run.run_id) for run in failed])
    return stopped


def cancel_tree_below(tx: Transaction, run_id: uuid.UUID, reason: str) -> list[Stopped]:
    """Cancel the non-terminal descendants of a run (not the run itself)."""
    stopped: list[Stopped] = []
    for (child,) in tx.fetch_all(
        "SELECT id FROM aiki_runs WHERE parent_id = %s AND status = ANY(%s::text[])",
        (run_id, list(ACTIVE)),
    ):
        stopped += cancel_tree(tx, as_uuid(child), reason)
    return stopped


def mark_stalled(tx: Transaction, after_seconds: float) -> int:
    """Queued runs no worker took for ``after_seconds`` become ``stalled``."""
    row = tx.fetch_one(
        f"""
        WITH idle AS (
            SELECT id, status, worker_id FROM aiki_runs
            WHERE status = 'queued' AND gated_at IS NULL
              AND updated_at < now() - make_interval(secs => %(after)s::float8)
            FOR UPDATE SKIP LOCKED
        ), {move("stall", "idle", reason="'not taken by any worker'")}
        SELECT count(*) FROM moved
        """,
        {"after": after_seconds},
    )
    return 0 if row is None else as_int(row[0])


def upcoming_deadlines(tx: Transaction, horizon_seconds: float) -> list[dt.datetime]:
    """Every distinct deadline (any kind) due within the horizon, for the timers' heap."""
    rows = tx.fetch_all(
        """
        -- Rounded *up* to the millisecond: firing at a time before the true deadline
        -- would find nothing due and lose that deadline until the next scan.
        SELECT DISTINCT date_trunc('milliseconds', at) + interval '1 millisecond' FROM (
            SELECT wake_at AS at FROM aiki_waits
            WHERE state = 'pending' AND wake_at < now() + make_interval(secs => %(h)s)
            UNION ALL
            SELECT wake_at FROM aiki_runs
            WHERE wake_at < now() + make_interval(secs => %(h)s)
            UNION ALL
            SELECT deadline_at FROM aiki_runs
            WHERE deadline_at < now() + make_interval(secs => %(h)s)
        ) due
        """,
        {"h": horizon_seconds},
    )
    return [as_time(at) for (at,) in rows]
