"""Supervisors: ordered start, restarts per strategy and restart type, intensity, backoff,
graceful reverse-order shutdown, statistics. All on trio's autojump clock (no I/O)."""

from __future__ import annotations

import random

import pytest
import trio
import trio.testing

from actors import (
    ActorStoppedError,
    Backoff,
    ChildStartError,
    DuplicateChildError,
    RestartIntensity,
    RestartIntensityExceeded,
    SupervisorRef,
    UnknownChildError,
    ask,
    open_supervisor,
    supervisor_spec,
)
from tests._deadline import deadline

from ._workers import Boom, Crash, Finish, Hold, Journal, Ping, Work, worker_spec

FAST = Backoff(initial_seconds=0.01, max_seconds=0.1, jitter=0.0)
LENIENT = RestartIntensity(max_restarts=10, within_seconds=1.0)


def _tasks_under(nursery: trio.Nursery) -> int:
    return sum(
        1 + sum(_tasks_under(child) for child in task.child_nurseries)
        for task in nursery.child_tasks
    )


@deadline(30)
async def test_children_start_in_order_each_only_after_the_previous_is_ready(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The second child is not even built until the first reported ready (nursery.start style)."""
    journal = Journal()
    specs = [worker_spec("a", journal, ready_delay=1.0), worker_spec("b", journal)]
    async with open_supervisor("root", specs, backoff=FAST):
        assert [(actor, event) for actor, event, _ in journal.entries] == [
            ("a", "start"),
            ("a", "ready"),
            ("b", "start"),
            ("b", "ready"),
        ]


@deadline(30)
async def test_start_child_returns_a_working_address_and_refuses_duplicates(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """start_child waits for ready and returns the address; a duplicate name fails."""
    journal = Journal()
    async with open_supervisor("root", backoff=FAST) as root:
        address = await root.start_child(worker_spec("w", journal))
        with trio.fail_after(1):
            assert await ask(address, lambda reply_to: Ping(reply_to)) == "w"
        with pytest.raises(DuplicateChildError, match="already has a child named 'w'"):
            await root.start_child(worker_spec("w", journal))
        assert [child.name for child in (await root.statistics()).children] == ["w"]


@deadline(30)
async def test_a_child_that_fails_before_ready_fails_supervisor_start_and_stops_earlier_ones(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """OTP: if an initial child cannot start, those already started are stopped; start fails."""
    journal = Journal()
    specs = [worker_spec("ok", journal), worker_spec("bad", journal, fail_start=True)]
    with pytest.raises(ChildStartError, match="could not start 'bad'") as caught:
        async with open_supervisor("root", specs, backoff=FAST):
            pytest.fail("the block must not run")
    assert isinstance(caught.value.__cause__, Boom)
    assert journal.events("ok", "exit"), "the child started first was stopped"


@deadline(30)
async def test_start_child_that_fails_before_ready_raises_and_is_not_kept(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A dynamically started child that crashes before ready is reported and not added."""
    journal = Journal()
    async with open_supervisor("root", backoff=FAST) as root:
        with pytest.raises(ChildStartError) as caught:
            await root.start_child(worker_spec("bad", journal, fail_start=True))
        assert isinstance(caught.value.__cause__, Boom)
        assert (await root.statistics()).children == ()


@deadline(30)
async def test_crashed_child_is_restarted_and_messages_already_in_its_mailbox_are_not_lost(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Messages queued behind the one that crashed the actor are handled by the next incarnation."""
    journal = Journal()
    spec = worker_spec("w", journal, capacity=8)
    async with open_supervisor("root", [spec], intensity=LENIENT, backoff=FAST) as root:
        release = trio.Event()
        await spec.address.send(Hold(release))
        await journal.wait_for(1, "hold")
        # While the actor is busy, queue a crash and then work behind it.
        await spec.address.send(Crash())
        for value in range(5):
            await spec.address.send(Work(value))
        assert spec.mailbox.statistics().depth == 6
        release.set()
        await journal.wait_for(5, "work")
        assert journal.values("work") == [0, 1, 2, 3, 4]
        assert len(journal.events("w", "start")) == 2
        child = (await root.statistics()).child("w")
        assert (child.state, child.restarts) == ("running", 1)
        assert child.last_error is not None
        assert "Boom" in child.last_error


@deadline(30)
async def test_restart_types_permanent_transient_temporary(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """permanent restarts after a normal return; transient only after a crash; temporary never."""
    journal = Journal()
    specs = [
        worker_spec("perm", journal, restart="permanent"),
        worker_spec("trans", journal, restart="transient"),
        worker_spec("temp", journal, restart="temporary"),
    ]
    async with open_supervisor("root", specs, intensity=LENIENT, backoff=FAST) as root:
        for spec in specs:
            await spec.address.send(Crash())
        await journal.wait_for(2, "ready", "perm")
        await journal.wait_for(2, "ready", "trans")
        await trio.testing.wait_all_tasks_blocked()
        assert len(journal.events("temp", "start")) == 1
        stats = await root.statistics()
        assert [child.name for child in stats.children] == ["perm", "trans"], "temporary removed"

        # A normal return: the permanent child comes back, the transient one stays stopped.
        await specs[0].address.send(Finish())
        await specs[1].address.send(Finish())
        await journal.wait_for(3, "ready", "perm")
        await journal.wait_for(1, "finish", "trans")
        await trio.testing.wait_all_tasks_blocked()
        stats = await root.statistics()
        assert stats.child("trans").state == "stopped"
        assert len(journal.events("trans", "start")) == 2


@deadline(30)
async def test_one_for_one_restarts_only_the_crashed_child(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Siblings keep running, untouched, when one child crashes under one_for_one."""
    journal = Journal()
    a, b, c = (worker_spec(name, journal) for name in "abc")
    async with open_supervisor("root", [a, b, c], intensity=LENIENT, backoff=FAST):
        await b.address.send(Crash())
        await journal.wait_for(2, "ready", "b")
        assert len(journal.events("a", "start")) == len(journal.events("c", "start")) == 1


@deadline(30)
async def test_one_for_all_restarts_every_sibling_after_stopping_them_in_reverse_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """one_for_all: a crash stops the others (last first), then restarts all in order."""
    journal = Journal()
    a, b, c = (worker_spec(name, journal) for name in "abc")
    async with open_supervisor(
        "root", [a, b, c], strategy="one_for_all", intensity=LENIENT, backoff=FAST
    ):
        await a.address.send(Crash())
        await journal.wait_for(2, "ready", "c")
        after_crash = [(actor, event) for actor, event, _ in journal.entries[6:]]
        assert after_crash == [
            ("a", "crash"),
            ("a", "exit"),
            ("c", "exit"),
            ("b", "exit"),
            ("a", "start"),
            ("a", "ready"),
            ("b", "start"),
            ("b", "ready"),
            ("c", "start"),
            ("c", "ready"),
        ]


@deadline(30)
async def test_rest_for_one_restarts_the_crashed_child_and_those_started_after_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Under rest_for_one, a crash of b restarts b and c but leaves a running."""
    journal = Journal()
    a, b, c = (worker_spec(name, journal) for name in "abc")
    async with open_supervisor(
        "root", [a, b, c], strategy="rest_for_one", intensity=LENIENT, backoff=FAST
    ):
        await b.address.send(Crash())
        await journal.wait_for(2, "ready", "c")
        assert len(journal.events("a", "start")) == 1
        assert len(journal.events("b", "start")) == 2


@deadline(30)
async def test_exceeding_restart_intensity_stops_all_children_and_escalates(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """More than max_restarts within the window: every child stops and the supervisor raises."""
    journal = Journal()
    crasher, bystander = worker_spec("crasher", journal), worker_spec("bystander", journal)
    intensity = RestartIntensity(max_restarts=2, within_seconds=10)
    with pytest.RaisesGroup(pytest.RaisesExc(RestartIntensityExceeded)) as caught:
        async with open_supervisor("root", [bystander, crasher], intensity=intensity, backoff=FAST):
            for _ in range(3):
                await crasher.address.send(Crash())
            await trio.sleep_forever()
    failure = caught.value.exceptions[0]
    assert isinstance(failure, RestartIntensityExceeded)
    assert (failure.supervisor, failure.child, failure.restarts) == ("root", "crasher", 3)
    assert isinstance(failure.__cause__, Boom)
    assert len(journal.events("crasher", "start")) == 3
    assert len(journal.events("bystander", "exit")) == 1, "siblings are stopped on escalation"


@deadline(60)
async def test_restarts_outside_the_window_do_not_accumulate(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Crashes spaced wider than within_seconds never reach the limit."""
    journal = Journal()
    spec = worker_spec("w", journal)
    intensity = RestartIntensity(max_restarts=1, within_seconds=1.0)
    async with open_supervisor("root", [spec], intensity=intensity, backoff=FAST) as root:
        for round_ in range(1, 5):
            await spec.address.send(Crash())
            await journal.wait_for(round_ + 1, "ready", "w")
            await trio.sleep(1.5)
        assert (await root.statistics()).child("w").restarts == 4


@deadline(60)
async def test_escalation_from_a_nested_supervisor_is_a_crash_its_parent_restarts(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A child supervisor that gives up is restarted by its parent, with the same addresses."""
    journal = Journal()
    leaf = worker_spec("leaf", journal)
    inner = supervisor_spec(
        "inner", [leaf], intensity=RestartIntensity(max_restarts=0, within_seconds=10), backoff=FAST
    )
    async with open_supervisor("root", [inner], intensity=LENIENT, backoff=FAST) as root:
        await leaf.address.send(Crash())
        await journal.wait_for(2, "ready", "leaf")
        stats = await root.statistics()
        assert stats.child("inner").restarts == 1
        assert "RestartIntensityExceeded" in (stats.child("inner").last_error or "")
        with trio.fail_after(1):  # the address minted before the restart still works
            assert await ask(leaf.address, lambda reply_to: Ping(reply_to)) == "leaf"
        nested = stats.child("inner").supervisor
        assert nested is not None
        assert nested.child("leaf").state == "running"


@deadline(60)
async def test_repeated_nested_escalation_reaches_the_root(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Limits multiply up the tree: when the root's own limit is exceeded, the root raises too."""
    journal = Journal()
    leaf = worker_spec("leaf", journal, capacity=8)
    inner = supervisor_spec(
        "inner", [leaf], intensity=RestartIntensity(max_restarts=0, within_seconds=10), backoff=FAST
    )
    with pytest.RaisesGroup(pytest.RaisesExc(RestartIntensityExceeded)) as caught:
        async with open_supervisor(
            "root",
            [inner],
            intensity=RestartIntensity(max_restarts=1, within_seconds=10),
            backoff=FAST,
        ):
            for _ in range(2):
                await leaf.address.send(Crash())
            await trio.sleep_forever()
    root_failure = caught.value.exceptions[0]
    assert isinstance(root_failure, RestartIntensityExceeded)
    assert (root_failure.supervisor, root_failure.child) == ("root", "inner")
    assert isinstance(root_failure.__cause__, RestartIntensityExceeded)
    assert root_failure.__cause__.supervisor == "inner"


@deadline(60)
async def test_backoff_grows_exponentially_with_jitter_within_bounds(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Each restart in the window waits longer: initial * 2**(n-1), scaled within ±jitter."""
    journal = Journal()
    spec = worker_spec("w", journal, capacity=8)
    backoff = Backoff(initial_seconds=1.0, max_seconds=3.0, multiplier=2.0, jitter=0.2)
    crash_times: list[float] = []
    ready_times: list[float] = []
    async with open_supervisor(
        "root",
        [spec],
        intensity=RestartIntensity(max_restarts=10, within_seconds=100),
        backoff=backoff,
        rng=random.Random(7),
    ):
        for restart in range(1, 5):
            crash_times.append(trio.current_time())
            await spec.address.send(Crash())
            await journal.wait_for(restart + 1, "ready", "w")
            ready_times.append(trio.current_time())
    delays = [ready - crash for crash, ready in zip(crash_times, ready_times, strict=True)]
    for delay, base in zip(delays, [1.0, 2.0, 3.0, 3.0], strict=True):  # capped at 3
        assert base * 0.8 <= delay <= base * 1.2
    assert len({round(delay, 6) for delay in delays}) == 4, "jitter makes each delay different"


@deadline(60)
async def test_graceful_shutdown_stops_children_in_reverse_order_after_draining(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Leaving the block closes mailboxes last-started first; each drains its buffer, then exits."""
    journal = Journal()
    a, b, c = (worker_spec(name, journal, capacity=8) for name in "abc")
    async with open_supervisor("root", [a, b, c]):
        for spec in (a, b, c):
            for value in range(3):
                await spec.address.send(Work(value))
    exits = [actor for actor, event, _ in journal.entries if event == "exit"]
    assert exits == ["c", "b", "a"]
    for name in "abc":
        assert journal.values("work", name) == [0, 1, 2]
        assert journal.events(name, "drained")
    with pytest.raises(ActorStoppedError):
        await a.address.send(Work(99))


@deadline(60)
async def test_a_child_that_does_not_stop_is_cancelled_after_its_grace(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A child busy past its shutdown grace is cancelled; shutdown is not held up longer."""
    journal = Journal()
    stuck = worker_spec("stuck", journal, shutdown_grace_seconds=2.0)
    started = trio.current_time()
    async with open_supervisor("root", [stuck]):
        await stuck.address.send(Hold(trio.Event()))  # never released
        await journal.wait_for(1, "hold")
    elapsed = trio.current_time() - started
    assert 2.0 <= elapsed < 2.5
    assert journal.events("stuck", "exit")
    assert not journal.events("stuck", "drained")


@deadline(60)
async def test_supervisor_backstop_cancels_whatever_outlives_the_overall_grace(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The supervisor-wide shutdown_grace_seconds bounds the whole shutdown."""
    journal = Journal()
    stuck = worker_spec("stuck", journal, shutdown_grace_seconds=100.0)
    started = trio.current_time()
    async with open_supervisor("root", [stuck], shutdown_grace_seconds=3.0):
        await stuck.address.send(Hold(trio.Event()))
        await journal.wait_for(1, "hold")
    assert 3.0 <= trio.current_time() - started < 3.5
    assert journal.events("stuck", "exit")


@deadline(60)
async def test_shutdown_leaves_no_task_behind(autojump_clock: trio.testing.MockClock) -> None:
    """After the supervisor block, not one task of the tree (children, pools, handlers) remains."""
    journal = Journal()
    inner = supervisor_spec("inner", [worker_spec("x", journal), worker_spec("y", journal)])
    async with trio.open_nursery() as outer:
        before = _tasks_under(outer)
        async with open_supervisor("root", [worker_spec("a", journal), inner]) as root:
            await root.start_child(worker_spec("dynamic", journal))
            assert _tasks_under(outer) == before  # the supervisor's tasks live in its own nursery
        assert _tasks_under(outer) == before
    assert sorted(actor for actor, event, _ in journal.entries if event == "exit") == [
        "a",
        "dynamic",
        "x",
        "y",
    ]
    task = trio.lowlevel.current_task()
    assert all(not nursery.child_tasks for nursery in task.child_nurseries)


@deadline(30)
async def test_terminate_child_stops_it_gracefully_and_removes_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """terminate_child drains and stops one child; unknown names are an error."""
    journal = Journal()
    a, b = worker_spec("a", journal), worker_spec("b", journal)
    async with open_supervisor("root", [a, b]) as root:
        await b.address.send(Work(1))
        await root.terminate_child("b")
        assert journal.values("work", "b") == [1]
        assert [child.name for child in (await root.statistics()).children] == ["a"]
        with pytest.raises(UnknownChildError, match="no child named 'nope'"):
            await root.terminate_child("nope")


@deadline(30)
async def test_statistics_report_mailbox_depth_states_and_nested_trees(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Statistics show buffered messages, child states and a nested supervisor's own children."""
    journal = Journal()
    busy = worker_spec("busy", journal, capacity=4)
    inner = supervisor_spec("inner", [worker_spec("leaf", journal)])
    async with open_supervisor("root", [busy, inner]) as root:
        release = trio.Event()
        await busy.address.send(Hold(release))
        await journal.wait_for(1, "hold")
        await busy.address.send(Work(1))
        await busy.address.send(Work(2))
        stats = root.statistics_nowait()
        assert stats.name == "root"
        assert stats.strategy == "one_for_one"
        assert stats.child("busy").mailbox.depth == 2
        assert stats.child("busy").state == "running"
        nested = stats.child("inner").supervisor
        assert nested is not None
        assert [c.name for c in nested.children] == ["leaf"]
        assert stats == await root.statistics()
        nested_ref = SupervisorRef(inner.address)
        assert (await nested_ref.statistics()).child("leaf").state == "running"
        release.set()
