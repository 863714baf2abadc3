"""Pools of identical actors: balancing, round-robin and hash routing; member restarts."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from actors import RestartIntensity, open_supervisor, pool
from tests._deadline import deadline

from ._workers import Crash, Hold, Journal, Msg, Work, Worker

LENIENT = RestartIntensity(max_restarts=10, within_seconds=1.0)


def _member_factory(journal: Journal, names: list[str]) -> Worker:
    """Each built worker gets the next member name, so the journal tells members apart."""
    return Worker(names.pop(0), journal)


@deadline(30)
async def test_balancing_pool_hands_work_to_whichever_member_is_free(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """With two members busy, the third message goes to the one idle member."""
    journal = Journal()
    names = ["m0", "m1", "m2"]
    workers = pool("runs", lambda: _member_factory(journal, names), size=3)
    async with open_supervisor("root", [workers.spec]):
        first, second = trio.Event(), trio.Event()
        await workers.router.send(Hold(first))
        await workers.router.send(Hold(second))
        await journal.wait_for(2, "hold")
        busy = {actor for actor, _, _ in journal.events(event="hold")}
        await workers.router.send(Work(7))
        await journal.wait_for(1, "work")
        [(idle, _, _)] = journal.events(event="work")
        assert idle not in busy
        assert len(busy) == 2
        first.set()
        second.set()


@deadline(30)
async def test_balancing_pool_runs_members_concurrently(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """N members holding N messages at once proves they run in parallel, not one at a time."""
    journal = Journal()
    names = [f"m{i}" for i in range(4)]
    workers = pool("runs", lambda: _member_factory(journal, names), size=4)
    release = trio.Event()
    async with open_supervisor("root", [workers.spec]):
        for _ in range(4):
            await workers.router.send(Hold(release))
        await journal.wait_for(4, "hold")
        assert {actor for actor, _, _ in journal.events(event="hold")} == {"m0", "m1", "m2", "m3"}
        release.set()


@deadline(30)
async def test_round_robin_rotates_over_members(autojump_clock: trio.testing.MockClock) -> None:
    """round_robin sends message i to member i mod size."""
    journal = Journal()
    names = ["m0", "m1", "m2"]
    workers = pool("rr", lambda: _member_factory(journal, names), size=3, routing="round_robin")
    async with open_supervisor("root", [workers.spec]):
        for value in range(6):
            await workers.router.send(Work(value))
        await journal.wait_for(6, "work")
    assert sorted(journal.values("work", "m0")) == [0, 3]
    assert sorted(journal.values("work", "m1")) == [1, 4]
    assert sorted(journal.values("work", "m2")) == [2, 5]


@deadline(30)
async def test_hash_routing_keeps_one_key_on_one_member_in_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Messages with the same key reach the same member, in the order they were sent."""
    journal = Journal()
    names = ["m0", "m1", "m2", "m3"]

    def key(message: Msg) -> int:
        return message.value // 100 if isinstance(message, Work) else 0

    workers = pool("h", lambda: _member_factory(journal, names), size=4, routing="hash", key=key)
    async with open_supervisor("root", [workers.spec]):
        values = [key * 100 + seq for seq in range(5) for key in range(8)]
        for value in values:
            await workers.router.send(Work(value))
        await journal.wait_for(len(values), "work")
    for key_value in range(8):
        members = {actor for actor, _, v in journal.events(event="work") if v // 100 == key_value}
        assert len(members) == 1
        (member,) = members
        seen = [v for v in journal.values("work", member) if v // 100 == key_value]
        assert seen == [key_value * 100 + seq for seq in range(5)]


@deadline(30)
async def test_a_crashing_member_is_restarted_and_the_pool_loses_no_queued_work(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A member crash restarts only that member; work queued in the shared mailbox is all done."""
    journal = Journal()
    workers = pool("p", lambda: Worker("member", journal), size=2, intensity=LENIENT)
    async with open_supervisor("root", [workers.spec]):
        await workers.router.send(Crash())
        for value in range(10):
            await workers.router.send(Work(value))
        await journal.wait_for(10, "work")
        await journal.wait_for(3, "ready")  # two members at start, one restart
        stats = await workers.supervisor.statistics()
        assert sum(member.restarts for member in stats.children) == 1
    assert sorted(journal.values("work")) == list(range(10))


def test_pool_arguments_are_validated() -> None:
    """A pool needs a positive size, and a key exactly when routing by hash."""
    with pytest.raises(ValueError, match="at least one member"):
        pool("p", lambda: Worker("w", Journal()), size=0)
    with pytest.raises(ValueError, match="key= is required"):
        pool("p", lambda: Worker("w", Journal()), size=2, routing="hash")
    with pytest.raises(ValueError, match="key= is required"):
        pool("p", lambda: Worker("w", Journal()), size=2, key=lambda message: 1)
