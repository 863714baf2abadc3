"""The replay core by property: random handlers of branches (steps, sleeps, event waits,
children, nurseries and races) executed, suspended, killed and replayed under random
scheduling orders, arrival orders and resolution orders reach the same steps in the
same places every time; changed code is caught before any new side effect."""

from __future__ import annotations

import os
import random

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, given, settings

from aiki.sdk import Deliver, Diverge, Replay, Start

from .replay_model import Do, Execution, Nursery, Server, Stmt, run_to_completion

NAMES = st.sampled_from(["a", "b", "c"])
STEPS = st.builds(Do, kind=st.sampled_from(["task", "sleep", "event", "child"]), name=NAMES,
                  shared=st.booleans())  # fmt: skip
STATEMENTS = st.recursive(
    STEPS,
    lambda inner: st.builds(
        Nursery,
        blocks=st.lists(st.lists(inner, max_size=3).map(tuple), min_size=2, max_size=3).map(tuple),
        race=st.booleans(),
    ),
    max_leaves=12,
)
PROGRAMS = st.lists(STATEMENTS, min_size=1, max_size=4).map(tuple)
EXAMPLES = int(os.environ.get("AIKI_EXAMPLES", "150"))
"""Examples per property (``AIKI_EXAMPLES=4000`` for a longer hunt)."""
FAST = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(program=PROGRAMS, seed=st.integers(0, 2**32 - 1), scheduler=st.integers(0, 2**32 - 1),
       crash_rate=st.sampled_from([0, 0.3, 0.8]))  # fmt: skip
def test_an_unchanged_handler_replays_to_the_same_decisions(
    program: tuple[Stmt, ...], seed: int, scheduler: int, crash_rate: float
) -> None:
    """Whatever the scheduler's order, whatever order tasks finish in and waits resolve
    in, wherever the worker dies: every recorded outcome goes to the same branch at the
    same step in every execution, no run suspends on a withdrawn wait or hangs, no task
    whose outcome is stored runs again, and no event goes to a withdrawn wait."""
    run_to_completion(program, seed, crash_rate, scheduler)


def _history_of(program: tuple[Stmt, ...], seed: int) -> Server:
    """A run of ``program`` taken until its first suspension (its history so far)."""
    rng = random.Random(seed)
    server = Server(rng)
    Execution(program, server, rng, crash_after=None).run()
    return server


def _replay_changed(
    program: tuple[Stmt, ...], server: Server
) -> tuple[list[object], Diverge | None]:
    """Replay ``program`` against ``server``'s history; the decisions taken until the first
    `Start` (a new side effect) or divergence."""
    execution = Execution(program, server, random.Random(0), crash_after=None, strict=False)
    decisions: list[object] = []
    for _ in range(500):
        execution._run_to_quiescence()
        decision = execution.replay.decide()
        decisions.append(decision)
        match decision:
            case Diverge():
                return decisions, decision
            case Start():
                return decisions, None
            case Deliver():
                execution._deliver(decision)
            case _:
                return decisions, None
    raise AssertionError("no end")


SEQUENTIAL = (Do("task", "a"), Do("task", "b"), Do("sleep", "c"))
PARALLEL = (Nursery(((Do("task", "a"), Do("child", "x")), (Do("task", "b"), Do("event", "e")))),)


@pytest.mark.parametrize("program", [SEQUENTIAL, PARALLEL])
def test_a_step_inserted_before_recorded_ones_is_refused_before_it_runs(
    program: tuple[Stmt, ...],
) -> None:
    """A new task before the recorded ones: the run diverges, naming the recorded steps
    it did not replay, and starts nothing."""
    server = _history_of(program, 1)
    changed = (Do("task", "inserted", shared=True), *program)
    decisions, diverged = _replay_changed(changed, server)
    assert diverged is not None, decisions
    assert "task:inserted" in str(diverged.error)
    assert diverged.error.unconsumed
    assert not any(isinstance(d, Start) for d in decisions)


def test_a_recorded_call_with_changed_input_is_refused_before_it_runs() -> None:
    """Changing a recorded task's input changes its address: refused, nothing started."""
    server = _history_of(SEQUENTIAL, 2)
    changed = (Do("task", "a-changed"), *SEQUENTIAL[1:])
    decisions, diverged = _replay_changed(changed, server)
    assert diverged is not None
    assert not any(isinstance(d, Start) for d in decisions)


def test_control_flow_reaching_new_steps_is_refused_before_they_run() -> None:
    """A branch that now takes another path (a different step in a parallel branch) is
    caught before its new step runs."""
    server = _history_of(PARALLEL, 3)
    (nursery,) = PARALLEL
    assert isinstance(nursery, Nursery)
    changed = (Nursery((nursery.blocks[0], (Do("task", "other"), Do("event", "e")))),)
    decisions, diverged = _replay_changed(changed, server)
    assert diverged is not None
    assert not any(isinstance(d, Start) for d in decisions)


def test_reordered_and_removed_calls_still_replay() -> None:
    """Content addressing: recorded tasks called in another order, or one removed, replay
    from the history (nothing new runs until they are consumed)."""
    program = (Do("task", "a", shared=True), Do("task", "b", shared=True),
               Do("task", "c", shared=True), Do("sleep", "z", shared=True))  # fmt: skip
    server = _history_of(program, 4)
    assert len(server.tasks) == 3
    for changed in [(program[1], program[0], program[2], program[3]),
                    (program[0], program[2], program[3])]:  # fmt: skip
        decisions, diverged = _replay_changed(changed, server)
        assert diverged is None, diverged
        assert not any(isinstance(d, Start) for d in decisions)


@FAST
@given(program=PROGRAMS, seed=st.integers(0, 2**32 - 1), data=st.data())
def test_any_inserted_step_is_refused_before_a_side_effect(
    program: tuple[Stmt, ...], seed: int, data: st.DataObject
) -> None:
    """A task inserted before recorded steps (at the start of the handler, or of a branch
    whose first step was taken) never runs: replay diverges first."""
    server = _history_of(program, seed)
    inserted = Do("task", "inserted", shared=True)
    first = program[0]
    starts = [i for i, block in enumerate(first.blocks) if block and isinstance(block[0], Do)] \
        if isinstance(first, Nursery) else []  # fmt: skip
    if starts and data.draw(st.booleans()):
        where = data.draw(st.sampled_from(starts))
        blocks = list(first.blocks)  # type: ignore[union-attr]
        blocks[where] = (inserted, *blocks[where])
        changed = (Nursery(tuple(blocks), first.race), *program[1:])  # type: ignore[union-attr]
    else:
        changed = (inserted, *program)
    if not server.settled and not server.waits:
        return  # nothing recorded: the inserted step is simply new
    decisions, diverged = _replay_changed(changed, server)
    for decision in decisions:
        if isinstance(decision, Start):
            assert all(not step.address.startswith("task:inserted") for step in decision.steps)
    assert diverged is not None or not any(isinstance(d, Start) for d in decisions)


def test_a_fresh_run_gets_new_steps_numbered_per_address_in_branch_order() -> None:
    """With no history every step is new; steps of one address taken by concurrent
    branches are numbered in branch order, whatever order they were taken in."""
    replay = Replay()
    replay.take((1,), "task:x:1")
    replay.take((0,), "task:x:1")
    replay.take((2,), "task:y:1")
    decision = replay.decide()
    assert isinstance(decision, Start)
    assert [(s.branch, s.address, s.seq) for s in decision.steps] == [
        ((0,), "task:x:1", 0), ((1,), "task:x:1", 1), ((2,), "task:y:1", 0)
    ]  # fmt: skip


def test_a_withdrawn_pending_wait_is_settled_and_not_suspended_on() -> None:
    """A branch cancelled on a pending wait gives it up (a settlement to store); the run
    then suspends only on the waits still wanted."""
    from aiki.protocol import RecordedWait
    from aiki.sdk import Suspend

    replay = Replay()
    replay.take((0,), "sleep:month-1")
    replay.take((1,), "event:complete")
    start = replay.decide()
    assert isinstance(start, Start)
    for step in start.steps:
        kind, key = step.address.split(":")
        replay.pending(step.address, step.seq,
                       RecordedWait(kind=kind, key=key, seq=step.seq, state="pending"))  # type: ignore[arg-type]  # fmt: skip
    settled = replay.withdraw((1,))
    assert settled is not None
    assert settled.withdrawn
    assert settled.address == "event:complete"
    decision = replay.decide()
    assert isinstance(decision, Suspend)
    assert [w.address for w in decision.waits] == ["sleep:month-1"]
