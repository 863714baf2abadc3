"""How many runs held a concurrency limit's slots at once, computed from the transition
history (shared by the end-to-end and chaos checks of limits).

A run holds its slots (held while executing, the default) from its admission by the gate
until it moves to a status other than queued or running. The history is read in the
order its rows were written (their IDs come from one sequence, taken as each row is
written): a slot freed and committed before the gate counted is ordered before the run
the gate admitted with it.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Mapping
from typing import Final

ADMITTED: Final = "admitted by the gate"
HOLDING: Final = frozenset({"queued", "running"})


def most_holding(
    history: Iterable[tuple[str, str, str]], key_of: Mapping[str, str]
) -> tuple[dict[str, int], int]:
    """The most runs holding a slot at once, per key and over all keys, from ``history``
    rows (run ID, status moved to, reason) in the order they were written; ``key_of``
    gives each run's key. Every run must hold nothing at the end."""
    holding: set[str] = set()
    per: collections.Counter[str] = collections.Counter()
    most: dict[str, int] = collections.defaultdict(int)
    most_total = 0
    for run_id, to_status, reason in history:
        key = key_of[run_id]
        if reason == ADMITTED:
            assert run_id not in holding, f"run {run_id} admitted twice"
            holding.add(run_id)
            per[key] += 1
        elif run_id in holding and to_status not in HOLDING:
            holding.discard(run_id)
            per[key] -= 1
        most[key] = max(most[key], per[key])
        most_total = max(most_total, len(holding))
    assert not holding, f"runs still holding slots at the end: {sorted(holding)[:5]}"
    return dict(most), most_total
