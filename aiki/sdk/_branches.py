"""A handler's branches on trio: which tasks they are, where each sits in the handler's
task tree, and when none of them can run; and the worker's deterministic scheduler.

A handler runs in a task of its own (the *root* branch, path ``()``); every task it spawns,
and every task those spawn, is a branch too, with the path of its spawner plus its rank
among the spawner's spawns (`Branch`). The path depends only on the handler's code, not
on the order trio happens to run tasks in.

The replay core acts only while the handler is *quiescent*: no branch is runnable. A
handler whose root never spawned a task is quiescent exactly when the root is parked on
a step (the execution knows). Once it spawns, a trio instrument counts its runnable
branches (tasks scheduled that have not started their step yet) and pokes the execution
when the count drops to zero. The counting instrument is installed only while some
handler has branches: handlers that never spawn cost trio nothing per step.

trio runs each batch of runnable tasks in a random order (or reversed, at random), so
two branches that contend for a `trio.CapacityLimiter` or a lock could get it in another
order on replay. `deterministic_scheduling` makes the worker's scheduler run every batch
in the order its tasks were created: a handler whose code did not change then makes the
same decisions in every execution.
"""

from __future__ import annotations

import contextlib
import random
import threading
from typing import TYPE_CHECKING, Final

import attrs
import trio

from ._replay import Branch

if TYPE_CHECKING:
    from collections.abc import Iterator


@attrs.define(eq=False)
class Branches:
    """The branches of one handler execution (see the module docstring)."""

    runnable: int = 0
    """Branches scheduled to run (counted once the handler has spawned a task)."""
    spawned: bool = False
    """The root spawned a task: quiescence is read from `runnable`."""
    root: trio.lowlevel.Task | None = None
    _poked: trio.Event = attrs.Factory(trio.Event)

    def poke(self) -> None:
        """Something changed: wake `wait_poked`."""
        self._poked.set()

    async def wait_poked(self) -> None:
        """Wait until `poke` is called (or return at once if it was, since the last wait).

        Cancellation: leaves the poke pending.
        """
        await self._poked.wait()
        self._poked = trio.Event()


@attrs.define(eq=False)
class _TaskInfo:
    branches: Branches
    path: Branch
    spawned: int = 0


class _Tracker(trio.abc.Instrument):
    """Knows the branch of every task of every handler in this trio run."""

    def __init__(self) -> None:
        self.tasks: dict[trio.lowlevel.Task, _TaskInfo] = {}
        self.counting: set[Branches] = set()
        self.counter = _Counter(self)

    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        try:
            spawner = self.tasks.get(trio.lowlevel.current_task())
        except RuntimeError:  # spawned by the run loop itself, outside any task
            return
        if spawner is None:
            return
        branches = spawner.branches
        self.tasks[task] = _TaskInfo(branches, (*spawner.path, spawner.spawned))
        spawner.spawned += 1
        if not branches.spawned:
            branches.spawned = True
            if not self.counting:
                trio.lowlevel.add_instrument(self.counter)
            self.counting.add(branches)

    def task_exited(self, task: trio.lowlevel.Task) -> None:
        info = self.tasks.pop(task, None)
        if info is not None and info.branches.runnable == 0:
            info.branches.poke()

    def stop(self, branches: Branches) -> None:
        """The execution is over: stop counting its branches."""
        if branches in self.counting:
            self.counting.discard(branches)
            if not self.counting:
                trio.lowlevel.remove_instrument(self.counter)


class _Counter(trio.abc.Instrument):
    """Counts the runnable branches of each handler that spawned a task (installed while
    some handler did, so that none of their events is missed; a handler that did not
    spawn is not counted, whenever the counter comes and goes)."""

    def __init__(self, tracker: _Tracker) -> None:
        self.tasks = tracker.tasks

    def task_scheduled(self, task: trio.lowlevel.Task) -> None:
        info = self.tasks.get(task)
        if info is not None and info.branches.spawned:
            info.branches.runnable += 1

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        info = self.tasks.get(task)
        if info is not None and info.branches.spawned:
            info.branches.runnable -= 1
            if info.branches.runnable == 0:
                info.branches.poke()


_TRACKER: Final = trio.lowlevel.RunVar[_Tracker]("aiki_branch_tracker")


def _tracker() -> _Tracker:
    try:
        return _TRACKER.get()
    except LookupError:
        tracker = _Tracker()
        trio.lowlevel.add_instrument(tracker)
        _TRACKER.set(tracker)
        return tracker


@contextlib.contextmanager
def tracking(branches: Branches) -> Iterator[None]:
    """Track the branches of one execution while inside (the root registers itself with
    `enter_root`)."""
    tracker = _tracker()
    try:
        yield
    finally:
        tracker.stop(branches)
        for task in [task for task, info in tracker.tasks.items() if info.branches is branches]:
            del tracker.tasks[task]


def enter_root(branches: Branches) -> None:
    """Make the calling task the root branch of ``branches`` (path ``()``)."""
    task = trio.lowlevel.current_task()
    branches.root = task
    _tracker().tasks[task] = _TaskInfo(branches, ())


def current_branch() -> Branch:
    """The path of the calling task in its handler's task tree.

    Raises:
        RuntimeError: the calling task is not a branch of a handler being executed.
    """
    info = _tracker().tasks.get(trio.lowlevel.current_task())
    if info is None:
        raise RuntimeError(
            "a durable step was taken outside its workflow handler's tasks (in a task "
            "spawned by a task body, or in a system task): take steps in the handler"
        )
    return info.path


# -- deterministic scheduling ---------------------------------------------------------------------


class _InCreationOrder(random.Random):
    """trio's scheduler random source, made to run each batch in task creation order.

    With trio's ``_ALLOW_DETERMINISTIC_SCHEDULING`` on, the scheduler sorts each batch by
    task creation and "shuffles" it with this source, then runs it from the end: reversing
    it runs the oldest task first.
    """

    def shuffle(self, x: list[object]) -> None:  # type: ignore[override]
        """Reverse ``x`` in place (the scheduler pops from the end)."""
        x.reverse()


_LOCK: Final = threading.Lock()
_users = 0
_saved: tuple[object, object] | None = None


@contextlib.contextmanager
def deterministic_scheduling() -> Iterator[None]:
    """While inside, trio (in this process) runs every batch of runnable tasks in the
    order the tasks were created, instead of in a random order.

    The worker runs inside it, so that handler branches that contend for trio primitives
    (a `trio.CapacityLimiter` shared by branches, a lock, a channel) get them in the same
    order in every execution. trio has no public switch for this: it is the one its test
    plugins use (``trio._core._run``), checked here so that a trio that changed it fails
    at once rather than replaying in another order.

    Raises:
        RuntimeError: this trio's scheduler has no such switch.
    """
    global _users, _saved
    run = getattr(trio, "_core", None)
    module = getattr(run, "_run", None)
    if not (hasattr(module, "_ALLOW_DETERMINISTIC_SCHEDULING")
            and isinstance(getattr(module, "_r", None), random.Random)):  # fmt: skip
        raise RuntimeError(
            f"trio {trio.__version__} has no deterministic scheduling switch; Aiki's worker "
            "needs it to replay concurrent branches exactly (pin trio to a tested version)"
        )
    with _LOCK:
        if _users == 0:
            _saved = (module._ALLOW_DETERMINISTIC_SCHEDULING, module._r)  # type: ignore[union-attr]
            module._ALLOW_DETERMINISTIC_SCHEDULING = True  # type: ignore[union-attr]
            module._r = _InCreationOrder()  # type: ignore[union-attr]
        _users += 1
    try:
        yield
    finally:
        with _LOCK:
            _users -= 1
            if _users == 0 and _saved is not None:
                module._ALLOW_DETERMINISTIC_SCHEDULING, module._r = _saved  # type: ignore[union-attr]
                _saved = None
