"""Mailboxes, addresses, ask/answer: backpressure, closing and caller-owned deadlines."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from actors import ActorStoppedError, Mailbox, MailboxFullError, answer, ask, messages_or_ticks


async def test_full_mailbox_makes_the_sender_wait_until_there_is_room(autojump_clock) -> None:
    """A send into a full mailbox blocks (backpressure) and completes once one message is read."""
    mailbox = Mailbox[int]("slow", capacity=2)
    await mailbox.address.send(1)
    await mailbox.address.send(2)
    sent = trio.Event()

    async def third_send() -> None:
        await mailbox.address.send(3)
        sent.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(third_send)
        await trio.testing.wait_all_tasks_blocked()
        stats = mailbox.statistics()
        assert (stats.depth, stats.senders_waiting) == (2, 1)
        assert not sent.is_set()
        assert await mailbox.inbox.receive() == 1
        await sent.wait()
    assert [mailbox.inbox.receive_nowait() for _ in range(2)] == [2, 3]


async def test_send_nowait_on_a_full_mailbox_raises_and_sends_nothing() -> None:
    """``send_nowait`` reports a full mailbox as MailboxFullError and leaves the buffer alone."""
    mailbox = Mailbox[str]("tiny", capacity=1)
    mailbox.address.send_nowait("a")
    with pytest.raises(MailboxFullError, match="'tiny' is full"):
        mailbox.address.send_nowait("b")
    assert mailbox.statistics().depth == 1
    assert mailbox.inbox.receive_nowait() == "a"


async def test_closed_mailbox_drains_buffered_messages_then_ends_and_rejects_sends() -> None:
    """After close, buffered messages are still delivered, then the loop ends; sends fail."""
    mailbox = Mailbox[int]("closing", capacity=4)
    for value in (1, 2, 3):
        await mailbox.address.send(value)
    mailbox.close()
    mailbox.close()  # idempotent
    with pytest.raises(ActorStoppedError, match="'closing' has stopped"):
        await mailbox.address.send(4)
    with pytest.raises(ActorStoppedError):
        mailbox.address.send_nowait(4)
    assert [value async for value in mailbox.inbox] == [1, 2, 3]
    assert mailbox.statistics().closed


def test_mailbox_capacity_must_be_positive() -> None:
    """An unbounded or zero-sized mailbox is refused at construction."""
    with pytest.raises(ValueError, match="capacity"):
        Mailbox[int]("bad", capacity=0)


async def test_ask_returns_the_answer() -> None:
    """``ask`` sends a request carrying a reply channel and returns what ``answer`` sent."""
    mailbox = Mailbox[tuple[int, trio.MemorySendChannel[int]]]("doubler")

    async def doubler() -> None:
        value, reply_to = await mailbox.inbox.receive()
        answer(reply_to, value * 2)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(doubler)
        with trio.fail_after(1):
            assert await ask(mailbox.address, lambda reply_to: (21, reply_to)) == 42


async def test_ask_is_bounded_by_the_callers_deadline_and_late_answers_are_harmless(
    autojump_clock,
) -> None:
    """An actor that never answers leaves the asker to its own deadline; answering later is fine."""
    mailbox = Mailbox[trio.MemorySendChannel[str]]("mute")
    with pytest.raises(trio.TooSlowError), trio.fail_after(5):
        await ask(mailbox.address, lambda reply_to: reply_to)
    late_reply_to = mailbox.inbox.receive_nowait()
    answer(late_reply_to, "too late")  # must not raise


async def test_ask_on_a_closed_mailbox_raises_actor_stopped() -> None:
    """Asking a stopped actor fails at once with ActorStoppedError."""
    mailbox = Mailbox[trio.MemorySendChannel[str]]("gone")
    mailbox.close()
    with pytest.raises(ActorStoppedError):
        await ask(mailbox.address, lambda reply_to: reply_to)


async def test_messages_or_ticks_yields_messages_ticks_and_ends_on_close(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Messages come through at once, a quiet interval yields None, a closed mailbox ends it."""
    mailbox = Mailbox[str]("ticker")
    seen: list[tuple[str | None, float]] = []
    start = trio.current_time()

    async def feed() -> None:
        await mailbox.address.send("a")
        await trio.sleep(2.5)
        await mailbox.address.send("b")
        mailbox.close()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(feed)
        async for message in messages_or_ticks(mailbox.inbox, 1.0):
            seen.append((message, round(trio.current_time() - start, 3)))
    assert seen == [("a", 0.0), (None, 1.0), (None, 2.0), ("b", 2.5)]
