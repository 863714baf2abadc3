"""Replay: which step of a handler happens next. Pure: no I/O, no trio, no clock.

On every resumption a workflow handler runs again from the top, its trio branches
included. Each *step* a branch takes (a task call, a child start, a sleep, an event wait,
a wait for a child) is identified by its *address* and its occurrence ``seq`` among steps
of that address. Addresses:

- task call: ``task:<name>:<sha256 of the canonical JSON input>``;
- child start: ``child:<workflow>@<version>:<reference ID, or sha256 of the input>``;
- sleep: ``sleep:<name>``; event wait: ``event:<name>``; wait for a child: ``wait:<run ID>``.

A branch that takes a step *parks* until the step *settles*: its outcome is delivered to
the branch, or the branch gives the step up (it was cancelled: the step is *withdrawn*).
`Replay` decides, each time no branch of the handler can run (the handler is
*quiescent*), the one thing that happens next (a `Decision`), so that a handler whose code
did not change makes the same decisions in every execution, whatever the order in which
trio ran its branches or the server resolved its waits:

- **Steps are numbered by branch, not by timing.** Steps taken while the handler ran to
  quiescence are given their ``seq`` in the order of the branches that took them
  (`Branch`, the branch's place in the handler's task tree), not in the order trio ran
  them.
- **Outcomes are delivered one at a time, in the recorded order.** Every settlement
  gets the next *position* in the run's history (`Settled`, stored by the server). On
  replay a recorded outcome is delivered at its recorded position, and the handler runs
  to quiescence before the next one; outcomes that were never delivered (a wait the
  server resolved while the run was suspended) follow, in the server's order (the order
  in which they resolved), and then outcomes of new steps, in the order they arrive.
- **New steps wait for the history.** A step with nothing recorded starts only once
  every recorded step was reached: one taken while recorded steps remain out of reach is
  a divergence (`NonDeterminismError`, naming them) before any new side effect. So
  reordering recorded calls and removing calls replay fine, while inserting a call before
  recorded ones, changing a recorded call's input, or a control-flow change that reaches
  new steps is caught.
- **A withdrawn step stays withdrawn.** A step the handler gave up in an earlier
  execution (a race it lost, a trio deadline around it) is not delivered on replay: its
  branch waits until the handler gives it up again.
- **Suspend only on what can wake the run.** The run is suspended only when the handler
  is quiescent, nothing is in flight or to be delivered, and some branch waits on a
  pending wait (a wait that was given up is not one).
"""

from __future__ import annotations

import hashlib
import heapq
from collections import deque
from typing import TYPE_CHECKING, Final, Literal

import attrs

from ..errors import ErrorInfo, NonDeterminismError
from ..protocol import RecordedChild, RecordedTask, RecordedWait, Settled, canonical_json

if TYPE_CHECKING:
    from collections.abc import Iterable

Branch = tuple[int, ...]
"""A branch's place in the handler's task tree: the handler's own task is ``()``, and the
n-th task a branch spawned (counting from 0) is that branch's path plus ``(n,)``."""

Key = tuple[str, int]
"""A step's identity in the run's history: (address, seq)."""
Recorded = RecordedTask | RecordedChild | RecordedWait

RESOLVED: Final = frozenset({"completed", "cut_short", "timed_out"})
"""States of a wait whose outcome can be delivered."""


def _digest(value: object) -> str:
    return hashlib.sha256(canonical_json(value)).hexdigest()


def task_address(name: str, input_json: object) -> str:
    """The content address of a task call: its name and the hash of its input."""
    return f"task:{name}:{_digest(input_json)}"


def child_address(workflow: str, version: str, reference_id: str | None, input_json: object) -> str:
    """A child start: by its reference ID if it has one, else by its input."""
    key = f"ref:{reference_id}" if reference_id is not None else _digest(input_json)
    return f"child:{workflow}@{version}:{key}"


# -- decisions ------------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Deliver:
    """Hand ``outcome`` (a recorded step, or the `ErrorInfo` of a step that failed) to
    the branch parked on step (address, seq); ``settled``: where it settles, to be stored
    (None if an earlier execution stored it)."""

    branch: Branch
    address: str
    seq: int
    outcome: object
    settled: Settled | None


@attrs.frozen(kw_only=True)
class NewStep:
    """A step with nothing recorded, to be done now (``attempts``: failed attempts of a
    task recorded by an earlier execution)."""

    branch: Branch
    address: str
    seq: int
    attempts: int = 0


@attrs.frozen(kw_only=True)
class Start:
    """Do these new steps (in this order); first store what is not stored yet."""

    steps: tuple[NewStep, ...]


@attrs.frozen(kw_only=True)
class Suspend:
    """Every branch waits; these pending waits can wake the run."""

    waits: tuple[RecordedWait, ...]


@attrs.frozen(kw_only=True)
class Diverge:
    """The code no longer matches the run's history."""

    error: NonDeterminismError


@attrs.frozen
class Idle:
    """Nothing to do until something changes (a step's outcome arrives, a branch moves)."""


Decision = Deliver | Start | Suspend | Diverge | Idle

IDLE: Final = Idle()

# -- the core -------------------------------------------------------------------------------------

_State = Literal[
    "unkeyed",  # taken since the last decision; not numbered yet
    "awaiting",  # its outcome is known (recorded or arrived): to be delivered
    "blocked",  # a pending wait
    "withdrawing",  # given up by an earlier execution: waits to be given up again
    "held",  # new: waits for the history to be replayed
    "running",  # new, in flight
]


@attrs.define(eq=False)
class _Parked:
    branch: Branch
    address: str
    deadline: bool
    """A trio deadline is pending around the step (it may be given up without any step)."""
    key: Key | None = None
    state: _State = "unkeyed"
    outcome: object = None
    position: int | None = None
    """Where the outcome was delivered in an earlier execution (None: not delivered yet)."""


class Replay:
    """The replay core of one execution: steps taken, steps settled, what comes next.

    Each decision costs time in the number of branches it concerns, not in the number
    of branches parked (a fan-out of thousands of children replays in linear time).

    Args:
        recorded: the run's recorded steps: final task outcomes, child runs started,
            waits reached (in the order the server resolved them).
        settled: where each step settled in earlier executions (`Settled`).
        attempts: failed attempts of tasks without a final outcome, by (address, seq).
    """

    def __init__(
        self,
        recorded: Iterable[Recorded] = (),
        settled: Iterable[Settled] = (),
        attempts: Iterable[tuple[str, int, int]] = (),
    ) -> None:
        self._records: dict[Key, Recorded] = {}
        self._rank: dict[Key, int] = {}
        for rank, step in enumerate(recorded):
            key = (step.address, step.seq)
            self._records[key] = step
            self._rank[key] = rank
        self._order = sorted(settled, key=lambda entry: entry.position)
        self._settlement = {(entry.address, entry.seq): entry for entry in self._order}
        self._attempts = {(address, seq): count for address, seq, count in attempts}
        self._recorded_keys = {*self._records, *self._settlement}
        self._given_up = {entry.address for entry in self._order if entry.withdrawn} | {
            record.address for record in self._records.values()
            if isinstance(record, RecordedWait) and record.state == "withdrawn"
        }  # fmt: skip
        self._unreached = len(self._recorded_keys)
        self._consumed: set[Key] = set()
        self._cursor = 0
        self._position = self._order[-1].position + 1 if self._order else 0
        self._parked: dict[Branch, _Parked] = {}
        self._by_key: dict[Key, _Parked] = {}
        self._unkeyed: list[Branch] = []
        self._seq: dict[str, int] = {}
        self._keyed: set[Key] = set()
        self._arrivals: deque[Key] = deque()
        self._running = 0
        self._divergence: NonDeterminismError | None = None
        # Parked branches by state (heaps are cleaned lazily: an entry counts only while
        # its branch is still parked in that state).
        self._ready: list[tuple[int, Branch]] = []
        """Recorded outcomes no execution received yet, by the server's rank."""
        self._positioned: list[tuple[int, Branch]] = []
        """Recorded outcomes with their recorded position."""
        self._held: dict[Branch, _Parked] = {}
        self._blocked: dict[Branch, _Parked] = {}
        self._withdrawing: dict[Branch, _Parked] = {}

    # -- what the branches do ---------------------------------------------------------------------

    def given_up_before(self, address: str) -> bool:
        """An earlier execution gave up a step at ``address`` (whether a trio deadline is
        around this one matters: see `take`)."""
        return address in self._given_up

    def take(self, branch: Branch, address: str, *, deadline: bool = False) -> None:
        """``branch`` takes the step at ``address`` and parks until it settles.

        ``deadline``: a trio deadline is pending around the step (it may be given up
        without any step being delivered); needed only where `given_up_before` holds.

        Raises:
            ValueError: the branch is parked already.
        """
        if branch in self._parked:
            raise ValueError(f"branch {branch} is parked already")
        self._parked[branch] = _Parked(branch, address, deadline)
        self._unkeyed.append(branch)

    def withdraw(self, branch: Branch) -> Settled | None:
        """``branch`` gave its step up (it was cancelled while parked).

        Returns:
            The settlement to store, or None if there is nothing to store (the step had
            not started, or its withdrawal is recorded already).
        """
        parked = self._parked.pop(branch, None)
        if parked is None:
            return None
        if parked.key is None:
            self._unkeyed.remove(branch)
            return None
        del self._by_key[parked.key]
        state = parked.state
        self._leave(parked)
        if state == "held":
            return None
        if state == "withdrawing":
            self._consumed.add(parked.key)
            return None
        if parked.position is not None:
            self._divergence = self._divergence or NonDeterminismError(
                f"step {_name(parked.key)} was given up, but an earlier execution received "
                f"its outcome (at position {parked.position}): the handler's decisions "
                "depend on time (a trio deadline or sleep in the handler); use the step's "
                "own timeout",
                unconsumed=(_name(parked.key),),
            )
            return None
        if parked.key in self._arrivals:
            self._arrivals.remove(parked.key)
        return self._settle(parked.key, withdrawn=True)

    def arrive(self, address: str, seq: int, outcome: object) -> None:
        """The outcome of a new step arrived (delivered in arrival order)."""
        parked = self._by_key.get((address, seq))
        if parked is None or parked.state != "running":
            return  # given up meanwhile
        self._enter(parked, "awaiting", outcome)
        self._arrivals.append((address, seq))

    def pending(self, address: str, seq: int, wait: RecordedWait) -> None:
        """A new wait was recorded as pending: its branch waits on the server."""
        parked = self._by_key.get((address, seq))
        if parked is None or parked.state != "running":
            return
        self._enter(parked, "blocked", wait)

    # -- what comes next --------------------------------------------------------------------------

    @property
    def replaying(self) -> bool:
        """Recorded settlements remain to be replayed."""
        return self._next_entry() is not None

    @property
    def in_flight(self) -> int:
        """New steps started whose outcome has not arrived."""
        return self._running

    def decide(self) -> Decision:
        """What happens next; call only while no branch of the handler can run."""
        self._number_steps()
        if self._divergence is not None:
            return Diverge(error=self._divergence)
        entry = self._next_entry()
        if entry is not None and (decision := self._replay(entry)) is not None:
            return decision
        if (ready := self._first(self._ready)) is not None:
            return self._deliver(ready)  # resolved while suspended: in the server's order
        if self._held:
            held = sorted(self._held.values(), key=lambda p: p.branch)
            if entry is not None or self._unreached:
                return Diverge(error=self._inserted(held[0]))
            return self._start(held)
        if self._arrivals:
            return self._deliver(self._by_key[self._arrivals[0]])
        if self._running:
            return IDLE
        if self._blocked:
            blocked = sorted(self._blocked.values(), key=lambda p: p.branch)
            return Suspend(waits=tuple(p.outcome for p in blocked))  # type: ignore[misc]
        if stuck := [p for p in self._withdrawing.values() if not p.deadline]:
            return Diverge(error=NonDeterminismError(
                f"step {_name(_key(stuck[0]))} was given up by an earlier execution, but "
                "nothing in this one gives it up: the workflow code changed",
                unconsumed=tuple(_name(_key(p)) for p in stuck),
            ))  # fmt: skip
        return IDLE

    # -- internals --------------------------------------------------------------------------------

    def _enter(self, parked: _Parked, state: _State, outcome: object = None) -> None:
        """Move a keyed branch to ``state`` (leaving the one it was in)."""
        self._leave(parked)
        parked.state = state
        if outcome is not None:
            parked.outcome = outcome
        branch = parked.branch
        match state:
            case "awaiting" if parked.position is not None:
                heapq.heappush(self._positioned, (parked.position, branch))
            case "awaiting" if _key(parked) in self._rank:
                heapq.heappush(self._ready, (self._rank[_key(parked)], branch))
            case "held":
                self._held[branch] = parked
            case "blocked":
                self._blocked[branch] = parked
            case "withdrawing":
                self._withdrawing[branch] = parked
            case "running":
                self._running += 1

    def _leave(self, parked: _Parked) -> None:
        branch = parked.branch
        match parked.state:
            case "held":
                del self._held[branch]
            case "blocked":
                del self._blocked[branch]
            case "withdrawing":
                del self._withdrawing[branch]
            case "running":
                self._running -= 1

    def _first(self, heap: list[tuple[int, Branch]]) -> _Parked | None:
        """The first branch of ``heap`` still awaiting its outcome there (dropping those
        that moved on)."""
        while heap:
            branch = heap[0][1]
            parked = self._parked.get(branch)
            if parked is not None and parked.state == "awaiting" and (
                    heap is not self._positioned or parked.position == heap[0][0]):  # fmt: skip
                return parked
            heapq.heappop(heap)
        return None

    def _number_steps(self) -> None:
        """Give the steps taken since the last decision their seq, in branch order."""
        for branch in sorted(self._unkeyed):
            parked = self._parked[branch]
            seq = self._seq.get(parked.address, 0)
            self._seq[parked.address] = seq + 1
            key = parked.key = (parked.address, seq)
            self._keyed.add(key)
            if key in self._recorded_keys:
                self._unreached -= 1
            self._by_key[key] = parked
            record = self._records.get(key)
            entry = self._settlement.get(key)
            if entry is not None and entry.withdrawn:
                self._enter(parked, "withdrawing")
            elif entry is not None and entry.error is not None:
                parked.position = entry.position
                self._enter(parked, "awaiting", entry.error)
            elif isinstance(record, RecordedWait) and record.state == "pending":
                self._enter(parked, "blocked", record)
            elif isinstance(record, RecordedWait) and record.state == "withdrawn":
                self._enter(parked, "withdrawing")
            elif record is not None:
                parked.position = None if entry is None else entry.position
                self._enter(parked, "awaiting", record)
            else:
                self._enter(parked, "held")
        self._unkeyed.clear()

    def _next_entry(self) -> Settled | None:
        while self._cursor < len(self._order):
            entry = self._order[self._cursor]
            if (entry.address, entry.seq) not in self._consumed:
                return entry
            self._cursor += 1
        return None

    def _replay(self, entry: Settled) -> Decision | None:
        """The next recorded settlement, if the handler can reach it; else the earliest
        recorded outcome a branch awaits (the code changed: replay by address)."""
        parked = self._by_key.get((entry.address, entry.seq))
        if parked is not None:
            if parked.state == "awaiting" and not entry.withdrawn:
                return self._deliver(parked)
            if parked.state == "withdrawing" and parked.deadline:
                return IDLE  # its trio deadline gives it up, as before
        if (positioned := self._first(self._positioned)) is not None:
            return self._deliver(positioned)
        return None

    def _deliver(self, parked: _Parked) -> Deliver:
        key = _key(parked)
        del self._parked[parked.branch]
        del self._by_key[key]
        self._leave(parked)
        settled = None
        if parked.position is not None:
            self._consumed.add(key)
        else:
            if key in self._arrivals:
                self._arrivals.remove(key)
            error = parked.outcome if isinstance(parked.outcome, ErrorInfo) else None
            settled = self._settle(key, withdrawn=False, error=error)
        return Deliver(branch=parked.branch, address=key[0], seq=key[1],
                       outcome=parked.outcome, settled=settled)  # fmt: skip

    def _settle(self, key: Key, *, withdrawn: bool, error: ErrorInfo | None = None) -> Settled:
        self._consumed.add(key)
        settled = Settled(address=key[0], seq=key[1], position=self._position,
                          withdrawn=withdrawn, error=error)  # fmt: skip
        self._position += 1
        return settled

    def _start(self, held: list[_Parked]) -> Start:
        steps = []
        for parked in held:
            key = _key(parked)
            self._enter(parked, "running")
            steps.append(NewStep(branch=parked.branch, address=key[0], seq=key[1],
                                 attempts=self._attempts.get(key, 0)))  # fmt: skip
        return Start(steps=tuple(steps))

    def _inserted(self, parked: _Parked) -> NonDeterminismError:
        """The divergence of a new step taken while recorded steps are out of reach."""
        recorded = [*((e.address, e.seq) for e in self._order), *self._records]
        missed = [key for key in dict.fromkeys(recorded) if key not in self._keyed]
        if not missed:  # taken, but their recorded settlement is out of reach
            missed = [(e.address, e.seq) for e in self._order[self._cursor:]
                      if (e.address, e.seq) not in self._consumed]  # fmt: skip
        names = tuple(_name(key) for key in missed)
        return NonDeterminismError(
            f"step {_name(_key(parked))} has no recorded result, but recorded steps were not "
            f"replayed: {', '.join(names)}. The workflow code changed in a way its history "
            "cannot replay (a step inserted before recorded ones, or a recorded call's input "
            "changed)",
            unconsumed=names,
        )


def _key(parked: _Parked) -> Key:
    assert parked.key is not None
    return parked.key


def _name(key: Key) -> str:
    return f"{key[0]}#{key[1]}"
