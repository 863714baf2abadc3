"""The run lifecycle (`aiki.server.lifecycle`), driven by random event sequences."""

from __future__ import annotations

import itertools
import os
from typing import get_args

import hypothesis.strategies as st
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from aiki.protocol import ALL_STATUSES, TERMINAL, RunStatus
from aiki.server.lifecycle import (
    ACTIVE,
    EVENTS,
    MOVES,
    Change,
    Event,
    Moved,
    Refused,
    RunState,
    Transition,
    allowed,
    every_move,
    step,
    targets,
)

WORKERS = ("w1", "w2")
RUNS = 3
STATUSES: tuple[RunStatus, ...] = get_args(RunStatus)
ASKS = list(itertools.product(range(RUNS), EVENTS, range(12)))
"""What a rule may ask for, drawn as one choice: a run, an event, and how the change is
made: mostly as the run's state makes sense (an allowed target, its holder, the fence
it holds), sometimes wrong in one way (any status, another worker, a stale fence or
none), so that runs get deep into their lives and refusals are exercised too."""


class Lifecycle(RuleBasedStateMachine):
    """A few runs and two workers; every rule is one change, asked at random (most are
    refused); what applies must keep the invariants."""

    def __init__(self) -> None:
        super().__init__()
        self.runs = [RunState() for _ in range(RUNS)]
        self.history: list[list[Transition]] = [[] for _ in range(RUNS)]
        self.ended: set[int] = set()
        self.applied = 0

    @rule(asked=st.lists(st.integers(0, len(ASKS) ** 2 - 1), min_size=1, max_size=4))
    def random_changes(self, asked: list[int]) -> None:
        # Each number drawn asks for two changes (half the draws: hypothesis's engine,
        # not the lifecycle, is what a sequence costs).
        for choice in (part for pair in asked for part in divmod(pair, len(ASKS))):
            index, event, how = ASKS[choice]
            run = self.runs[index]
            choices = sorted(MOVES[event].get(run.status, ()))
            wanted = choices[how % len(choices)] if choices else None
            worker = run.worker or WORKERS[how % 2]
            fence = "held"
            if how == 8:
                wanted = STATUSES[(index + run.revision) % len(STATUSES)]
            elif how == 9:
                worker = WORKERS[1] if worker == WORKERS[0] else WORKERS[0]
            elif how == 10:
                fence = "stale"
            elif how == 11:
                fence, worker = "none", None  # type: ignore[assignment]
            self.change(index, event, wanted, worker, fence)

    def change(self, index: int, event: Event, wanted: RunStatus | None, worker: str | None,
               fence: str) -> None:  # fmt: skip
        run = self.runs[index]
        revision = {"held": run.revision, "stale": run.revision - 1, "none": None}[fence]
        change = Change(event, f"{event} by the test", target=wanted, worker=worker,
                        revision=revision)  # fmt: skip
        outcome = step(run, change)
        if isinstance(outcome, Refused):
            assert outcome.why
            # A change the table allows from this status is refused only for a missing
            # or wrong target, worker or fence.
            return
        assert isinstance(outcome, Moved)
        if index in self.ended:  # only a client's retry of a failed run moves it again
            assert (change.event, run.status, outcome.run.status) == ("rerun", "failed", "queued")
            self.ended.discard(index)
        after, moved = outcome.run, outcome.transition
        assert after.revision == run.revision + 1
        assert (moved.from_status, moved.to_status) == (run.status, after.status)
        assert moved.revision == after.revision
        assert allowed(change.event, run.status, moved.to_status)
        assert (moved.from_status, moved.to_status) in every_move()
        if change.event in ("finish", "suspend"):
            assert (run.worker, run.revision) == (worker, revision), "fence ignored"
        if change.event == "claim":
            assert run.status == "queued" or run.worker == worker, "a second claim"
        assert outcome.dispatch == (after.status == "queued")
        assert outcome.ended == (after.status in TERMINAL)
        if change.event == "rerun":
            assert after.attempt == 1, "a retried run starts over"
        else:
            assert after.attempt == run.attempt + (change.event == "retry")
        if outcome.stops is not None:
            assert outcome.stops == run.worker
            assert after.worker != run.worker
        history = self.history[index]
        assert moved.from_status == (history[-1].to_status if history else None)
        assert moved.revision == len(history) + 1
        self.runs[index] = after
        history.append(moved)
        if outcome.ended:
            self.ended.add(index)
            for event in EVENTS:  # an ended run stays ended, but for a failed one's rerun
                if event == "rerun" and after.status == "failed":
                    continue
                for status in (None, *sorted(targets(event))):
                    later = Change(event, "x", target=status, worker=after.worker or worker,
                                   revision=after.revision)  # fmt: skip
                    assert isinstance(step(after, later), Refused)
        self.applied += 1

    @invariant()
    def a_run_is_held_exactly_while_running(self) -> None:
        for run in self.runs:
            assert (run.worker is not None) == (run.status == "running")


Lifecycle.TestCase.settings = settings(
    max_examples=int(os.environ.get("AIKI_EXAMPLES", "2000")), stateful_step_count=10,
    deadline=None,
)  # fmt: skip
test_random_event_sequences_keep_the_lifecycles_invariants = Lifecycle.TestCase


def test_the_table_has_no_dead_end_and_names_every_status() -> None:
    """Every active status has a way on (and to an end); every status is reachable."""
    reachable = {target for moves in MOVES.values() for choices in moves.values()
                 for target in choices}  # fmt: skip
    assert reachable == ALL_STATUSES
    for status in ACTIVE:
        assert any(status in moves for moves in MOVES.values()), status
        assert any(status in MOVES[event] for event in ("cancel", "time_out"))
    assert set(ACTIVE) | TERMINAL == ALL_STATUSES


def test_a_worker_is_fenced_and_a_run_has_one_holder() -> None:
    queued = RunState(status="queued", revision=1)
    held = step(queued, Change("claim", "claimed", worker="w1"))
    assert isinstance(held, Moved)
    assert held.run == RunState(status="running", revision=2, worker="w1")
    assert isinstance(step(held.run, Change("claim", "claimed", worker="w2")), Refused)
    again = step(held.run, Change("claim", "claimed again", worker="w1"))
    assert isinstance(again, Moved)
    assert again.run.revision == 3
    stale = Change("finish", "done", target="completed", worker="w1", revision=2)
    assert isinstance(step(again.run, stale), Refused)
    done = step(again.run, Change("finish", "done", target="completed", worker="w1", revision=3))
    assert isinstance(done, Moved)
    assert done.ended
    assert done.stops is None
    lost = step(again.run, Change("release", "worker lost"))
    assert isinstance(lost, Moved)
    assert lost.dispatch
    assert lost.stops == "w1"
