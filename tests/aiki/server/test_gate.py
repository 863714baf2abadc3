"""The gate's decisions, checked by property: limits are never exceeded, capacity is
never left idle while a run could take it, priority is strict, a limit's key is served
first come first served, and fairness keys get shares within one run of their weights."""

from __future__ import annotations

from collections import Counter
from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from aiki.server.gate import Held, Limit, Waiting, release, room_of

LIMITS = {"api": Limit("api", per_key=2, total=5), "mutex": Limit("mutex", per_key=1)}


@st.composite
def _backlogs(draw: st.DrawFn) -> tuple[list[Waiting], Held, int]:
    count = draw(st.integers(0, 40))
    runs = []
    for seq in range(count):
        slots = draw(st.lists(st.tuples(st.sampled_from(["api", "mutex", "free"]),
                                        st.sampled_from(["a", "b", "c"])),
                              max_size=2, unique_by=lambda slot: slot[0]))  # fmt: skip
        runs.append(Waiting(
            run_id=f"r{seq}", seq=seq, priority=draw(st.integers(0, 2)),
            fairness_key=draw(st.sampled_from(["", "t1", "t2"])),
            weight=draw(st.integers(1, 3)), slots=tuple(slots),
        ))  # fmt: skip
    per_key = {(name, key): draw(st.integers(0, 2)) for name in ("api", "mutex")
               for key in "abc" if draw(st.booleans())}  # fmt: skip
    per_key = {slot: min(n, LIMITS[slot[0]].per_key) for slot, n in per_key.items()}
    for name, limit in LIMITS.items():  # (a consistent state: within each total too)
        room = limit.total
        for slot in sorted(per_key):
            if slot[0] == name and room is not None:
                per_key[slot] = min(per_key[slot], room)
                room -= per_key[slot]
    total = {name: sum(n for (of, _), n in per_key.items() if of == name) for name in LIMITS}
    return runs, Held(per_key=per_key, total=total), draw(st.integers(0, 50))


def _admissible(run: Waiting, held: Held) -> bool:
    for name, key in run.slots:
        limit = LIMITS.get(name)
        if limit is None:
            continue
        if held.per_key.get((name, key), 0) >= limit.per_key:
            return False
        if limit.total is not None and held.total.get(name, 0) >= limit.total:
            return False
    return True


@settings(max_examples=300)
@given(_backlogs())
def test_the_gate_keeps_limits_fills_capacity_and_keeps_priority_and_order(
    backlog: tuple[list[Waiting], Held, int],
) -> None:
    runs, held, capacity = backlog
    out = release(runs, LIMITS, held, capacity)
    released = set(out.run_ids)
    assert len(out.run_ids) == len(released) <= capacity
    # No limit exceeded: the counts are the old ones plus the released runs' slots.
    for (name, key), count in out.held.per_key.items():
        if name in LIMITS:
            assert count <= LIMITS[name].per_key, (name, key)
    for name, count in out.held.total.items():
        limit = LIMITS.get(name)
        if limit is not None and limit.total is not None:
            assert count <= limit.total, name
    expected = Counter(held.per_key)
    for run in runs:
        if run.run_id in released:
            expected.update(run.slots)
    assert {slot: n for slot, n in out.held.per_key.items() if n} == {
        slot: n for slot, n in expected.items() if n
    }
    left = [run for run in runs if run.run_id not in released]
    waiting_admissible = [run for run in left if _admissible(run, out.held)]
    # Work-conserving: capacity left over means nothing left could run.
    if len(released) < capacity:
        assert waiting_admissible == []
    # Strict priority, then first come first served within a fairness key: a run left
    # behind that could run has no released run of a lower level, nor a later one of
    # its own level and fairness key.
    for run in waiting_admissible:
        for other in runs:
            if other.run_id not in released:
                continue
            assert other.priority >= run.priority, (run, other)
            if (other.priority, other.fairness_key) == (run.priority, run.fairness_key):
                assert other.seq < run.seq, (run, other)
    for run_id in out.blocked:
        assert run_id not in released


@given(st.integers(1, 5), st.integers(1, 5), st.integers(1, 200))
def test_fairness_keys_share_in_proportion_to_their_weights(
    weight_a: int, weight_b: int, capacity: int
) -> None:
    """Two tenants with long backlogs: over one call, or over many calls of one slot
    each (the passes carried), each gets its weight's share within one run."""
    backlog = [Waiting(run_id=f"a{n}", seq=2 * n, fairness_key="a", weight=weight_a)
               for n in range(300)] + [
              Waiting(run_id=f"b{n}", seq=2 * n + 1, fairness_key="b", weight=weight_b)
              for n in range(300)]  # fmt: skip
    share = Fraction(weight_a, weight_a + weight_b)
    at_once = release(backlog, {}, Held(), capacity)
    taken_a = sum(run_id.startswith("a") for run_id in at_once.run_ids)
    assert abs(taken_a - share * capacity) <= 1

    passes: dict[str, Fraction] = {}
    left = list(backlog)
    picked: list[str] = []
    for _ in range(capacity):
        one = release(left, {}, Held(), 1, passes)
        passes = dict(one.passes)
        picked += one.run_ids
        left = [run for run in left if run.run_id not in one.run_ids]
    assert picked == list(at_once.run_ids)


def test_a_key_that_starts_waiting_gets_its_share_from_then_on_not_a_burst() -> None:
    """Tenant a has been served 100 runs alone; b arrives: they alternate (equal weights)
    rather than b taking 100 in a row."""
    passes: dict[str, Fraction] = {}
    a_runs = [Waiting(run_id=f"a{n}", seq=n, fairness_key="a") for n in range(300)]
    first = release(a_runs, {}, Held(), 100, passes)
    passes = dict(first.passes)
    left = [run for run in a_runs if run.run_id not in first.run_ids]
    b_runs = [Waiting(run_id=f"b{n}", seq=1000 + n, fairness_key="b") for n in range(100)]
    then = release(left + b_runs, {}, Held(), 10, passes)
    assert Counter(run_id[0] for run_id in then.run_ids) == {"a": 5, "b": 5}


def test_a_limited_run_waits_and_the_runs_behind_it_that_need_other_slots_go() -> None:
    runs = [Waiting(run_id="x1", seq=1, slots=(("mutex", "acct-1"),)),
            Waiting(run_id="x2", seq=2, slots=(("mutex", "acct-1"),)),
            Waiting(run_id="y1", seq=3, slots=(("mutex", "acct-2"),)),
            Waiting(run_id="urgent", seq=4, priority=2, slots=(("mutex", "acct-1"),))]  # fmt: skip
    out = release(runs, LIMITS, Held(), 10)
    assert out.run_ids == ("urgent", "y1")
    assert out.blocked == {"x1": "mutex/acct-1", "x2": "mutex/acct-1"}
    assert out.held.per_key == {("mutex", "acct-1"): 1, ("mutex", "acct-2"): 1}
    total = release([Waiting(run_id=f"t{n}", seq=n, slots=(("api", f"k{n}"),))
                     for n in range(8)], LIMITS, Held(), 10)  # fmt: skip
    assert len(total.run_ids) == 5  # (api: 5 over all keys)
    assert set(total.blocked.values()) == {"api/*"}


@given(
    free=st.integers(-5, 200), workers=st.integers(1, 10), sent=st.integers(0, 300),
    ahead=st.integers(0, 16),
)  # fmt: skip
def test_a_queues_room_keeps_what_is_in_flight_small_and_never_starves_idle_workers(
    free: int, workers: int, sent: int, ahead: int
) -> None:
    """What may be sent to a queue: in flight (sent, not claimed) it stays within the free
    slots plus ``ahead`` per worker, and within two windows of ``ahead`` per worker (one
    run per worker at least), so a run let through next is never far behind; and idle
    workers with nothing sent to them always get some."""
    room = room_of(free=free, workers=workers, sent=sent, ahead=ahead)
    in_flight = sent + max(room, 0)
    window = ahead * workers
    if room > 0:
        assert in_flight <= max(free, 0) + window
        assert in_flight <= max(window, workers) + window
    if sent == 0 and free > 0:
        assert room > 0
