"""The server's SQL: each function runs inside one `transport.postgres.Transaction`
(one thread hop).

Writes that move a run are single statements built from data-modifying CTEs: the run
row, its transition history and its outbox row change together in one round trip.
Worker writes are *fenced*: they apply only while the run still has the revision the
worker was given when it claimed it.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import TYPE_CHECKING, Final

import orjson

from ...errors import ErrorInfo
from ...protocol import (
    RecordedTask,
    RecordTask,
    RunInfo,
    StartOptions,
    TransitionRun,
    is_status,
)
from ...retry import RetryPolicy
from ...wire import make_wire_converter
from .pages import PageBudget, decode_cursor, encode_cursor
from .slots import ADMITTED, GATE_COLUMNS, gate_parameters, gate_sources, gate_values, insert_slots
from .transitions import move, record

if TYPE_CHECKING:
    from transport.postgres import Row, Transaction

    from ...protocol import RunStatus

_CONVERT: Final = make_wire_converter()

RUN_COLUMNS: Final = (
    "id, workflow, version, status, revision, input, output, error, reference_id, pool, "
    "attempt, retry, parent_id, deadline_at, wake_at, stop_reason, created_at, updated_at, "
    "schedule_id, occurrence, namespace, priority, fairness_key, fairness_weight, gated_at"
)


def prefixed_run_columns(alias: str) -> str:
    """`RUN_COLUMNS` qualified by a table alias (``r.id, r.workflow, ...``)."""
    return ", ".join(f"{alias}.{column.strip()}" for column in RUN_COLUMNS.split(","))


R_COLUMNS: Final = prefixed_run_columns("r")
"""`RUN_COLUMNS` of ``aiki_runs r`` (what a moved run returns)."""


def _unexpected(value: object, expected: str) -> TypeError:
    return TypeError(f"expected {expected} from PostgreSQL, got {value!r}")


def as_int(value: object) -> int:
    """A column value known to be an integer.

    Raises:
        TypeError: it is not (the schema and the code disagree: a bug).
    """
    if not isinstance(value, int):
        raise _unexpected(value, "an integer")
    return value


def as_time(value: object) -> dt.datetime:
    """A column value known to be a ``timestamptz`` (see `as_int` for the error)."""
    if not isinstance(value, dt.datetime):
        raise _unexpected(value, "a timestamp")
    return value


def as_uuid(value: object) -> uuid.UUID:
    """A column value known to be a ``uuid`` (see `as_int` for the error)."""
    if not isinstance(value, uuid.UUID):
        raise _unexpected(value, "a UUID")
    return value


def as_status(value: object) -> RunStatus:
    """A column value known to be a run status (see `as_int` for the error)."""
    if not isinstance(value, str) or not is_status(value):
        raise _unexpected(value, "a run status")
    return value


def to_json(value: object) -> str:
    """``value`` as JSON text (for a ``jsonb`` parameter)."""
    return orjson.dumps(value).decode()


def _optional_json(value: object) -> str | None:
    return None if value is None else to_json(value)


def error_json(error: ErrorInfo | None) -> str | None:
    """The JSON text stored for an error."""
    return None if error is None else to_json(_CONVERT.unstructure(error))


def error_of(value: object) -> ErrorInfo:
    """The `ErrorInfo` stored as JSON in ``value``."""
    return _CONVERT.structure(value, ErrorInfo)


def run_info(row: Row) -> RunInfo:
    """Build a `RunInfo` from a row selected with `RUN_COLUMNS`."""
    values = dict(zip(_RUN_FIELDS, row, strict=True))
    error, retry = values["error"], values["retry"]

    def text(name: str) -> str | None:
        value = values[name]
        return None if value is None else str(value)

    return RunInfo(
        id=str(values["id"]),
        workflow=str(values["workflow"]),
        version=str(values["version"]),
        status=values["status"],  # type: ignore[arg-type]
        revision=as_int(values["revision"]),
        input=values["input"],
        output=values["output"],
        error=None if error is None else _CONVERT.structure(error, ErrorInfo),
        reference_id=text("reference_id"),
        pool=text("pool"),
        attempt=as_int(values["attempt"]),
        retry=None if retry is None else _CONVERT.structure(retry, RetryPolicy),
        parent_id=text("parent_id"),
        deadline_at=values["deadline_at"],  # type: ignore[arg-type]
        wake_at=values["wake_at"],  # type: ignore[arg-type]
        stop_reason=text("stop_reason"),
        created_at=values["created_at"],  # type: ignore[arg-type]
        updated_at=values["updated_at"],  # type: ignore[arg-type]
        schedule_id=text("schedule_id"),
        occurrence=values["occurrence"],  # type: ignore[arg-type]
        namespace=str(values["namespace"]),
        priority=as_int(values["priority"]),
        fairness_key=text("fairness_key") or None,
        fairness_weight=as_int(values["fairness_weight"]),
        gated_at=values["gated_at"],  # type: ignore[arg-type]
    )


_RUN_FIELDS: Final = tuple(column.strip() for column in RUN_COLUMNS.split(","))


def new_run_id() -> uuid.UUID:
    """A UUIDv7: time-ordered, so new runs append to the primary-key index."""
    millis = dt.datetime.now(dt.UTC).timestamp() * 1000
    value = (int(millis) << 80) | int.from_bytes(uuid.uuid4().bytes[6:], "big")
    value = (value & ~(0xF << 76)) | (0x7 << 76)  # version 7
    value = (value & ~(0x3 << 62)) | (0x2 << 62)  # RFC 4122 variant
    return uuid.UUID(int=value)


def parse_run_id(text: str) -> uuid.UUID | None:
    """The UUID in ``text``, or None if it is not one (then no such run exists)."""
    try:
        return uuid.UUID(text)
    except (ValueError, AttributeError, TypeError):
        return None


# -- runs ----------------------------------------------------------------------------------------


_STARTED: Final = f"""
            SELECT id, NULL, CASE WHEN %(worker)s::text IS NULL THEN status ELSE 'queued' END,
                   1, 'started', NULL FROM run
            UNION ALL
            SELECT id, 'queued', 'running', 2, 'claimed at start', %(worker)s FROM run
            WHERE %(worker)s::text IS NOT NULL
            UNION ALL
            SELECT id, 'queued', 'queued', 2, '{ADMITTED}', NULL FROM run
            WHERE %(admit)s::boolean AND status = 'queued'"""
"""History of a new run: started (queued, or scheduled), and claimed at once by the
worker starting it as a child, or admitted at once by the gate, if it is
(`lifecycle.MOVES`: ``start``, ``schedule``, ``claim``, ``admit``)."""


def insert_run(
    tx: Transaction,
    *,
    namespace: str,
    run_id: uuid.UUID,
    workflow: str,
    version: str,
    input_json: object,
    input_hash: str,
    options: StartOptions,
    parent_id: uuid.UUID | None = None,
    child_address: str | None = None,
    child_seq: int | None = None,
    fast_lease_seconds: float = 0.0,
    claimed_by: str | None = None,
    wait: bool = False,
    admit: bool = False,
) -> tuple[RunInfo, int | None] | None:
    """Create a run (queued, or scheduled with a trigger) with its history and outbox row.

    A queued run's outbox row is leased for ``fast_lease_seconds`` (the caller publishes it
    right after the commit; the outbox does, should it not) and the run counts as
    published. With ``claimed_by`` (a worker's ID; not for a scheduled start) the run is
    created already claimed by that worker, as its first claim would leave it (running,
    revision 2, history ``started`` then ``claimed at start``), with no outbox row.
    A queued run waits at the gate instead of taking an outbox row if its version names
    concurrency limits, or ``wait`` says so (its queue has no room), unless ``admit``
    says its slots are free (the caller holds the gate's lock and checked,
    `gate.may_admit`): it takes them at once (revision 2, history ``admitted by the
    gate``).
    Returns the run and its outbox row's id (None if not queued or waiting), or None if
    the reference ID exists already.
    """
    scheduled = options.start_delay_seconds is not None or options.start_at is not None
    assert claimed_by is None or not scheduled, "a scheduled start cannot be claimed"
    status = "scheduled" if scheduled else "queued" if claimed_by is None else "running"
    row = tx.fetch_one(
        f"""
        WITH run AS (
            INSERT INTO aiki_runs (id, workflow, version, status, revision, input, input_hash,
                                   reference_id, pool, retry, wake_at, deadline_at, parent_id,
                                   child_address, child_seq, namespace, published_at,
                                   worker_id, claimed_at, {GATE_COLUMNS})
            SELECT %(id)s, %(workflow)s, %(version)s, %(status)s,
                   CASE WHEN %(worker)s::text IS NULL AND NOT %(admit)s::boolean THEN 1 ELSE 2 END,
                   %(input)s::jsonb, %(hash)s,
                   %(reference)s, %(pool)s, %(retry)s::jsonb, planned.at,
                   COALESCE(planned.at, now()) + make_interval(secs => %(timeout)s::float8),
                   %(parent)s, %(child_address)s, %(child_seq)s, %(namespace)s,
                   CASE WHEN %(status)s = 'queued' THEN now() END,
                   %(worker)s, CASE WHEN %(worker)s::text IS NOT NULL THEN now() END,
                   {gate_values("%(status)s")}
            FROM (SELECT CASE WHEN %(start_at)s::timestamptz IS NOT NULL THEN %(start_at)s
                              WHEN %(delay)s::float8 IS NOT NULL
                              THEN now() + make_interval(secs => %(delay)s::float8)
                         END AS at) planned,
                 {gate_sources("%(namespace)s", "%(workflow)s", "%(version)s", "%(parent)s")}
            ON CONFLICT (namespace, workflow, version, reference_id)
                WHERE reference_id IS NOT NULL
            DO NOTHING
            RETURNING {RUN_COLUMNS}
        ), {record("history", _STARTED)}, {insert_slots("slots", "run")}, outbox AS (
            INSERT INTO aiki_outbox (run_id, revision, leased_until)
            SELECT id, revision, now() + make_interval(secs => %(fast_lease)s::float8) FROM run
            WHERE status = 'queued' AND gated_at IS NULL
            RETURNING id
        )
        SELECT {RUN_COLUMNS}, (SELECT id FROM outbox) FROM run
        """,
        {
            "id": run_id, "workflow": workflow, "version": version, "input": to_json(input_json),
            "hash": input_hash, "reference": options.reference_id, "pool": options.pool,
            "retry": None if options.retry is None else to_json(
                _CONVERT.unstructure(options.retry)),
            "status": status, "worker": claimed_by, "start_at": options.start_at,
            "delay": options.start_delay_seconds, "timeout": options.timeout_seconds,
            "parent": parent_id, "child_address": child_address, "child_seq": child_seq,
            "namespace": namespace, "fast_lease": fast_lease_seconds,
            **gate_parameters(options), "wait": wait, "admit": admit,
        },
    )  # fmt: skip
    if row is None:
        return None
    outbox_id = row[-1]
    return run_info(row[:-1]), None if outbox_id is None else as_int(outbox_id)


def find_by_reference(
    tx: Transaction, namespace: str, workflow: str, version: str, reference_id: str
) -> tuple[RunInfo, str] | None:
    """The run with this reference ID in ``namespace``, and its input hash."""
    row = tx.fetch_one(
        f"SELECT {RUN_COLUMNS}, input_hash FROM aiki_runs"
        " WHERE namespace = %s AND workflow = %s AND version = %s AND reference_id = %s",
        (namespace, workflow, version, reference_id),
    )
    return None if row is None else (run_info(row[:-1]), str(row[-1]))


def get_run(tx: Transaction, run_id: uuid.UUID) -> RunInfo | None:
    """The run with this ID."""
    row = tx.fetch_one(f"SELECT {RUN_COLUMNS} FROM aiki_runs WHERE id = %s", (run_id,))
    return None if row is None else run_info(row)


def list_runs(
    tx: Transaction,
    *,
    namespace: str | None,
    workflow: str | None,
    version: str | None,
    statuses: tuple[str, ...],
    reference_id: str | None = None,
    parent_id: uuid.UUID | None = None,
    limit: int,
    cursor: str | None,
) -> tuple[list[RunInfo], str | None]:
    """A page of runs (of ``namespace``; None: of all), newest first (at most ``limit``,
    and `PAGE_BYTES` of payloads), and the cursor of the next page (None at the end)."""
    after_at, after_id = decode_cursor(cursor) if cursor else (None, None)
    page = PageBudget(limit)
    runs: list[RunInfo] = []

    def take(row: Row) -> bool:
        run = run_info(row)
        if not page.take(run.input, run.output, run.error and run.error.message):
            return False
        runs.append(run)
        return True

    _, more = tx.read_while(
        f"""
        SELECT {RUN_COLUMNS} FROM aiki_runs
        WHERE (%(namespace)s::text IS NULL OR namespace = %(namespace)s)
          AND (%(workflow)s::text IS NULL OR workflow = %(workflow)s)
          AND (%(version)s::text IS NULL OR version = %(version)s)
          AND (cardinality(%(statuses)s::text[]) = 0 OR status = ANY(%(statuses)s::text[]))
          AND (%(reference)s::text IS NULL OR reference_id = %(reference)s)
          AND (%(parent)s::uuid IS NULL OR parent_id = %(parent)s)
          AND (%(after_at)s::timestamptz IS NULL OR (created_at, id) < (%(after_at)s, %(after_id)s))
        ORDER BY created_at DESC, id DESC
        LIMIT %(limit)s
        """,
        {
            "namespace": namespace,
            "workflow": workflow,
            "version": version,
            "statuses": list(statuses),
            "reference": reference_id,
            "parent": parent_id,
            "after_at": after_at,
            "after_id": after_id,
            "limit": limit + 1,
        },
        take,
    )
    return runs, (encode_cursor(runs[-1].created_at, runs[-1].id) if more else None)


def child_of(tx: Transaction, parent_id: uuid.UUID, address: str, seq: int) -> RunInfo | None:
    """The child run a parent started for its step ``address``#``seq``, if it did."""
    row = tx.fetch_one(
        f"SELECT {RUN_COLUMNS} FROM aiki_runs"
        " WHERE parent_id = %s AND child_address = %s AND child_seq = %s",
        (parent_id, address, seq),
    )
    return None if row is None else run_info(row)


def run_status(tx: Transaction, run_id: uuid.UUID) -> tuple[RunStatus, int, str] | None:
    """The run's status, revision and namespace."""
    row = tx.fetch_one("SELECT status, revision, namespace FROM aiki_runs WHERE id = %s", (run_id,))
    return None if row is None else (as_status(row[0]), as_int(row[1]), str(row[2]))


def holder(tx: Transaction, run_id: uuid.UUID) -> tuple[RunStatus, int, str | None, str] | None:
    """The run's status, revision, the worker holding its claim, and its namespace (None:
    no run)."""
    row = tx.fetch_one(
        "SELECT status, revision, worker_id, namespace FROM aiki_runs WHERE id = %s", (run_id,)
    )
    if row is None:
        return None
    return as_status(row[0]), as_int(row[1]), None if row[2] is None else str(row[2]), str(row[3])


# -- claims and worker writes -------------------------------------------------------------------

_CLAIM_RUN: Final = f"""
        WITH old AS (
            SELECT id, status, worker_id FROM aiki_runs
            WHERE id = %(id)s AND namespace = %(namespace)s
              AND ((status = 'queued' AND gated_at IS NULL)
                   OR (status = 'running' AND worker_id = %(worker)s))
            FOR UPDATE
        ), {
    move("claim", "old", reason="'claimed'", worker="%(worker)s::text", returning=R_COLUMNS)
}
        SELECT {RUN_COLUMNS} FROM moved
        """

_FINISH_SETS: Final = """output = %(output)s::jsonb, error = %(error)s::jsonb,
    wake_at = CASE WHEN %(delay)s::float8 IS NULL THEN NULL
                   ELSE now() + make_interval(secs => %(delay)s::float8) END,"""

_TRANSITION_RUN: Final = f"""
        WITH held AS (
            SELECT id, status, worker_id FROM aiki_runs
            WHERE id = %(run)s AND revision = %(revision)s AND status = 'running'
              AND worker_id = %(worker)s
            FOR UPDATE
        ), {
    move(
        "finish",
        "held",
        reason="%(reason)s",
        worker="%(worker)s::text",
        target="%(status)s::text",
        returning=R_COLUMNS,
        sets=_FINISH_SETS,
    )
}
        SELECT {RUN_COLUMNS} FROM moved
        """

_REQUEUE_RUN: Final = f"""
        WITH old AS (
            SELECT id, status, worker_id FROM aiki_runs WHERE id = %(run)s FOR UPDATE
        ), {move("requeue", "old", reason="%(reason)s", returning=R_COLUMNS)}
        SELECT {RUN_COLUMNS} FROM moved
        """


def claim_run(tx: Transaction, namespace: str, run_id: uuid.UUID, worker_id: str) -> RunInfo | None:
    """Move a queued run of ``namespace`` to running for ``worker_id``, bumping its revision.

    A claim repeated by the worker that already holds the run (its reply was lost) is
    granted again with a new revision, which fences off any earlier execution.
    """
    row = tx.fetch_one(
        _CLAIM_RUN,
        {"id": run_id, "worker": worker_id, "namespace": namespace},
    )
    return None if row is None else run_info(row)


def recorded_tasks(
    tx: Transaction, run_id: uuid.UUID
) -> tuple[list[RecordedTask], list[tuple[str, int, int]]]:
    """Final task outcomes of a run, and (address, seq, attempts) of unfinished tasks."""
    rows = tx.fetch_all(
        "SELECT address, seq, name, state, attempts, output, error FROM aiki_tasks"
        " WHERE run_id = %s ORDER BY updated_at, address, seq",
        (run_id,),
    )
    final, unfinished = [], []
    for address, seq, name, state, attempts, output, error in rows:
        if state == "running":
            unfinished.append((str(address), as_int(seq), as_int(attempts)))
        else:
            final.append(
                RecordedTask(
                    address=str(address),
                    seq=as_int(seq),
                    name=str(name),
                    state=state,  # type: ignore[arg-type]
                    output=output,
                    error=error,
                    attempts=as_int(attempts),
                )
            )
    return final, unfinished


FENCE: Final = """
    owner AS (
        SELECT id FROM aiki_runs
        WHERE id = %(run)s AND revision = %(revision)s AND status = 'running'
          AND worker_id = %(worker)s
        FOR SHARE
    )"""
"""The run, if the writer holds it: at its revision, running, claimed by the writer."""


def record_task(tx: Transaction, request: RecordTask, run_id: uuid.UUID, worker_id: str) -> bool:
    """Store a task attempt's outcome if ``worker_id`` still holds the run at the
    request's revision.

    Returns:
        False if the write was fenced out (the caller checks why); True otherwise,
        including a repeated report of an outcome already final (idempotent).
    """
    params = {
        "run": run_id,
        "revision": request.revision,
        "worker": worker_id,
        "address": request.address,
        "seq": request.seq,
        "name": request.name,
        "attempt": request.attempt,
        "input": to_json(request.input),
        "output": _optional_json(request.output),
        "error": error_json(request.error),
        "state": "running" if request.state == "attempt_failed" else request.state,
    }
    if request.state == "attempt_failed":
        row = tx.fetch_one(
            f"""
            WITH {FENCE}, task AS (
                INSERT INTO aiki_tasks (run_id, address, seq, name, state, attempts, input)
                SELECT id, %(address)s, %(seq)s, %(name)s, 'running', %(attempt)s, %(input)s::jsonb
                FROM owner
                ON CONFLICT (run_id, address, seq) DO UPDATE
                    SET attempts = GREATEST(aiki_tasks.attempts, EXCLUDED.attempts),
                        updated_at = now()
                    WHERE aiki_tasks.state = 'running'
                RETURNING run_id
            )
            INSERT INTO aiki_task_attempts (run_id, address, seq, attempt, error)
            SELECT run_id, %(address)s, %(seq)s, %(attempt)s, %(error)s::jsonb FROM task
            ON CONFLICT DO NOTHING
            RETURNING 1
            """,
            params,
        )
    else:
        row = tx.fetch_one(
            f"""
            WITH {FENCE}
            INSERT INTO aiki_tasks (run_id, address, seq, name, state, attempts, input, output,
                                    error)
            SELECT id, %(address)s, %(seq)s, %(name)s, %(state)s, %(attempt)s, %(input)s::jsonb,
                   %(output)s::jsonb, %(error)s::jsonb
            FROM owner
            ON CONFLICT (run_id, address, seq) DO UPDATE
                SET state = EXCLUDED.state, attempts = EXCLUDED.attempts,
                    output = EXCLUDED.output, error = EXCLUDED.error, updated_at = now()
                WHERE aiki_tasks.state = 'running'
            RETURNING 1
            """,
            params,
        )
    if row is not None:
        return True
    # Nothing written: fenced out, or the outcome was already final (a repeated report).
    still_owner = tx.fetch_one(
        "SELECT 1 FROM aiki_runs WHERE id = %s AND revision = %s AND status = 'running'"
        " AND worker_id = %s",
        (run_id, request.revision, worker_id),
    )
    return still_owner is not None


def transition_run(
    tx: Transaction, request: TransitionRun, run_id: uuid.UUID, worker_id: str
) -> RunInfo | None:
    """Move a running run ``worker_id`` holds at ``request.revision``; None if fenced out."""
    row = tx.fetch_one(
        _TRANSITION_RUN,
        {
            "status": request.status,
            "output": _optional_json(request.output),
            "error": error_json(request.error),
            "delay": request.retry_delay_seconds,
            "run": run_id,
            "revision": request.revision,
            "reason": request.reason,
            "worker": worker_id,
        },
    )
    return None if row is None else run_info(row)


def requeue_run(tx: Transaction, run_id: uuid.UUID, reason: str) -> RunInfo | None:
    """Release the claim of a running (or stalled) run and queue it again."""
    row = tx.fetch_one(
        _REQUEUE_RUN,
        {"run": run_id, "reason": reason},
    )
    return None if row is None else run_info(row)


# -- timers --------------------------------------------------------------------------------------


def fresh_attempt(runs: str) -> str:
    """CTEs preparing the runs of the CTE ``runs`` for a new attempt that replays what
    completed: their failed tasks are deleted (they run again), the order their steps
    settled in is forgotten (the new attempt replays by address, in the order it reaches
    them), and so are the waits they gave up (it waits afresh). For a workflow retry and
    a client's retry of a failed run alike."""
    return f"""cleared AS (
            DELETE FROM aiki_tasks t USING {runs} WHERE t.run_id = {runs}.id
              AND t.state = 'failed'
        ), unordered AS (
            DELETE FROM aiki_step_order o USING {runs} WHERE o.run_id = {runs}.id
        ), forgotten AS (
            DELETE FROM aiki_waits w USING {runs} WHERE w.run_id = {runs}.id
              AND w.state = 'withdrawn'
        )"""


_REQUEUE_DUE_RETRIES: Final = f"""
        WITH due AS (
            SELECT id, status, worker_id FROM aiki_runs
            WHERE status = 'awaiting_retry' AND wake_at <= now()
            ORDER BY wake_at LIMIT %(limit)s
            FOR UPDATE SKIP LOCKED
        ), {fresh_attempt("due")}, {move("retry", "due", reason="'retry'", sets="wake_at = NULL,")}
        SELECT count(*) FROM moved"""


def requeue_due_retries(tx: Transaction, limit: int) -> int:
    """Queue runs whose retry delay has passed, as a new attempt (`fresh_attempt`);
    return how many."""
    row = tx.fetch_one(
        _REQUEUE_DUE_RETRIES,
        {"limit": limit},
    )
    return 0 if row is None else as_int(row[0])
