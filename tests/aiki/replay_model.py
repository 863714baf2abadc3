"""A model of handlers and of the server's history, to drive the replay core as the worker
does (`tests/aiki/test_replay_properties.py`).

A *program* is a block of statements: steps (a task, a sleep, an event wait, a child
started then waited for) and nurseries of blocks (all of them, or a race: the first block
to finish cancels the others). Each step's address depends on everything the handler saw
before it (the outcomes delivered so far, in order), so a replay that delivers outcomes in
another order, or to other branches, reaches other steps, and the core reports a
divergence.

Everything random comes from seeds drawn by hypothesis: when a task finishes, which waits
the server resolves while the run is suspended and in which order, when a worker dies,
and the scheduler: the order in which branches that can run at once are run. The worker's
scheduler is deterministic (`aiki.sdk.deterministic_scheduling`: in creation order), so
each example draws a scheduler at random (a priority per branch) and keeps it for every
execution: two branches that finish a race in the same moment are decided by it, as trio
decides them.
"""

from __future__ import annotations

import random
from typing import Literal

import attrs

from aiki.errors import ErrorInfo
from aiki.protocol import RecordedChild, RecordedTask, RecordedWait, Settled
from aiki.sdk import Deliver, Diverge, Idle, Replay, Start, Suspend
from aiki.sdk._replay import Branch

StepKind = Literal["task", "sleep", "event", "child"]


@attrs.frozen
class Do:
    """A step; ``shared``: its address does not depend on what the handler saw (so
    concurrent branches reach the same address, told apart by seq)."""

    kind: StepKind
    name: str
    shared: bool = False


@attrs.frozen
class Nursery:
    blocks: tuple[tuple[Stmt, ...], ...]
    race: bool = False


Stmt = Do | Nursery


class ModelError(AssertionError):
    """The core broke a promise (the test fails with this)."""


@attrs.define
class _Wait:
    kind: str
    key: str
    seq: int
    state: str = "pending"
    result: object = None
    resolved: int = -1
    """The server's resolution order (-1: not resolved)."""


@attrs.define
class Server:
    """What the server stores of one run, and the world around it (events, children)."""

    rng: random.Random
    tasks: dict[tuple[str, int], RecordedTask] = attrs.Factory(dict)
    waits: dict[tuple[str, int], _Wait] = attrs.Factory(dict)
    children: dict[tuple[str, int], str] = attrs.Factory(dict)
    ended: dict[str, str] = attrs.Factory(dict)
    """Child run ID -> how it ended."""
    settled: dict[int, Settled] = attrs.Factory(dict)
    seen: dict[int, tuple[Branch, object]] = attrs.Factory(dict)
    """Who received what at each stored position (kept by the test, not the server)."""
    delivered: set[tuple[str, int]] = attrs.Factory(set)
    """Steps whose outcome some execution delivered (kept by the test)."""
    events: dict[str, list[list[object]]] = attrs.Factory(dict)
    """name -> [payload, consumed by (wait seq) or None], in arrival order."""
    task_runs: dict[tuple[str, int], int] = attrs.Factory(dict)
    resolutions: int = 0

    # -- history as a claim returns it ------------------------------------------------------------

    def replay(self) -> Replay:
        waits = sorted(self.waits.values(), key=lambda w: (w.resolved < 0, w.resolved))
        recorded: list[RecordedTask | RecordedChild | RecordedWait] = [
            RecordedWait(kind=w.kind, key=w.key, seq=w.seq, state=w.state, result=w.result)  # type: ignore[arg-type]
            for w in waits
        ]
        recorded += [
            RecordedChild(address=a, seq=s, run_id=c) for (a, s), c in self.children.items()
        ]
        recorded += list(self.tasks.values())
        return Replay(recorded, [self.settled[p] for p in sorted(self.settled)])

    # -- writes -----------------------------------------------------------------------------------

    def store(
        self, tasks: list[RecordedTask], settled: list[tuple[Settled, Branch, object]]
    ) -> None:
        for task in tasks:
            self.tasks[(task.address, task.seq)] = task
        for entry, branch, outcome in settled:
            if entry.position in self.settled:
                raise ModelError(f"position {entry.position} stored twice")
            self.settled[entry.position] = entry
            self.seen[entry.position] = (branch, outcome)
            wait = self.waits.get((entry.address, entry.seq))
            if entry.withdrawn and wait is not None and wait.state != "withdrawn":
                if wait.kind == "event" and wait.state == "completed":
                    for event in self.events.get(wait.key, []):
                        if event[1] == wait.seq:
                            event[1] = None  # given back: the next wait takes it
                wait.state = "withdrawn"
                self._route(wait.key)

    def begin_wait(self, kind: str, key: str, seq: int) -> _Wait:
        wait = self.waits.setdefault((f"{_prefix(kind)}:{key}", seq), _Wait(kind, key, seq))
        if kind == "event":
            self._route(key)
        elif kind == "child" and key in self.ended:
            self._resolve(wait, {"status": self.ended[key]})
        return wait

    def _resolve(self, wait: _Wait, result: object, state: str = "completed") -> None:
        wait.state, wait.result, wait.resolved = state, result, self.resolutions
        self.resolutions += 1

    def _route(self, name: str) -> None:
        """Hand unconsumed events to pending waits, oldest to oldest."""
        waiting = sorted((w for w in self.waits.values()
                          if w.kind == "event" and w.key == name and w.state == "pending"),
                         key=lambda w: w.seq)  # fmt: skip
        for event in self.events.get(name, []):
            if event[1] is None and waiting:
                wait = waiting.pop(0)
                event[1] = wait.seq
                self._resolve(wait, event[0])

    # -- the world moves on -----------------------------------------------------------------------

    def world_moves(self, names: list[str], at_least_one: bool) -> None:
        """Sleeps end, events arrive, children end: a random part of what is pending."""
        pending = [w for w in self.waits.values() if w.state == "pending"]
        self.rng.shuffle(pending)
        count = self.rng.randint(1 if at_least_one and pending else 0, len(pending))
        for wait in pending[:count]:
            if wait.state != "pending":
                continue
            if wait.kind == "sleep":
                self._resolve(wait, None, self.rng.choice(["completed", "cut_short"]))
            elif wait.kind == "event":
                self.send(wait.key)
            else:
                self.end_child(wait.key)
        for name in names:
            if self.rng.random() < 0.2:
                self.send(name)

    def send(self, name: str) -> None:
        self.events.setdefault(name, []).append([f"{name}-{self.rng.randrange(1000)}", None])
        self._route(name)

    def end_child(self, run_id: str) -> None:
        if run_id in self.ended:
            return
        self.ended[run_id] = self.rng.choice(["completed", "failed"])
        for wait in self.waits.values():
            if wait.kind == "child" and wait.key == run_id and wait.state == "pending":
                self._resolve(wait, {"status": self.ended[run_id]})

    def check_settled(self) -> None:
        """Once the run completed, every wait it reached was received or given up."""
        for key, wait in self.waits.items():
            if wait.state != "withdrawn" and key not in self.delivered:
                raise ModelError(f"wait {key} is {wait.state} but its run completed")

    def check_events(self) -> None:
        """An event goes only to a wait still wanted."""
        for name, events in self.events.items():
            for payload, taker in events:
                if taker is None:
                    continue
                wait = self.waits[(f"event:{name}", taker)]  # type: ignore[index]
                if wait.state == "withdrawn":
                    raise ModelError(f"event {payload} went to withdrawn wait {name}#{taker}")


def _prefix(kind: str) -> str:
    return "wait" if kind == "child" else kind


# -- one execution --------------------------------------------------------------------------------


@attrs.define(eq=False)
class _Branch:
    path: Branch
    block: tuple[Stmt, ...]
    parent: _Branch | None = None
    pc: int = 0
    state: str = "runnable"  # runnable | parked | joining | done
    spawned: int = 0
    children: list[_Branch] = attrs.Factory(list)
    race: bool = False
    winner: _Branch | None = None
    cancelled: bool = False
    outcome: object = None
    step: Do | None = None
    phase: int = 0
    """For a child: 0 = start it, 1 = wait for it."""
    child_id: str = ""
    step_address: str = ""


Ended = Literal["completed", "suspended", "crashed"]


@attrs.define
class Execution:
    """One execution of ``program`` against ``server``'s history (the worker's part)."""

    program: tuple[Stmt, ...]
    server: Server
    rng: random.Random
    crash_after: int | None
    scheduler: int = 0
    """Which deterministic scheduler runs the branches (a seed of branch priorities)."""
    strict: bool = True
    """The code is unchanged: each recorded outcome must go where it went before."""
    log: list[object] = attrs.Factory(list)
    replay: Replay = attrs.field(init=False)
    runnable: list[_Branch] = attrs.Factory(list)
    by_path: dict[Branch, _Branch] = attrs.Factory(dict)
    unsent_tasks: list[RecordedTask] = attrs.Factory(list)
    unsent: list[tuple[Settled, Branch, object]] = attrs.Factory(list)
    in_flight: dict[tuple[str, int], tuple[str, object]] = attrs.Factory(dict)
    decisions: int = 0
    taken: list[tuple[Branch, str]] = attrs.Factory(list)
    spawned: bool = False
    """The handler spawned a branch: from then on deliveries' positions are stored (as
    the worker does; before, its one branch needs no order)."""

    def __attrs_post_init__(self) -> None:
        self.replay = self.server.replay()
        root = _Branch((), self.program)
        self.by_path[()] = root
        self.runnable.append(root)

    def run(self) -> Ended:
        root = self.by_path[()]
        while True:
            self._run_to_quiescence()
            if root.state == "done":
                self._flush()
                return "completed"
            if self.crash_after is not None and self.decisions >= self.crash_after:
                return "crashed"
            self.decisions += 1
            if self.decisions > 2000:
                raise ModelError("no end in sight")
            if self.in_flight and self.rng.random() < 0.3:
                self._arrive(self.rng.choice(list(self.in_flight)))
                continue
            if self.rng.random() < 0.1:
                self._flush()  # a held task result lingered long enough
            match self.replay.decide():
                case Deliver() as deliver:
                    self._deliver(deliver)
                case Start(steps=steps):
                    self._flush()
                    for step in steps:
                        self._begin(step.branch, step.address, step.seq)
                case Suspend(waits=waits):
                    self._flush()
                    for wait in waits:
                        if (wait.address, wait.seq) not in self.server.waits:
                            raise ModelError(f"suspended on unknown wait {wait}")
                        if self.server.waits[(wait.address, wait.seq)].state == "withdrawn":
                            raise ModelError(f"suspended on withdrawn wait {wait}")
                    return "suspended"
                case Diverge(error=error):
                    raise ModelError(f"an unchanged handler diverged: {error}")
                case Idle():
                    if not self.in_flight:
                        raise ModelError("idle with nothing in flight: the run would hang")
                    self._arrive(self.rng.choice(list(self.in_flight)))

    # -- the handler ------------------------------------------------------------------------------

    def _run_to_quiescence(self) -> None:
        while self.runnable:
            branch = min(self.runnable, key=self._priority)
            self.runnable.remove(branch)
            self._run_branch(branch)
        # The steps taken meanwhile reach the core in any order (another scheduler would
        # run the same branches to the same steps in another order).
        self.rng.shuffle(self.taken)
        for path, address in self.taken:
            self.replay.take(path, address)
        self.taken.clear()

    def _priority(self, branch: _Branch) -> int:
        return hash((self.scheduler, branch.path)) % 1_000_003

    def _run_branch(self, branch: _Branch) -> None:
        if branch.state == "done":
            return
        if branch.outcome is not None:
            outcome, branch.outcome = branch.outcome, None
            self.log.append(_summary(outcome))
            step = branch.step
            assert step is not None
            if step.kind == "child" and branch.phase == 0 and isinstance(outcome, RecordedChild):
                branch.phase, branch.child_id = 1, outcome.run_id
                if not branch.cancelled:
                    self._take(branch, f"wait:{outcome.run_id}")
                    return
            branch.phase = 0
        if branch.cancelled:
            self._finish(branch)
            return
        while branch.pc < len(branch.block):
            stmt = branch.block[branch.pc]
            branch.pc += 1
            if isinstance(stmt, Do):
                branch.step = stmt
                seen = "" if stmt.shared else f"@{len(self.log)}:{hash(tuple(self.log)) % 997}"
                address = {"task": "task:", "sleep": "sleep:", "event": "event:",
                           "child": "child:w@1:ref:"}[stmt.kind] + stmt.name + seen  # fmt: skip
                if stmt.kind == "event":
                    address = f"event:{stmt.name}"  # events are queued by name
                self._take(branch, address)
                return
            branch.state = "joining"
            self.spawned = True
            branch.race = stmt.race
            branch.winner = None
            branch.children = []
            for block in stmt.blocks:
                child = _Branch((*branch.path, branch.spawned), block, parent=branch)
                branch.spawned += 1
                self.by_path[child.path] = child
                branch.children.append(child)
                self.runnable.append(child)
            return
        self._finish(branch)

    def _take(self, branch: _Branch, address: str) -> None:
        branch.state = "parked"
        branch.step_address = address
        self.taken.append((branch.path, address))

    def _finish(self, branch: _Branch) -> None:
        branch.state = "done"
        parent = branch.parent
        if parent is None:
            return
        if parent.race and parent.winner is None and not branch.cancelled:
            parent.winner = branch
            self.log.append(("won", branch.path))
            for other in parent.children:
                if other is not branch:
                    self._cancel(other)
        if all(child.state == "done" for child in parent.children):
            parent.state = "runnable"
            self.runnable.append(parent)

    def _cancel(self, branch: _Branch) -> None:
        if branch.state == "done" or branch.cancelled:
            return
        branch.cancelled = True
        if branch.state == "parked":
            buffered = (branch.path, branch.step_address)
            if buffered in self.taken:  # taken and given up in the same moment
                self.taken.remove(buffered)
                self.replay.take(*buffered)
            settled = self.replay.withdraw(branch.path)
            if settled is not None:
                self.unsent.append((settled, branch.path, "withdrawn"))
            branch.state = "runnable"
            branch.outcome = None
            self.runnable.append(branch)
        elif branch.state == "joining":
            for child in branch.children:
                self._cancel(child)
        # a runnable branch stops at its next step

    # -- decisions --------------------------------------------------------------------------------

    def _deliver(self, deliver: Deliver) -> None:
        branch = self.by_path[deliver.branch]
        if branch.state != "parked":
            raise ModelError(f"delivered to {deliver.branch}, which is not parked")
        key = (deliver.address, deliver.seq)
        self.server.delivered.add(key)
        if deliver.settled is None:
            position = next((p for p, e in self.server.settled.items()
                             if (e.address, e.seq) == key), None)  # fmt: skip
            if position is None:  # stored without its position (a single branch's step)
                position = -1
            recorded_branch, recorded_outcome = self.server.seen.get(position, (None, None))
            now = (deliver.branch, _summary(deliver.outcome))
            if self.strict and position >= 0 and (recorded_branch, recorded_outcome) != now:
                raise ModelError(
                    f"position {position} ({key}) went to {recorded_branch} with "
                    f"{recorded_outcome} before, to {deliver.branch} with "
                    f"{_summary(deliver.outcome)} now"
                )
        elif self.spawned or deliver.settled.error is not None:
            self.unsent.append((deliver.settled, deliver.branch, _summary(deliver.outcome)))
        branch.state = "runnable"
        branch.outcome = deliver.outcome
        self.runnable.append(branch)

    def _begin(self, path: Branch, address: str, seq: int) -> None:
        key = (address, seq)
        kind, _, name = address.partition(":")
        if kind == "task":
            if key in self.server.tasks:
                raise ModelError(f"task {key} runs again though its outcome is stored")
            self.server.task_runs[key] = self.server.task_runs.get(key, 0) + 1
            result = RecordedTask(address=address, seq=seq, name=name, state="completed",
                                  output=self.rng.randrange(100))  # fmt: skip
            self.in_flight[key] = ("task", result)
        elif kind == "child":
            child_id = self.server.children.setdefault(key, f"c-{address}-{seq}")
            self.in_flight[key] = ("child", RecordedChild(address=address, seq=seq,
                                                          run_id=child_id))  # fmt: skip
        else:
            wait_kind = "child" if kind == "wait" else kind
            wait = self.server.begin_wait(wait_kind, name, seq)
            if wait.state == "pending":
                self.replay.pending(address, seq, _recorded(wait))
            else:
                self.in_flight[key] = ("wait", _recorded(wait))

    def _arrive(self, key: tuple[str, int]) -> None:
        kind, outcome = self.in_flight.pop(key)
        if kind == "task":
            assert isinstance(outcome, RecordedTask)
            self.unsent_tasks.append(outcome)
        self.replay.arrive(key[0], key[1], outcome)

    def _flush(self) -> None:
        self.server.store(self.unsent_tasks, self.unsent)
        self.unsent_tasks, self.unsent = [], []


def _recorded(wait: _Wait) -> RecordedWait:
    return RecordedWait(kind=wait.kind, key=wait.key, seq=wait.seq, state=wait.state,  # type: ignore[arg-type]
                        result=wait.result)  # fmt: skip


def _summary(outcome: object) -> object:
    match outcome:
        case RecordedTask():
            return ("task", outcome.output)
        case RecordedChild():
            return ("child", outcome.run_id)
        case RecordedWait():
            return ("wait", outcome.state, str(outcome.result))
        case ErrorInfo():
            return ("error", outcome.message)
    return outcome


def names_in(program: tuple[Stmt, ...]) -> list[str]:
    """The event names a program waits for."""
    found: list[str] = []
    for stmt in program:
        if isinstance(stmt, Do) and stmt.kind == "event":
            found.append(stmt.name)
        elif isinstance(stmt, Nursery):
            for block in stmt.blocks:
                found += names_in(block)
    return found


def run_to_completion(
    program: tuple[Stmt, ...], seed: int, crash_rate: float, scheduler: int = 0
) -> Server:
    """Execute ``program`` until it completes: suspended and resumed, its worker killed at
    random moments, the world moving on in between. Raises `ModelError` if the core broke
    a promise."""
    rng = random.Random(seed)
    server = Server(rng)
    names = sorted(set(names_in(program))) or []
    for _ in range(200):
        crash = rng.randrange(1, 40) if rng.random() < crash_rate else None
        execution = Execution(program, server, rng, crash, scheduler)
        ended = execution.run()
        server.check_events()
        if ended == "completed":
            server.check_settled()
            return server
        server.world_moves(names, at_least_one=ended == "suspended")
        for (_address, _), run_id in server.children.items():
            if rng.random() < 0.3:
                server.end_child(run_id)
    raise ModelError("the run never completed")
