"""The scheduler: fires schedules' occurrences, as a `Timers` instance of its own.

One firing batch is one transaction: lock the due schedules (``FOR UPDATE SKIP LOCKED``:
a schedule another server is firing is left to it), plan each one's occurrences at the
transaction's time (`aiki._occurrences.plan`: catch-up policy, jitter), apply its overlap
policy against its runs that have not ended, start the runs and move the schedule on.
Starting a run and moving its schedule past that occurrence commit together, so however
many servers run and whenever one dies, each occurrence fires once; the unique index on
``aiki_runs (schedule_id, occurrence)`` would refuse a second start regardless.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import uuid
from typing import TYPE_CHECKING, Final

from ..protocol import Clock, canonical_json, plan
from . import store
from ._timers import Fired
from .store.schedules import anchor_of, schedule_info

if TYPE_CHECKING:
    from transport.postgres import Transaction

    from ..protocol import ScheduleInfo

logger = logging.getLogger(__name__)

BATCH: Final = 100
"""Schedules per firing transaction."""
RETRY_SECONDS: Final = 60.0
"""A schedule whose plan failed (a bug, or a cron expression that stopped matching) is
tried again this much later; its other occurrences are unaffected."""
PER_SCHEDULE: Final = 100
"""Occurrences one schedule may start per transaction (catch-up ``all`` continues in the
next)."""


def fire_schedules(tx: Transaction, *, grace_seconds: float) -> Fired:
    """Fire the occurrences of every due schedule (one batch): plan each, apply overlap
    policies, then start every run in one statement and move every schedule on in
    another."""
    rows = store.schedules.lock_due(tx, BATCH)
    if not rows:
        return Fired()
    now = store.schedules.now(tx)
    starts: list[store.schedules.ScheduledStart] = []
    moves: list[store.schedules.Advance] = []
    stopped: list[store.waits.Stopped] = []
    rewatch: list[dt.datetime] = []
    skipped_total, full = 0, len(rows) >= BATCH
    for row in rows:
        try:
            info = schedule_info(row)
            pending = info.next_fire_at
            assert pending is not None  # active schedules have one
            planned = plan(
                Clock(info.spec, anchor_of(row)), info.policy, schedule_id=info.id,
                pending=pending, now=now, grace_seconds=grace_seconds, limit=PER_SCHEDULE,
            )  # fmt: skip
        except Exception:  # one schedule must not stop the others (nor crash the actor)
            schedule_id = store.runs.as_uuid(row[0])
            logger.exception("schedule %s cannot be planned; retried in %.0f s", schedule_id,
                             RETRY_SECONDS)  # fmt: skip
            retry_at = now + dt.timedelta(seconds=RETRY_SECONDS)
            store.schedules.postpone(tx, schedule_id, retry_at)
            rewatch.append(retry_at)
            continue
        occurrences, superseded, cancelled = _apply_overlap(tx, info, planned.run)
        starts += _starts(info, occurrences)
        skipped = planned.missed + superseded
        if planned.missed:
            logger.warning("schedule %s: %d occurrences missed (catch-up %s)", info.id,
                           planned.missed, info.policy.catchup)  # fmt: skip
        move = store.schedules.Advance(
            uuid.UUID(info.id), planned.next_at, planned.next_due, len(occurrences), skipped
        )
        moves.append(move)
        stopped += cancelled
        skipped_total += skipped
        rewatch.append(planned.next_due)
        full = full or planned.next_due <= now
    started = store.schedules.insert_scheduled_runs(tx, starts)
    store.schedules.advance_all(tx, moves)
    return Fired(queued=len(started), stopped=stopped, rewatch=rewatch, full=full,
                 started=started, skipped=skipped_total)  # fmt: skip


def _apply_overlap(
    tx: Transaction, info: ScheduleInfo, occurrences: tuple[dt.datetime, ...]
) -> tuple[tuple[dt.datetime, ...], int, list[store.waits.Stopped]]:
    """The occurrences to start under the schedule's overlap policy, how many are skipped,
    and the runs cancelled for them."""
    overlap = info.policy.overlap
    if overlap == "allow" or not occurrences:
        return occurrences, 0, []
    active = store.schedules.active_runs(tx, uuid.UUID(info.id))
    if overlap == "skip":
        # The first starts unless a run is active; the ones after it would find it active.
        return (occurrences[:0], len(occurrences), []) if active else (
            occurrences[:1], len(occurrences) - 1, [])  # fmt: skip
    # cancel_previous: each would cancel the one before it at once, so only the latest starts.
    latest = occurrences[-1]
    reason = f"cancelled by schedule {info.id}: occurrence {latest.isoformat()}"
    cancelled = [stop for run_id in active for stop in store.waits.cancel_tree(tx, run_id, reason)]
    return (latest,), len(occurrences) - 1, cancelled


def _starts(
    info: ScheduleInfo, occurrences: tuple[dt.datetime, ...]
) -> list[store.schedules.ScheduledStart]:
    """The runs to insert for the schedule's occurrences."""
    if not occurrences:
        return []
    input_hash = hashlib.sha256(canonical_json(info.input)).hexdigest()
    schedule_id = uuid.UUID(info.id)
    return [
        store.schedules.ScheduledStart(
            run_id=store.runs.new_run_id(),
            workflow=info.workflow,
            version=info.version,
            input_json=info.input,
            input_hash=input_hash,
            options=info.options,
            schedule_id=schedule_id,
            occurrence=occurrence,
            reason=f"schedule {info.id}: occurrence {occurrence.isoformat()}",
        )
        for occurrence in occurrences
    ]
