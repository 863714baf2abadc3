"""The gate: which waiting runs go to workers now, decided by one pure function.

Runs that may not all run at once wait in PostgreSQL (the backlog). When capacity
appears (a worker's free slots), `release` picks the runs that take it:

1. **priority** first: a waiting run of a higher level goes before every waiting run of a
   lower one (a run its limits hold back does not hold back lower levels);
2. then **fair share** within a level, across fairness keys (tenants), by stride
   scheduling: each key has a *pass*; the key with the lowest pass sends its next run and
   its pass grows by ``STRIDE / weight``, so while several keys wait, each gets runs in
   proportion to its weight, and a key that starts waiting begins at the lowest pass of
   those already waiting (it gets its share from now on, not a burst for the time it was
   idle);
3. then **age**: within a fairness key, the run that started waiting first;
4. and only as far as the **concurrency limits** admit: a run names the (limit, key)
   slots it needs; a limit admits at most ``per_key`` runs of one key and, if set,
   ``total`` over all keys. A run a limit holds back waits; the runs behind it that need
   other slots go on (first come, first served within a limit's key).

No I/O, no clock: the store reads the backlog and the counts, calls `release` and writes
what it decides (claims, counts, passes) in the same transaction, so every server
enforces one limit together. ``tests/aiki/server/test_gate.py`` checks the properties by
hypothesis: no limit exceeded, no capacity left idle while an admissible run waits, strict
priority, first come first served within a key, and shares within one run of the weights.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from fractions import Fraction
from typing import Final

import attrs

STRIDE: Final = Fraction(1)
"""What one run costs a fairness key of weight 1 (its pass grows by ``STRIDE / weight``)."""

DEFAULT_FAIRNESS_KEY: Final = ""
"""The fairness key of runs that name none (they share one queue per level)."""


@attrs.frozen
class Limit:
    """A concurrency limit: at most ``per_key`` runs of one key hold its slots at once,
    and at most ``total`` (None: no bound) over all keys."""

    name: str
    per_key: int
    total: int | None = None


@attrs.frozen
class Waiting:
    """A run that waits for the gate."""

    run_id: str
    seq: int
    """Its place in the order runs started waiting (lower: earlier)."""
    priority: int = 0
    """Higher goes first."""
    fairness_key: str = DEFAULT_FAIRNESS_KEY
    weight: int = 1
    """Its fairness key's share: each run it sends costs the key ``STRIDE / weight``."""
    slots: tuple[tuple[str, str], ...] = ()
    """The (limit name, key) slots it needs to run."""


@attrs.frozen
class Held:
    """How many runs hold each limit's slots now."""

    per_key: Mapping[tuple[str, str], int] = attrs.Factory(dict)
    total: Mapping[str, int] = attrs.Factory(dict)


@attrs.frozen
class Released:
    """What `release` decided."""

    run_ids: tuple[str, ...]
    """The runs that go to workers now, in the order they were picked."""
    held: Held
    """The counts with those runs holding their slots."""
    passes: Mapping[str, Fraction]
    """Each fairness key's pass afterwards (keep them for the next call)."""
    blocked: Mapping[str, str]
    """Runs a limit holds back, with the slot that does (``limit/key``)."""


def release(
    waiting: Iterable[Waiting],
    limits: Mapping[str, Limit],
    held: Held,
    capacity: int,
    passes: Mapping[str, Fraction] | None = None,
) -> Released:
    """Pick up to ``capacity`` of the ``waiting`` runs to run now (see the module).

    ``passes`` are the fairness keys' passes from the previous call (a key not in it
    starts at the lowest pass of the keys waiting with it). A slot of a limit not in
    ``limits`` is not bounded.
    """
    per_key = dict(held.per_key)
    total = dict(held.total)
    kept = dict(passes or {})
    by_level: dict[int, dict[str, list[Waiting]]] = {}
    for run in sorted(waiting, key=lambda run: run.seq):
        by_level.setdefault(run.priority, {}).setdefault(run.fairness_key, []).append(run)
    picked: list[str] = []
    blocked: dict[str, str] = {}

    def holds_back(run: Waiting) -> str | None:
        for name, key in run.slots:
            limit = limits.get(name)
            if limit is None:
                continue
            if per_key.get((name, key), 0) >= limit.per_key:
                return f"{name}/{key}"
            if limit.total is not None and total.get(name, 0) >= limit.total:
                return f"{name}/*"
        return None

    def take(run: Waiting) -> None:
        for name, key in run.slots:
            per_key[(name, key)] = per_key.get((name, key), 0) + 1
            total[name] = total.get(name, 0) + 1
        picked.append(run.run_id)

    for level in sorted(by_level, reverse=True):
        queues = by_level[level]
        known = [kept[key] for key in queues if key in kept]
        start = min(known) if known else Fraction(0)
        for key in queues:
            kept[key] = max(kept.get(key, start), start)
        active = set(queues)
        while active and len(picked) < capacity:
            key = min(active, key=lambda k: (kept[k], queues[k][0].seq))
            queue = queues[key]
            chosen = None
            for index, run in enumerate(queue):
                why = holds_back(run)
                if why is None:
                    chosen = queue.pop(index)
                    break
                blocked[run.run_id] = why
            if chosen is None:
                active.discard(key)  # everything it has waits for a limit
                continue
            blocked.pop(chosen.run_id, None)
            take(chosen)
            kept[key] += STRIDE / max(1, chosen.weight)
            if not queue:
                active.discard(key)
    return Released(run_ids=tuple(picked), held=Held(per_key=per_key, total=total),
                    passes=kept, blocked=blocked)  # fmt: skip


def room_of(*, free: int, workers: int, sent: int, ahead: int) -> int:
    """How many more runs a queue's stream may take now.

    ``free``: its live workers' free slots (less those held by offers); ``workers``: how
    many serve it; ``sent``: its runs sent and not yet claimed; ``ahead``: runs kept sent
    per worker beyond what its free slots take at once.

    The runs in flight to the workers (sent, not claimed) stay within the free slots (at
    most ``ahead`` per worker of them, one at least) plus ``ahead`` per worker: while
    workers are busy, a few runs wait in the stream so that a freed slot takes one at
    once, and no more, so that a run of a higher priority let through next is at most
    that many runs behind (a stream is first in, first out). Workers slower than their
    slots (CPU-bound) do not pile runs up in the stream either.
    """
    window = ahead * workers
    return min(max(free, 0), max(window, workers)) + window - sent
