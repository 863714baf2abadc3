"""The run lifecycle: every change of a run's status, decided by one pure function.

A run's state is a `RunState` (status, revision, the worker holding it, attempt); a
`Change` says what happened (an `Event`: a worker claimed it, finished it, a timer fired,
a client paused it...). `step` decides the outcome: the new state, the history row
(`Transition`), whether the run is to be dispatched (exactly when it becomes ``queued``),
whether it ended, and which worker's execution it stops. No I/O, no clock.

`MOVES` is the table: for each event, the statuses it applies to and the statuses each
may become. The store writes run history in one place (`store.transitions`), with
guards generated from this table, so SQL cannot move a run in a way the table does not
allow; `tests/aiki/server/test_lifecycle.py` drives `step` with random event sequences
and checks the invariants (the revision only grows, ended runs stay ended, a run is held
by one worker at most and exactly while running, it is dispatched exactly when queued).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, Literal, get_args

import attrs

from ..protocol import TERMINAL, RunStatus

if TYPE_CHECKING:
    from collections.abc import Mapping

Event = Literal[
    "start",
    "schedule",
    "trigger",
    "admit",
    "claim",
    "finish",
    "suspend",
    "wake",
    "retry",
    "pause",
    "resume",
    "cancel",
    "time_out",
    "stall",
    "requeue",
    "rerun",
    "release",
    "lose",
]
"""What can happen to a run:

- ``start``, ``schedule``: it is created, queued or to start later;
- ``trigger``: its start time came;
- ``admit``: the gate gives a queued run waiting for its concurrency limits its slots
  (it stays queued, and is dispatched now);
- ``claim``: a worker takes it (or the worker holding it takes it again, fencing off its
  earlier execution);
- ``finish``: its worker ends the execution (completed, failed, awaiting a retry, or
  given back to the queue);
- ``suspend``: its worker suspends it on waits (or queues it again: a wait it blocked on
  was resolved meanwhile);
- ``wake``: a wait of a suspended run was resolved (an event, a child's end, a sleep's);
- ``retry``: its retry delay passed;
- ``pause``, ``resume``, ``cancel``, ``requeue``: a client's request;
- ``time_out``: its run timeout passed;
- ``stall``: no worker took it for the server's stall threshold;
- ``rerun``: a client retries a failed run (after a fix): it is queued again as a fresh
  first attempt, replaying what completed;
- ``release``: its worker was lost (no heartbeat, dead, deregistered) and it is queued
  again;
- ``lose``: its worker was lost once too often; it fails (``ExecutionsLostError``).
"""

EVENTS: Final[tuple[Event, ...]] = get_args(Event)

SUSPENDED: Final[tuple[RunStatus, ...]] = ("sleeping", "awaiting_event", "awaiting_child_workflow")
"""Statuses of a run suspended on waits (a wait's resolution wakes it)."""
ACTIVE: Final[tuple[RunStatus, ...]] = ("scheduled", "queued", "running", "paused",
                                        "awaiting_retry", "stalled", *SUSPENDED)  # fmt: skip
"""Every status but the terminal ones."""
PAUSABLE: Final[tuple[RunStatus, ...]] = ("queued", "running", "awaiting_retry", *SUSPENDED)
"""Statuses a client may pause."""

MOVES: Final[Mapping[Event, Mapping[RunStatus | None, frozenset[RunStatus]]]] = {
    "start": {None: frozenset({"queued"})},
    "schedule": {None: frozenset({"scheduled"})},
    "trigger": {"scheduled": frozenset({"queued"})},
    "admit": {"queued": frozenset({"queued"})},
    "claim": {"queued": frozenset({"running"}), "running": frozenset({"running"})},
    "finish": {"running": frozenset({"completed", "failed", "awaiting_retry", "queued"})},
    "suspend": {"running": frozenset({*SUSPENDED, "queued"})},
    "wake": {status: frozenset({"queued"}) for status in SUSPENDED},
    "retry": {"awaiting_retry": frozenset({"queued"})},
    "pause": {status: frozenset({"paused"}) for status in PAUSABLE},
    "resume": {"paused": frozenset({"queued"})},
    "cancel": {status: frozenset({"cancelled"}) for status in ACTIVE},
    "time_out": {status: frozenset({"failed"}) for status in ACTIVE},
    "stall": {"queued": frozenset({"stalled"})},
    "requeue": {"running": frozenset({"queued"}), "stalled": frozenset({"queued"})},
    "rerun": {"failed": frozenset({"queued"})},
    "release": {"running": frozenset({"queued"})},
    "lose": {"running": frozenset({"failed"})},
}
"""For each event, the statuses it applies to (None: a run not created yet) and what each
may become."""

BY_WORKER: Final[frozenset[Event]] = frozenset({"claim", "finish", "suspend"})
"""Events a worker causes: they name the worker (and the two that end an execution, the
revision it holds)."""
LOSING: Final[frozenset[Event]] = frozenset({"release", "lose"})
"""Events that take a run from a worker that was lost: the history names that worker."""


def sources(event: Event) -> tuple[RunStatus, ...]:
    """The existing statuses ``event`` applies to, in the table's order."""
    return tuple(status for status in MOVES[event] if status is not None)


def targets(event: Event) -> frozenset[RunStatus]:
    """Every status ``event`` may move a run to."""
    return frozenset().union(*MOVES[event].values())


def allowed(event: Event, current: RunStatus | None, target: RunStatus) -> bool:
    """Whether ``event`` may move a run in ``current`` to ``target``."""
    return target in MOVES[event].get(current, frozenset())


@attrs.frozen
class RunState:
    """What the lifecycle needs of a run."""

    status: RunStatus | None = None
    """None: not created yet."""
    revision: int = 0
    """Bumped by every change (a worker's writes are fenced by it)."""
    worker: str | None = None
    """The worker holding the run (only while running)."""
    attempt: int = 1
    """The workflow attempt (a retry starts the next; a rerun starts over at 1)."""


@attrs.frozen
class Change:
    """An event, with what it says."""

    event: Event
    reason: str
    """Why, as the history shows it."""
    target: RunStatus | None = None
    """The status asked for, where the event allows several (``finish``, ``suspend``)."""
    worker: str | None = None
    """The worker causing a ``claim``, ``finish`` or ``suspend``."""
    revision: int | None = None
    """The revision the worker holds (``finish``, ``suspend``): the fence."""


@attrs.frozen
class Transition:
    """One row of a run's history."""

    from_status: RunStatus | None
    to_status: RunStatus
    revision: int
    reason: str
    worker: str | None
    """The worker that caused it (claims and a worker's own changes), or whose execution
    was lost (``release``, ``lose``)."""


@attrs.frozen
class Moved:
    """The outcome of a change that applies."""

    run: RunState
    """The run after."""
    transition: Transition
    """The history row."""
    dispatch: bool
    """Publish it to the workers (it is queued)."""
    ended: bool
    """It reached a terminal status (its parent's wait on it resolves; its deadline
    goes)."""
    stops: str | None
    """The worker whose execution this change stops (a run taken from it while running:
    it is told to let go)."""


@attrs.frozen
class Refused:
    """A change that does not apply: the run is not in a status the event moves from,
    the target is not allowed, or a worker's fence does not hold."""

    why: str


def step(run: RunState, change: Change) -> Moved | Refused:
    """Decide what ``change`` does to ``run``."""
    moves = MOVES[change.event]
    if run.status not in moves:
        return Refused(f"{change.event} does not apply to a run that is {run.status or 'new'}")
    choices = moves[run.status]
    target = change.target
    if target is None:
        if len(choices) != 1:
            return Refused(f"{change.event} from {run.status} needs a target")
        (target,) = choices
    elif target not in choices:
        return Refused(f"{change.event} cannot move a {run.status} run to {target}")
    if change.event in BY_WORKER and change.worker is None:
        return Refused(f"{change.event} names the worker")
    fenced = change.event in ("finish", "suspend")
    if fenced and (run.worker != change.worker or run.revision != change.revision):
        return Refused("the worker does not hold the run at that revision")
    if change.event == "claim" and run.status == "running" and run.worker != change.worker:
        return Refused("another worker holds the run")
    worker = change.worker if target == "running" else None
    revision = run.revision + 1
    attempt = {"retry": run.attempt + 1, "rerun": 1}.get(change.event, run.attempt)
    after = RunState(status=target, revision=revision, worker=worker, attempt=attempt)
    if change.event in BY_WORKER:
        by_worker = change.worker
    elif change.event in LOSING:
        by_worker = run.worker  # the worker whose execution was lost
    else:
        by_worker = None
    return Moved(
        run=after,
        transition=Transition(run.status, target, revision, change.reason, by_worker),
        dispatch=target == "queued",
        ended=target in TERMINAL,
        stops=run.worker if run.worker is not None and run.worker != worker
        and change.event not in BY_WORKER else None,
    )  # fmt: skip


def every_move() -> frozenset[tuple[RunStatus | None, RunStatus]]:
    """Every (from, to) pair some event allows: what a run's history may hold."""
    return frozenset((source, target) for moves in MOVES.values()
                     for source, targets_ in moves.items() for target in targets_)  # fmt: skip
