"""SQL for concurrency limits as declared: which limits a workflow version's runs take a
slot of (immutable, part of the version), and each limit's numbers in a namespace (set
by registrations, changed by operators, every change kept in ``aiki_limit_changes``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from ...protocol import ConcurrencyLimit, LimitChange, LimitInfo
from .runs import as_int, as_time

if TYPE_CHECKING:
    from collections.abc import Iterable

    from transport.postgres import Transaction

    from ...protocol import VersionSpec

REGISTRATION = "registration"
"""Who changed a limit's numbers, when a worker's registration declared new ones."""


def _shape(limit: ConcurrencyLimit) -> tuple[str, str | None, str, str]:
    return (limit.name, limit.key, limit.on_limit, limit.holds)


def declare(
    tx: Transaction,
    namespace: str,
    versions: Iterable[VersionSpec],
    new: set[tuple[str, str]],
) -> set[tuple[str, str]]:
    """Record the limits the ``versions`` a worker registers declare: for the versions
    in ``new`` (registered by this transaction), which limits they name; for every
    limit, its numbers, if they differ from those last declared (an operator's change
    holds until then).

    Returns:
        The versions registered before that named other limits (or other keys, or other
        behaviours): the caller refuses the registration.
    """
    versions = list(versions)
    rows = [
        (spec.workflow, spec.version, *_shape(limit))
        for spec in versions
        if (spec.workflow, spec.version) in new
        for limit in spec.limits
    ]
    if rows:
        tx.execute(
            "INSERT INTO aiki_version_limits (namespace, workflow, version, name, key_path,"
            " on_limit, holds) SELECT %s, * FROM unnest(%s::text[], %s::text[], %s::text[],"
            " %s::text[], %s::text[], %s::text[])",
            (namespace, *(list(column) for column in zip(*rows, strict=True))),
        )
    old = [spec for spec in versions if (spec.workflow, spec.version) not in new]
    conflicts: set[tuple[str, str]] = set()
    if old:
        stored: dict[tuple[str, str], set[tuple[str, str | None, str, str]]] = {}
        for workflow, version, name, key_path, on_limit, holds in tx.fetch_all(
            "SELECT workflow, version, name, key_path, on_limit, holds"
            " FROM aiki_version_limits WHERE namespace = %s"
            " AND (workflow, version) IN (SELECT * FROM unnest(%s::text[], %s::text[]))",
            (namespace, [spec.workflow for spec in old], [spec.version for spec in old]),
        ):
            stored.setdefault((str(workflow), str(version)), set()).add(
                (str(name), None if key_path is None else str(key_path), str(on_limit),
                 str(holds)))  # fmt: skip
        for spec in old:
            if stored.get((spec.workflow, spec.version), set()) != set(map(_shape, spec.limits)):
                conflicts.add((spec.workflow, spec.version))
    numbers = {
        limit.name: (limit.per_key, limit.total) for spec in versions for limit in spec.limits
    }
    for name, (per_key, total) in sorted(numbers.items()):
        changed = tx.fetch_one(
            """
            INSERT INTO aiki_limits AS l (namespace, name, per_key, total, declared_per_key,
                                          declared_total, changed_by, changed_at)
            VALUES (%(namespace)s, %(name)s, %(per_key)s, %(total)s, %(per_key)s, %(total)s,
                    %(by)s, now())
            ON CONFLICT (namespace, name) DO UPDATE
            SET per_key = EXCLUDED.per_key, total = EXCLUDED.total,
                declared_per_key = EXCLUDED.per_key, declared_total = EXCLUDED.total,
                changed_by = EXCLUDED.changed_by, changed_at = now()
            WHERE (l.declared_per_key, l.declared_total)
                  IS DISTINCT FROM (EXCLUDED.per_key, EXCLUDED.total)
            RETURNING name
            """,
            {"namespace": namespace, "name": name, "per_key": per_key, "total": total,
             "by": REGISTRATION},
        )  # fmt: skip
        if changed is not None:
            note_change(tx, namespace, name, per_key, total, REGISTRATION)
    return conflicts


def note_change(
    tx: Transaction, namespace: str, name: str, per_key: int, total: int | None, by: str
) -> None:
    """Keep one change of a limit's numbers in its audit log."""
    tx.execute(
        "INSERT INTO aiki_limit_changes (namespace, name, per_key, total, changed_by)"
        " VALUES (%s, %s, %s, %s, %s)",
        (namespace, name, per_key, total, by),
    )


def version_limits(tx: Transaction) -> dict[tuple[str, str, str], tuple[ConcurrencyLimit, ...]]:
    """Every registered version's limits, by (namespace, workflow, version), with the
    numbers in force now."""
    found: dict[tuple[str, str, str], list[ConcurrencyLimit]] = {}
    for (
        namespace,
        workflow,
        version,
        name,
        key_path,
        on_limit,
        holds,
        per_key,
        total,
    ) in tx.fetch_all(
        "SELECT v.namespace, v.workflow, v.version, v.name, v.key_path, v.on_limit,"
        " v.holds, l.per_key, l.total FROM aiki_version_limits v JOIN aiki_limits l"
        " ON (l.namespace, l.name) = (v.namespace, v.name) ORDER BY v.name"
    ):
        found.setdefault((str(namespace), str(workflow), str(version)), []).append(
            ConcurrencyLimit(
                name=str(name), key=None if key_path is None else str(key_path),
                per_key=as_int(per_key), total=None if total is None else as_int(total),
                on_limit=str(on_limit), holds=str(holds),  # type: ignore[arg-type]
            )
        )  # fmt: skip
    return {version: tuple(limits) for version, limits in found.items()}


_LIMITS: Final = """
        SELECT l.name, l.per_key, l.total, l.declared_per_key, l.declared_total,
               (SELECT count(*) FROM aiki_run_slots h JOIN aiki_runs hr ON hr.id = h.run_id
                WHERE (h.namespace, h.name) = (l.namespace, l.name)
                  AND (hr.slots_held = 'all' OR (hr.slots_held = 'open' AND h.holds = 'open'))),
               (SELECT count(*) FROM aiki_run_slots h JOIN aiki_runs hr ON hr.id = h.run_id
                WHERE (h.namespace, h.name) = (l.namespace, l.name) AND hr.gated_at IS NOT NULL
                  AND (hr.slots_held = 'none' OR h.holds = 'executing'))
        FROM aiki_limits l
        WHERE l.namespace = %(namespace)s AND (%(name)s::text IS NULL OR l.name = %(name)s)
        ORDER BY l.name
        """


def list_limits(tx: Transaction, namespace: str, name: str | None = None) -> list[LimitInfo]:
    """The namespace's limits (or the one named, with its latest changes)."""
    found = []
    for row in tx.fetch_all(_LIMITS, {"namespace": namespace, "name": name}):
        limit_name, per_key, total, declared, declared_total, holding, waiting = row
        changes: tuple[LimitChange, ...] = ()
        if name is not None:
            changes = tuple(
                LimitChange(per_key=as_int(bound), total=None if whole is None else as_int(whole),
                            changed_by=str(by), at=as_time(at))
                for bound, whole, by, at in tx.fetch_all(
                    "SELECT per_key, total, changed_by, changed_at FROM aiki_limit_changes"
                    " WHERE namespace = %s AND name = %s ORDER BY id DESC LIMIT 50",
                    (namespace, name))
            )  # fmt: skip
        found.append(LimitInfo(
            name=str(limit_name), per_key=as_int(per_key),
            total=None if total is None else as_int(total), declared_per_key=as_int(declared),
            declared_total=None if declared_total is None else as_int(declared_total),
            holding=as_int(holding), waiting=as_int(waiting), changes=changes))  # fmt: skip
    return found


def set_limit(
    tx: Transaction, namespace: str, name: str, per_key: int, total: int | None, by: str
) -> LimitInfo | None:
    """Change a limit's numbers (kept in its changes); None if the namespace has no such
    limit."""
    changed = tx.fetch_one(
        "UPDATE aiki_limits SET per_key = %s, total = %s, changed_by = %s, changed_at = now()"
        " WHERE namespace = %s AND name = %s RETURNING name",
        (per_key, total, by, namespace, name),
    )
    if changed is None:
        return None
    note_change(tx, namespace, name, per_key, total, by)
    (found,) = list_limits(tx, namespace, name)
    return found


def limit_counts(tx: Transaction) -> list[tuple[str, str, int, int]]:
    """Per limit (namespace, name): runs holding its slots, and waiting for them."""
    return [
        (str(namespace), str(name), as_int(holding), as_int(waiting))
        for namespace, name, holding, waiting in tx.fetch_all(
            """
            SELECT s.namespace, s.name,
                   count(*) FILTER (WHERE r.slots_held = 'all'
                                    OR (r.slots_held = 'open' AND s.holds = 'open')),
                   count(*) FILTER (WHERE r.gated_at IS NOT NULL
                                    AND (r.slots_held = 'none' OR s.holds = 'executing'))
            FROM aiki_runs r JOIN aiki_run_slots s ON s.run_id = r.id
            WHERE r.slots_held IN ('all', 'open') OR r.gated_at IS NOT NULL
            GROUP BY s.namespace, s.name
            """
        )
    ]


_TAKEN: Final = """
        SELECT r.id FROM aiki_run_slots s JOIN aiki_runs r ON r.id = s.run_id
        WHERE (s.namespace, s.name, s.key) = (%(namespace)s, %(name)s, %(key)s)
          AND (r.slots_held = 'all' OR (r.slots_held = 'open' AND s.holds = 'open')
               OR r.gated_at IS NOT NULL)
        ORDER BY r.gated_at NULLS FIRST, r.created_at, r.id
        """
"""The runs of one key of a limit that hold its slot or wait at the gate for it, those
holding (and then the longest waiting) first."""


def taken(tx: Transaction, namespace: str, name: str, key: str) -> tuple[int, list[str]]:
    """A limit's bound per key (0: not declared), and the runs of ``key`` that hold or wait
    for its slots, oldest first. Call under the gate's lock (`gate.lock`): no pass admits
    meanwhile."""
    bound = tx.fetch_one(
        "SELECT per_key FROM aiki_limits WHERE namespace = %s AND name = %s", (namespace, name)
    )
    runs = [str(row[0]) for row in tx.fetch_all(
        _TAKEN, {"namespace": namespace, "name": name, "key": key})]  # fmt: skip
    return (0 if bound is None else as_int(bound[0])), runs
