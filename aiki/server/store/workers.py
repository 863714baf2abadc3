"""SQL for workers and the workflow versions they register (with their schemas)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .runs import to_json

if TYPE_CHECKING:
    from transport import Transaction

    from ...protocol import VersionSpec


def _schema(schema: object) -> str | None:
    return None if schema is None else to_json(schema)


def register_worker(
    tx: Transaction,
    worker_id: str,
    versions: tuple[VersionSpec, ...],
    pools: tuple[str | None, ...],
    concurrency: int,
) -> None:
    """Record a worker and the versions it serves (with their input and event schemas)."""
    tx.execute_many(
        "INSERT INTO aiki_workflow_versions (workflow, version, input_schema, event_schemas)"
        " VALUES (%s, %s, %s::jsonb, %s::jsonb) ON CONFLICT (workflow, version) DO UPDATE"
        " SET input_schema = EXCLUDED.input_schema, event_schemas = EXCLUDED.event_schemas,"
        " registered_at = now()",
        [(spec.workflow, spec.version, _schema(spec.input_schema), to_json(spec.event_schemas))
         for spec in versions],
    )  # fmt: skip
    tx.execute(
        "INSERT INTO aiki_workers (id, versions, pools, concurrency) VALUES (%s, %s::jsonb,"
        " %s::jsonb, %s) ON CONFLICT (id) DO UPDATE SET versions = EXCLUDED.versions,"
        " pools = EXCLUDED.pools, concurrency = EXCLUDED.concurrency, last_seen_at = now()",
        (worker_id, to_json([[v.workflow, v.version] for v in versions]), to_json(list(pools)),
         concurrency),
    )  # fmt: skip


def registered_versions(tx: Transaction) -> dict[tuple[str, str], tuple[object, object]]:
    """Every registered workflow version with its input schema and event schemas."""
    rows = tx.fetch_all(
        "SELECT workflow, version, input_schema, event_schemas FROM aiki_workflow_versions"
    )
    return {(str(wf), str(ver)): (schema, events) for wf, ver, schema, events in rows}
