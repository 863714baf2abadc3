"""SQL for workers and the workflow versions they register (with their schemas), each in
its namespace."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from ...protocol import same_schemas
from . import limits
from .runs import to_json

if TYPE_CHECKING:
    from transport.postgres import Transaction

    from ...protocol import VersionSpec


def _schema(schema: object) -> str | None:
    return None if schema is None else to_json(schema)


class WorkerElsewhere(Exception):
    """The worker ID is registered in another namespace."""


class WorkerTaken(Exception):
    """The worker ID is held by a live worker of another incarnation."""


def register_worker(
    tx: Transaction,
    namespace: str,
    worker_id: str,
    versions: tuple[VersionSpec, ...],
    pools: tuple[str | None, ...],
    concurrency: int,
    *,
    incarnation: str,
    live_seconds: float,
    session: str | None = None,
) -> list[tuple[str, str]]:
    """Record a worker and the versions it serves (with their input and event schemas) in
    ``namespace``, held by ``incarnation`` (the process's secret; only its hash is kept).

    An ID already registered is taken over only by the same incarnation, or once its
    worker is gone: deregistered, declared dead, or not seen for ``live_seconds``.

    A version registered before keeps its schemas: versions are immutable. Schemas are
    compared by structure (`aiki.protocol.canonical_schema`): other names of the same
    types are the same version.

    Returns:
        The versions registered before with other schemas (the caller refuses the
        registration, rolling this transaction back); empty if all is well.

    Raises:
        WorkerElsewhere: the worker ID belongs to another namespace (nothing is written:
            the caller's transaction is rolled back).
        WorkerTaken: a live worker of another incarnation holds the ID (likewise).
    """
    created = tx.fetch_all(
        "INSERT INTO aiki_workflow_versions (namespace, workflow, version, input_schema,"
        " event_schemas) SELECT %s, * FROM unnest(%s::text[], %s::text[], %s::text[]::jsonb[],"
        " %s::text[]::jsonb[]) ON CONFLICT (namespace, workflow, version) DO NOTHING"
        " RETURNING workflow, version",
        (namespace, *_columns(versions)),
    )
    new = {(str(workflow), str(version)) for workflow, version in created}
    # After the insert: a racing registration of the same new version committed first is
    # seen here too (its row's lock made the insert wait).
    stored = tx.fetch_all(
        "SELECT v.workflow, v.version, v.input_schema, v.event_schemas"
        " FROM aiki_workflow_versions v JOIN unnest(%s::text[], %s::text[])"
        " AS n(workflow, version) ON (v.workflow, v.version) = (n.workflow, n.version)"
        " WHERE v.namespace = %s",
        ([spec.workflow for spec in versions], [spec.version for spec in versions], namespace),
    )
    specs = {(spec.workflow, spec.version): spec for spec in versions}
    conflicts = [
        (str(workflow), str(version))
        for workflow, version, input_schema, event_schemas in stored
        if not _same_version(specs[str(workflow), str(version)], input_schema, event_schemas)
    ]
    conflicts += [
        version
        for version in sorted(limits.declare(tx, namespace, versions, new))
        if version not in conflicts
    ]
    if conflicts:
        return conflicts
    registered = tx.fetch_one(
        "INSERT INTO aiki_workers (id, namespace, versions, pools, concurrency, incarnation,"
        " session) VALUES (%(id)s, %(namespace)s, %(versions)s::jsonb, %(pools)s::jsonb,"
        " %(concurrency)s, %(incarnation)s, %(session)s) ON CONFLICT (id) DO UPDATE"
        " SET versions = EXCLUDED.versions, pools = EXCLUDED.pools,"
        " concurrency = EXCLUDED.concurrency, incarnation = EXCLUDED.incarnation,"
        " session = EXCLUDED.session,"
        " last_seen_at = now(), alive = true"
        " WHERE aiki_workers.namespace = EXCLUDED.namespace"
        " AND (aiki_workers.incarnation IS NOT DISTINCT FROM EXCLUDED.incarnation"
        " OR NOT aiki_workers.alive"
        " OR aiki_workers.last_seen_at < now() - make_interval(secs => %(live)s::float8))"
        " RETURNING id",
        {"id": worker_id, "namespace": namespace,
         "versions": to_json([[v.workflow, v.version] for v in versions]),
         "pools": to_json(list(pools)), "concurrency": concurrency,
         "incarnation": hashlib.sha256(incarnation.encode()).digest(), "live": live_seconds,
         "session": session},
    )  # fmt: skip
    if registered is None:
        holder = tx.fetch_one("SELECT namespace FROM aiki_workers WHERE id = %s", (worker_id,))
        if holder is not None and str(holder[0]) == namespace:
            raise WorkerTaken(worker_id)
        raise WorkerElsewhere(worker_id)
    return []


def disconnected(tx: Transaction, worker_id: str, session: str) -> bool:
    """The worker's session ``session`` ended: it has none now, unless it registered over
    another one meanwhile (False then)."""
    return (
        tx.fetch_one(
            "UPDATE aiki_workers SET session = NULL WHERE id = %s AND session = %s RETURNING id",
            (worker_id, session),
        )
        is not None
    )


def _same_version(spec: VersionSpec, input_schema: object, event_schemas: object) -> bool:
    """Whether ``spec`` registers the schemas stored for its version, by structure."""
    events = event_schemas if isinstance(event_schemas, dict) else {}
    return (
        (input_schema is None) == (spec.input_schema is None)
        and same_schemas(input_schema, spec.input_schema)
        and events.keys() == spec.event_schemas.keys()
        and all(same_schemas(events[name], spec.event_schemas[name]) for name in events)
    )


def _columns(
    versions: tuple[VersionSpec, ...],
) -> tuple[list[str], list[str], list[str | None], list[str]]:
    return (
        [spec.workflow for spec in versions],
        [spec.version for spec in versions],
        [_schema(spec.input_schema) for spec in versions],
        [to_json(spec.event_schemas) for spec in versions],
    )


def registered_versions(
    tx: Transaction,
) -> dict[tuple[str, str, str], tuple[object, object]]:
    """Every registered workflow version, by (namespace, workflow, version), with its
    input schema and event schemas."""
    rows = tx.fetch_all(
        "SELECT namespace, workflow, version, input_schema, event_schemas"
        " FROM aiki_workflow_versions"
    )
    return {(str(ns), str(wf), str(ver)): (schema, events)
            for ns, wf, ver, schema, events in rows}  # fmt: skip
