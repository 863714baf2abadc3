"""Mailboxes: bounded, typed queues that carry messages to one actor.

The supervisor keeps the mailbox for the actor's whole life, so messages already
buffered survive a restart. The actor reads ``inbox``; everyone else holds the
``address``. A full mailbox makes senders wait: that is backpressure, not an error.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Final, Generic, Protocol, TypeVar

import attrs
import trio

from ._errors import ActorStoppedError, MailboxFullError
from ._stats import MailboxStatistics

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

M = TypeVar("M")
M_contra = TypeVar("M_contra", contravariant=True)
R = TypeVar("R")

DEFAULT_CAPACITY: Final = 16
"""Small on purpose: a full mailbox is backpressure, not an error."""


class Destination(Protocol[M_contra]):
    """Anything messages can be sent to: an `Address` or a pool's `Router`."""

    @property
    def name(self) -> str:
        """Who receives the messages (for errors and logs)."""
        ...

    async def send(self, message: M_contra) -> None:
        """Deliver ``message``, waiting while the receiver is full."""
        ...

    def send_nowait(self, message: M_contra) -> None:
        """Deliver ``message`` now or raise `MailboxFullError`."""
        ...


@attrs.frozen(eq=False)
class Address(Generic[M]):
    """Where to send messages of type ``M``. Holding one does not keep the actor alive."""

    name: str
    _channel: trio.MemorySendChannel[M] = attrs.field(repr=False, alias="channel")
    _capacity: int = attrs.field(repr=False, alias="capacity")

    async def send(self, message: M) -> None:
        """Deliver ``message``, waiting while the mailbox is full.

        Raises:
            ActorStoppedError: the actor stopped for good and its mailbox was closed.

        Cancellation: either the message is in the mailbox, or it was not sent at all.
        """
        try:
            await self._channel.send(message)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise ActorStoppedError(self.name) from None

    def send_nowait(self, message: M) -> None:
        """Deliver ``message`` if there is room right now.

        Raises:
            MailboxFullError: the mailbox is full; nothing was sent.
            ActorStoppedError: the actor stopped for good and its mailbox was closed.
        """
        try:
            self._channel.send_nowait(message)
        except trio.WouldBlock:
            raise MailboxFullError(self.name, self._capacity) from None
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise ActorStoppedError(self.name) from None


@attrs.define(eq=False)
class Mailbox(Generic[M]):
    """Both ends of one actor's queue. Build as ``Mailbox[ExecutorMsg]("executor")``.

    Args:
        name: the actor's name, used in errors and statistics.
        capacity: how many messages may wait before senders block (at least 1).
    """

    name: str
    capacity: int = attrs.field(default=DEFAULT_CAPACITY, validator=attrs.validators.ge(1))
    address: Address[M] = attrs.field(init=False)
    inbox: trio.MemoryReceiveChannel[M] = attrs.field(init=False, repr=False)
    _send: trio.MemorySendChannel[M] = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        self._send, self.inbox = trio.open_memory_channel[M](self.capacity)
        self.address = Address(self.name, channel=self._send, capacity=self.capacity)

    def close(self) -> None:
        """Close the sending side: the actor drains what is buffered, then its loop ends.

        Idempotent. Later sends raise `ActorStoppedError`. Only the mailbox's owner
        (its supervisor) calls this, during graceful shutdown.
        """
        self._send.close()

    def statistics(self) -> MailboxStatistics:
        """Return a snapshot of the buffer depth and of who is waiting on it."""
        stats = self.inbox.statistics()
        return MailboxStatistics(
            name=self.name,
            capacity=self.capacity,
            depth=stats.current_buffer_used,
            senders_waiting=stats.tasks_waiting_send,
            receivers_waiting=stats.tasks_waiting_receive,
            closed=stats.open_send_channels == 0,
        )


async def ask(
    destination: Destination[M], make_request: Callable[[trio.MemorySendChannel[R]], M]
) -> R:
    """Send a request that carries a one-shot reply channel, and wait for the reply.

    There is deliberately no timeout parameter: wrap the call in
    ``with trio.fail_after(...)``. If the actor crashes before answering, that
    deadline is what ends the wait.

    Raises:
        ActorStoppedError: the actor stopped for good, before or without replying.

    Cancellation: the request may already be in the mailbox; its reply is dropped.
    """
    reply_to, reply = trio.open_memory_channel[R](1)
    with reply:
        await destination.send(make_request(reply_to))
        try:
            return await reply.receive()
        except trio.EndOfChannel:
            # The request was dropped unanswered, e.g. the actor's mailbox was discarded.
            raise ActorStoppedError(destination.name) from None


def answer(reply_to: trio.MemorySendChannel[R], value: R) -> None:
    """Reply once and close; a requester that already gave up is not an error."""
    with reply_to, contextlib.suppress(trio.BrokenResourceError):
        reply_to.send_nowait(value)  # BrokenResourceError: the asker's deadline expired first


async def messages_or_ticks(
    inbox: trio.MemoryReceiveChannel[M], interval_seconds: float
) -> AsyncIterator[M | None]:
    """Yield each message, or None when ``interval_seconds`` pass without one; end on close.

    For actors that also do periodic work: ``async for message in messages_or_ticks(inbox,
    5.0): ...`` runs the loop body at least every five seconds and ends when the mailbox is
    closed and drained.
    """
    while True:
        message: M | None = None
        with trio.move_on_after(interval_seconds):
            try:
                message = await inbox.receive()
            except trio.EndOfChannel:
                return
        yield message
