"""Pools: N identical actors under one supervisor, reached through one `Router`.

Routing:

- ``balancing`` (default): every member reads one shared mailbox, so the next message
  goes to whichever member is free first (Akka's BalancingPool). Use it for work where
  each message is a unit of work, like the worker's run actors.
- ``round_robin``: each member has its own mailbox; messages rotate across them.
- ``hash``: each member has its own mailbox; ``key(message)`` picks the member, so all
  messages with the same key go to the same member, in order.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Generic, Literal, TypeVar

import attrs

from ._mailbox import DEFAULT_CAPACITY, Address, Mailbox
from ._policy import LEAF_INTENSITY, Actor, Backoff, ChildSpec, RestartIntensity, RestartType
from ._supervisor import SupervisorMsg
from ._supervisor_handles import SupervisorRef, supervisor_spec

if TYPE_CHECKING:
    import random

M = TypeVar("M")

Routing = Literal["balancing", "round_robin", "hash"]


@attrs.frozen(eq=False)
class Router(Generic[M]):
    """Sends each message to one member of a pool. Use it wherever an `Address` would do."""

    name: str
    members: tuple[Address[M], ...]
    _choose: Callable[[M], int] = attrs.field(repr=False, alias="choose")

    async def send(self, message: M) -> None:
        """Deliver ``message`` to the member routing picks, waiting while its mailbox is full.

        Raises:
            ActorStoppedError: the pool stopped for good.

        Cancellation: either the message is in a mailbox, or it was not sent at all.
        """
        await self.members[self._choose(message)].send(message)

    def send_nowait(self, message: M) -> None:
        """Deliver ``message`` now if the chosen member has room.

        Raises:
            MailboxFullError: the chosen mailbox is full; nothing was sent.
            ActorStoppedError: the pool stopped for good.
        """
        self.members[self._choose(message)].send_nowait(message)


@attrs.frozen(eq=False)
class Pool(Generic[M]):
    """A pool ready to be started: put ``spec`` under a supervisor, send to ``router``."""

    spec: ChildSpec[SupervisorMsg]
    """The pool's own supervisor (one_for_one over the members)."""
    router: Router[M]
    mailboxes: tuple[Mailbox[M], ...]

    @property
    def supervisor(self) -> SupervisorRef:
        """Control of the pool's supervisor (statistics, adding or removing members)."""
        return SupervisorRef(self.spec.address)


def _hash_chooser(key: Callable[[M], Hashable], size: int) -> Callable[[M], int]:
    def choose(message: M) -> int:
        return hash(key(message)) % size

    return choose


def pool(
    name: str,
    factory: Callable[[], Actor[M]],
    *,
    size: int,
    routing: Routing = "balancing",
    key: Callable[[M], Hashable] | None = None,
    capacity: int = DEFAULT_CAPACITY,
    restart: RestartType = "permanent",
    intensity: RestartIntensity = LEAF_INTENSITY,
    backoff: Backoff | None = None,
    shutdown_grace_seconds: float = 10.0,
    rng: random.Random | None = None,
) -> Pool[M]:
    """Describe a pool of ``size`` actors built by ``factory``.

    Args:
        name: the pool's supervisor name; members are ``name[0]`` … ``name[size-1]``.
        routing: how messages are spread over members (see the module docstring).
        key: for ``hash`` routing, the function that names a message's partition.
        capacity: mailbox capacity: shared (``balancing``) or per member.
        restart: restart type of each member.

    Raises:
        ValueError: ``size`` < 1, or ``hash`` routing without ``key``.
    """
    if size < 1:
        raise ValueError(f"a pool needs at least one member, got size={size}")
    if (routing == "hash") != (key is not None):
        raise ValueError("key= is required with routing='hash', and only with it")
    if routing == "balancing":
        shared = Mailbox[M](name, capacity)
        mailboxes: tuple[Mailbox[M], ...] = (shared,)
        member_boxes = [shared] * size
        choose: Callable[[M], int] = lambda _message: 0  # noqa: E731
    else:
        mailboxes = tuple(Mailbox[M](f"{name}[{index}]", capacity) for index in range(size))
        member_boxes = list(mailboxes)
        if key is not None:
            choose = _hash_chooser(key, size)
        else:
            turn = itertools.cycle(range(size))
            choose = lambda _message: next(turn)  # noqa: E731
    members = [
        ChildSpec(
            name=f"{name}[{index}]",
            factory=factory,
            restart=restart,
            shutdown_grace_seconds=shutdown_grace_seconds,
            mailbox=box,
        )
        for index, box in enumerate(member_boxes)
    ]
    spec = supervisor_spec(
        name,
        members,
        strategy="one_for_one",
        intensity=intensity,
        backoff=backoff,
        shutdown_grace_seconds=shutdown_grace_seconds,
        rng=rng,
    )
    router = Router(name, tuple(box.address for box in mailboxes), choose=choose)
    return Pool(spec=spec, router=router, mailboxes=mailboxes)
