"""SQL fragments for a new run's place at the gate: its priority and fairness key, the
kinds of concurrency-limit slots it takes, and the slots themselves (`store.gate` says how
they are held and let through). Both inserts of runs (`runs.insert_run`, a schedule's
`schedules.insert_started`) use them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from ...protocol import DEFAULT_PRIORITY

if TYPE_CHECKING:
    from ...protocol import StartOptions

ADMITTED: Final = "admitted by the gate"
"""The reason in a run's history when it takes its slots (or its turn)."""
GATE_COLUMNS: Final = "priority, fairness_key, fairness_weight, slots_kind, slots_held, gated_at"
"""The columns of ``aiki_runs`` a new run's insert sets with `gate_values`."""


def gate_sources(namespace: str, workflow: str, version: str, parent: str) -> str:
    """FROM items a new run's insert reads for `gate_values`: the kinds of slots its
    version takes (``gate_kind``), and its parent run if any (``gate_parent``), all SQL."""
    return (
        f"(SELECT aiki_slots_kind({namespace}, {workflow}, {version}) AS kind) gate_kind"
        f" LEFT JOIN aiki_runs gate_parent ON gate_parent.id = {parent}"
    )


def gate_values(
    status: str,
    priority: str = "%(priority)s",
    fairness_key: str = "%(fairness_key)s",
    weight: str = "%(fairness_weight)s",
    wait: str = "%(wait)s",
    admit: str = "%(admit)s",
) -> str:
    """SQL values for `GATE_COLUMNS` of a new run in ``status``: priority and fairness as
    started, else the parent's, else the defaults; slots none held yet, and a queued run
    with slots waits at the gate, as does one for which ``wait`` (SQL) is true (its
    queue has no room), unless ``admit`` (SQL) is true: the start found its slots free
    under the gate's lock, and the run takes them at once."""
    return f"""COALESCE({priority}::smallint, gate_parent.priority, {DEFAULT_PRIORITY}),
                   COALESCE({fairness_key}::text, gate_parent.fairness_key, ''),
                   COALESCE({weight}::integer, gate_parent.fairness_weight, 1),
                   gate_kind.kind,
                   CASE WHEN gate_kind.kind IS NULL THEN NULL
                        WHEN {admit}::boolean THEN 'all' ELSE 'none' END,
                   CASE WHEN {status} = 'queued' AND NOT {admit}::boolean
                             AND (gate_kind.kind IS NOT NULL OR {wait}::boolean)
                        THEN now() END"""


def gate_parameters(options: StartOptions) -> dict[str, object]:
    """The parameters `gate_values` reads by default."""
    return {
        "priority": options.priority,
        "fairness_key": options.fairness_key,
        "fairness_weight": options.fairness_weight,
    }


def insert_slots(name: str, runs: str) -> str:
    """A CTE ``name`` writing the slots of the new runs of the CTE ``runs`` (with ``id``,
    ``namespace``, ``workflow``, ``version`` and ``input``): one per limit of their version."""
    return f"""{name} AS (
            INSERT INTO aiki_run_slots (run_id, namespace, name, key, holds)
            SELECT n.id, n.namespace, l.name, COALESCE(aiki_limit_key(n.input, l.key_path), ''),
                   l.holds
            FROM {runs} n JOIN aiki_version_limits l
              ON (l.namespace, l.workflow, l.version) = (n.namespace, n.workflow, n.version)
        )"""
