"""SQL for schedules (table ``aiki_schedules``; runs carry ``schedule_id`` and
``occurrence``)."""

from __future__ import annotations

import datetime as dt
import typing
import uuid
from typing import TYPE_CHECKING, Final

import attrs
import orjson

from ...protocol import (
    RunInfo,
    ScheduleInfo,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleStatus,
    StartOptions,
    describe,
)
from ...wire import make_wire_converter
from ..lifecycle import ACTIVE
from .pages import PageBudget, decode_cursor, encode_cursor
from .runs import (
    RUN_COLUMNS,
    as_int,
    as_time,
    as_uuid,
    run_info,
)
from .slots import GATE_COLUMNS, gate_sources, gate_values, insert_slots
from .transitions import record

if TYPE_CHECKING:
    from transport.postgres import Row, Transaction

_CONVERT: Final = make_wire_converter()

COLUMNS: Final = (
    "id, workflow, version, input, spec, policy, options, reference_id, status, next_at, "
    "due_at, last_fired_at, fired, skipped, created_at, updated_at, namespace, anchor"
)
_FIELDS: Final = tuple(column.strip() for column in COLUMNS.split(","))


def _json(value: object) -> str:
    return orjson.dumps(value).decode()


def schedule_info(row: Row) -> ScheduleInfo:
    """Build a `ScheduleInfo` from a row selected with `COLUMNS`."""
    values = dict(zip(_FIELDS, row, strict=True))
    spec = _CONVERT.structure(values["spec"], ScheduleSpec)
    active = values["status"] == "active"
    return ScheduleInfo(
        id=str(values["id"]),
        workflow=str(values["workflow"]),
        version=str(values["version"]),
        input=values["input"],
        spec=spec,
        policy=_CONVERT.structure(values["policy"], SchedulePolicy),
        options=_CONVERT.structure(values["options"], StartOptions),
        reference_id=None if values["reference_id"] is None else str(values["reference_id"]),
        status=values["status"],  # type: ignore[arg-type]
        description=describe(spec),
        next_fire_at=values["next_at"] if active else None,  # type: ignore[arg-type]
        next_due_at=values["due_at"] if active else None,  # type: ignore[arg-type]
        last_fired_at=values["last_fired_at"],  # type: ignore[arg-type]
        fired=as_int(values["fired"]),
        skipped=as_int(values["skipped"]),
        created_at=values["created_at"],  # type: ignore[arg-type]
        updated_at=values["updated_at"],  # type: ignore[arg-type]
        namespace=str(values["namespace"]),
    )


def anchor_of(row: Row) -> dt.datetime:
    """The interval anchor of a row selected with `COLUMNS`."""
    return as_time(row[-1])


def now(tx: Transaction) -> dt.datetime:
    """The transaction's time (PostgreSQL's clock is the one all servers share)."""
    row = tx.fetch_one("SELECT now()")
    assert row is not None
    return as_time(row[0])


def find_live(tx: Transaction, namespace: str, identity: str) -> tuple[ScheduleInfo, str] | None:
    """The active or paused schedule with this identity in ``namespace``, and its
    definition hash."""
    row = tx.fetch_one(
        f"SELECT {COLUMNS}, definition_hash FROM aiki_schedules"
        " WHERE namespace = %s AND identity = %s AND status <> 'deactivated'",
        (namespace, identity),
    )
    return None if row is None else (schedule_info(row[:-1]), str(row[-1]))


def insert(
    tx: Transaction,
    *,
    namespace: str,
    schedule_id: uuid.UUID,
    identity: str,
    definition_hash: str,
    request: typing.Any,
    anchor: dt.datetime,
    next_at: dt.datetime,
    due_at: dt.datetime,
) -> ScheduleInfo | None:
    """Store a new active schedule; None if a live one has this identity already."""
    row = tx.fetch_one(
        f"""
        INSERT INTO aiki_schedules (id, identity, definition_hash, reference_id, workflow,
                                    version, input, spec, policy, options, status, anchor,
                                    next_at, due_at, created_at, updated_at, namespace)
        VALUES (%(id)s, %(identity)s, %(hash)s, %(reference)s, %(workflow)s, %(version)s,
                %(input)s::jsonb, %(spec)s::jsonb, %(policy)s::jsonb, %(options)s::jsonb,
                'active', %(anchor)s, %(next)s, %(due)s, %(anchor)s, %(anchor)s, %(namespace)s)
        ON CONFLICT (namespace, identity) WHERE status <> 'deactivated' DO NOTHING
        RETURNING {COLUMNS}
        """,
        {
            "id": schedule_id, "identity": identity, "hash": definition_hash,
            "reference": request.reference_id, "workflow": request.workflow,
            "version": request.version, "input": _json(request.input),
            "spec": _json(_CONVERT.unstructure(request.spec)),
            "policy": _json(_CONVERT.unstructure(request.policy)),
            "options": _json(_CONVERT.unstructure(request.options)),
            "anchor": anchor, "next": next_at, "due": due_at, "namespace": namespace,
        },
    )  # fmt: skip
    return None if row is None else schedule_info(row)


def get(tx: Transaction, schedule_id: uuid.UUID, *, lock: bool = False) -> Row | None:
    """The schedule's row (`COLUMNS`), locked for update if ``lock``."""
    return tx.fetch_one(
        f"SELECT {COLUMNS} FROM aiki_schedules WHERE id = %s{' FOR UPDATE' if lock else ''}",
        (schedule_id,),
    )


def find_by_reference(tx: Transaction, namespace: str, reference_id: str) -> Row | None:
    """The schedule with this reference ID in ``namespace``: the live one, else the latest
    deactivated."""
    return tx.fetch_one(
        f"SELECT {COLUMNS} FROM aiki_schedules WHERE namespace = %s AND reference_id = %s"
        " ORDER BY status = 'deactivated', created_at DESC LIMIT 1",
        (namespace, reference_id),
    )


def set_status(
    tx: Transaction,
    schedule_id: uuid.UUID,
    status: ScheduleStatus,
    next_at: dt.datetime | None = None,
    due_at: dt.datetime | None = None,
) -> ScheduleInfo:
    """Move the (locked) schedule to ``status``; ``next_at``/``due_at`` when resuming."""
    row = tx.fetch_one(
        f"""
        UPDATE aiki_schedules SET status = %(status)s, updated_at = now(),
               next_at = COALESCE(%(next)s, next_at), due_at = COALESCE(%(due)s, due_at)
        WHERE id = %(id)s RETURNING {COLUMNS}
        """,
        {"status": status, "next": next_at, "due": due_at, "id": schedule_id},
    )
    assert row is not None
    return schedule_info(row)


def list_page(
    tx: Transaction,
    *,
    namespace: str | None,
    workflow: str | None,
    statuses: tuple[str, ...],
    limit: int,
    cursor: str | None,
) -> tuple[list[ScheduleInfo], str | None]:
    """A page of schedules (of ``namespace``; None: of all), newest first, and the next
    page's cursor (None at the end).

    Raises:
        BadRequestError: ``cursor`` is not a cursor.
    """
    after_at, after_id = decode_cursor(cursor) if cursor else (None, None)
    page = PageBudget(limit)
    found: list[ScheduleInfo] = []

    def take(row: Row) -> bool:
        schedule = schedule_info(row)
        if not page.take(schedule.input):
            return False
        found.append(schedule)
        return True

    _, more = tx.read_while(
        f"""
        SELECT {COLUMNS} FROM aiki_schedules
        WHERE (%(namespace)s::text IS NULL OR namespace = %(namespace)s)
          AND (%(workflow)s::text IS NULL OR workflow = %(workflow)s)
          AND (cardinality(%(statuses)s::text[]) = 0 OR status = ANY(%(statuses)s::text[]))
          AND (%(after_at)s::timestamptz IS NULL OR (created_at, id) < (%(after_at)s, %(after_id)s))
        ORDER BY created_at DESC, id DESC
        LIMIT %(limit)s
        """,
        {"namespace": namespace, "workflow": workflow, "statuses": list(statuses),
         "after_at": after_at, "after_id": after_id, "limit": limit + 1},
        take,
    )  # fmt: skip
    return found, (encode_cursor(found[-1].created_at, found[-1].id) if more else None)


def recent_runs(tx: Transaction, schedule_id: uuid.UUID, limit: int) -> list[RunInfo]:
    """The latest runs the schedule started, newest occurrence first."""
    rows = tx.fetch_all(
        f"SELECT {RUN_COLUMNS} FROM aiki_runs WHERE schedule_id = %s"
        " ORDER BY occurrence DESC LIMIT %s",
        (schedule_id, limit),
    )
    return [run_info(row) for row in rows]


# -- firing --------------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class ScheduledStart:
    """One run a schedule's firing starts (queued at once)."""

    run_id: uuid.UUID
    workflow: str
    version: str
    input_json: object
    input_hash: str
    options: StartOptions
    schedule_id: uuid.UUID
    occurrence: dt.datetime
    reason: str


_STARTED: Final = (
    "SELECT run.id, NULL, status, 1, wanted.reason, NULL FROM run JOIN wanted USING (id)"
)
"""History of a schedule's new runs: started queued (`lifecycle.MOVES`: ``start``)."""


_GATE_VALUES: Final = gate_values(
    "'queued'", "w.priority", "w.fairness_key", "w.weight", wait="false", admit="false"
)
"""A scheduled run's priority and fairness key (as its schedule's options say), and its
slots: it waits at the gate if its version names limits."""


def insert_scheduled_runs(tx: Transaction, starts: list[ScheduledStart]) -> list[RunInfo]:
    """Create queued runs with their history and outbox rows, all in one statement (a
    firing may start hundreds). The unique index on (schedule_id, occurrence) refuses a
    second run of an occurrence."""
    if not starts:
        return []
    rows = tx.fetch_all(
        f"""
        WITH wanted AS (
            SELECT * FROM unnest(%(ids)s::uuid[], %(workflows)s::text[], %(versions)s::text[],
                                 %(inputs)s::text[], %(hashes)s::text[], %(pools)s::text[],
                                 %(retries)s::text[], %(timeouts)s::float8[],
                                 %(schedules)s::uuid[], %(occurrences)s::timestamptz[],
                                 %(reasons)s::text[], %(priorities)s::smallint[],
                                 %(fairness_keys)s::text[], %(weights)s::integer[])
                AS w(id, workflow, version, input, input_hash, pool, retry, timeout,
                     schedule_id, occurrence, reason, priority, fairness_key, weight)
        ), run AS (
            INSERT INTO aiki_runs (id, workflow, version, status, revision, input, input_hash,
                                   pool, retry, deadline_at, schedule_id, occurrence, namespace,
                                   {GATE_COLUMNS})
            SELECT w.id, w.workflow, w.version, 'queued', 1, w.input::jsonb, w.input_hash,
                   w.pool, w.retry::jsonb, now() + make_interval(secs => w.timeout),
                   w.schedule_id, w.occurrence, s.namespace,
                   {_GATE_VALUES}
            FROM wanted w JOIN aiki_schedules s ON s.id = w.schedule_id,
                 LATERAL {gate_sources("s.namespace", "w.workflow", "w.version", "NULL::uuid")}
            RETURNING {RUN_COLUMNS}
        ), {record("history", _STARTED)}, {insert_slots("slots", "run")}, outbox AS (
            INSERT INTO aiki_outbox (run_id, revision)
            SELECT id, 1 FROM run WHERE gated_at IS NULL
        )
        SELECT {RUN_COLUMNS} FROM run
        """,
        {
            "ids": [start.run_id for start in starts],
            "workflows": [start.workflow for start in starts],
            "versions": [start.version for start in starts],
            "inputs": [_json(start.input_json) for start in starts],
            "hashes": [start.input_hash for start in starts],
            "pools": [start.options.pool for start in starts],
            "retries": [None if start.options.retry is None
                        else _json(_CONVERT.unstructure(start.options.retry))
                        for start in starts],
            "timeouts": [start.options.timeout_seconds for start in starts],
            "schedules": [start.schedule_id for start in starts],
            "occurrences": [start.occurrence for start in starts],
            "reasons": [start.reason for start in starts],
            "priorities": [start.options.priority for start in starts],
            "fairness_keys": [start.options.fairness_key for start in starts],
            "weights": [start.options.fairness_weight for start in starts],
        },
    )  # fmt: skip
    return [run_info(row) for row in rows]


def lock_due(tx: Transaction, limit: int) -> list[Row]:
    """Active schedules due now, locked; rows another server holds are skipped (it fires
    them)."""
    return tx.fetch_all(
        f"SELECT {COLUMNS} FROM aiki_schedules WHERE status = 'active' AND due_at <= now()"
        " ORDER BY due_at LIMIT %s FOR UPDATE SKIP LOCKED",
        (limit,),
    )


def active_runs(tx: Transaction, schedule_id: uuid.UUID) -> list[uuid.UUID]:
    """The schedule's runs that have not ended (a stalled or paused one counts)."""
    rows = tx.fetch_all(
        "SELECT id FROM aiki_runs WHERE schedule_id = %s AND status = ANY(%s::text[])",
        (schedule_id, list(ACTIVE)),
    )
    return [as_uuid(run_id) for (run_id,) in rows]


@attrs.frozen
class Advance:
    """A schedule moved on by a firing: its next pending occurrence and due time, and how
    many occurrences were started and skipped."""

    schedule_id: uuid.UUID
    next_at: dt.datetime
    due_at: dt.datetime
    fired: int
    skipped: int


def advance_all(tx: Transaction, moves: list[Advance]) -> None:
    """Move the (locked) schedules on and count what the firing did, in one statement."""
    if not moves:
        return
    tx.execute(
        """
        UPDATE aiki_schedules s
        SET next_at = v.next_at, due_at = v.due_at, fired = s.fired + v.fired,
            skipped = s.skipped + v.skipped,
            last_fired_at = CASE WHEN v.fired > 0 THEN now() ELSE s.last_fired_at END,
            updated_at = now()
        FROM unnest(%s::uuid[], %s::timestamptz[], %s::timestamptz[], %s::int8[], %s::int8[])
             AS v(id, next_at, due_at, fired, skipped)
        WHERE s.id = v.id
        """,
        (
            [move.schedule_id for move in moves], [move.next_at for move in moves],
            [move.due_at for move in moves], [move.fired for move in moves],
            [move.skipped for move in moves],
        ),
    )  # fmt: skip


def postpone(tx: Transaction, schedule_id: uuid.UUID, due_at: dt.datetime) -> None:
    """Fire the schedule's pending occurrence no earlier than ``due_at``."""
    tx.execute(
        "UPDATE aiki_schedules SET due_at = %s, updated_at = now() WHERE id = %s",
        (due_at, schedule_id),
    )


def upcoming(tx: Transaction, horizon_seconds: float) -> list[dt.datetime]:
    """Due times of active schedules within the horizon, for the scheduler's heap."""
    rows = tx.fetch_all(
        "SELECT DISTINCT date_trunc('milliseconds', due_at) + interval '1 millisecond'"
        " FROM aiki_schedules WHERE status = 'active'"
        " AND due_at < now() + make_interval(secs => %s)",
        (horizon_seconds,),
    )
    return [as_time(at) for (at,) in rows]
