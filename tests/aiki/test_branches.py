"""Handler branches on trio: their paths in the task tree, and the count of runnable
branches the execution reads quiescence from (exact however handlers come and go)."""

from __future__ import annotations

import trio
import trio.testing

from aiki.sdk._branches import Branches, current_branch, enter_root, tracking


async def test_branches_are_numbered_by_their_place_in_the_task_tree() -> None:
    """The root is (); the n-th task a branch spawns is its path plus (n,), whatever
    order trio runs them in."""
    branches = Branches()
    paths: list[tuple[int, ...]] = []

    async def leaf() -> None:
        await trio.lowlevel.checkpoint()
        paths.append(current_branch())

    async def middle() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(leaf)
            nursery.start_soon(leaf)
        paths.append(current_branch())

    async def root() -> None:
        enter_root(branches)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(leaf)
            nursery.start_soon(middle)
        paths.append(current_branch())

    with tracking(branches):
        await root()
    assert sorted(paths) == [(), (0,), (1,), (1, 0), (1, 1)]


async def test_the_runnable_count_stays_exact_when_another_handler_stops_being_counted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Handler B keeps its root busy while handler A, which spawned (so runnable
    branches are counted), ends at one moment or another: B's count is never thrown
    off, and reads zero once B's branches are all parked."""
    for moment in range(12):
        a, b = Branches(), Branches()
        a_may_end = trio.Event()
        b_parked = trio.Event()
        release = trio.Event()

        async def handler_a(a: Branches = a, a_may_end: trio.Event = a_may_end) -> None:
            with tracking(a):
                enter_root(a)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(a_may_end.wait)
                    await a_may_end.wait()

        async def handler_b(
            b: Branches = b, a_may_end: trio.Event = a_may_end, b_parked: trio.Event = b_parked,
            release: trio.Event = release, moment: int = moment,
        ) -> None:  # fmt: skip
            with tracking(b):
                enter_root(b)
                for round_ in range(30):  # runnable at every moment A might end
                    if round_ == moment:
                        a_may_end.set()
                    await trio.lowlevel.checkpoint()
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(release.wait)
                    b_parked.set()
                    await release.wait()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(handler_a)
            nursery.start_soon(handler_b)
            await b_parked.wait()
            await trio.testing.wait_all_tasks_blocked()
            assert b.spawned
            assert b.runnable == 0, f"every branch of B is parked (A ended at {moment})"
            release.set()


async def test_a_step_outside_the_handlers_tasks_is_refused_by_name() -> None:
    """A task the handler did not spawn (a task body's own, say) has no branch."""
    import pytest

    with pytest.raises(RuntimeError, match="outside its workflow handler's tasks"):
        current_branch()
