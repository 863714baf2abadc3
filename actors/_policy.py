"""Supervision vocabulary, after Erlang/OTP: actors, child specs, restart types and limits.

A `ChildSpec` says how to build an actor (a *factory*, so every restart starts
from fresh state), when to restart it, how long it may take to stop, and which
mailbox it reads. The mailbox lives in the spec, so its address is known before
the child starts and stays valid across restarts.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Final, Generic, Literal, Protocol, TypeVar

import attrs
import trio

from ._mailbox import DEFAULT_CAPACITY, Address, Mailbox

if TYPE_CHECKING:
    import random

    from ._stats import MailboxStatistics

M = TypeVar("M")
M_contra = TypeVar("M_contra", contravariant=True)

Strategy = Literal["one_for_one", "one_for_all", "rest_for_one"]
"""What else is restarted when a child crashes (OTP):

- ``one_for_one``: only that child;
- ``one_for_all``: every child (the others are stopped first, in reverse order);
- ``rest_for_one``: that child and every child started after it.
"""

RestartType = Literal["permanent", "transient", "temporary"]
"""When a child that ended is started again (OTP):

- ``permanent``: always, whether it crashed or returned;
- ``transient``: only if it crashed;
- ``temporary``: never; it is removed from the supervisor when it ends.
"""


class Actor(Protocol[M_contra]):
    """A trio task that reads its mailbox until the mailbox closes.

    ``run`` calls ``task_status.started()`` once it is ready to serve, then
    typically loops ``async for message in inbox``. It returns when the inbox is
    closed and drained (graceful shutdown) and raises to crash.
    """

    async def run(
        self,
        inbox: trio.MemoryReceiveChannel[M_contra],
        *,
        task_status: trio.TaskStatus[None] = ...,
    ) -> None:
        """Serve messages from ``inbox`` until it is closed."""
        ...


@attrs.frozen(kw_only=True)
class RestartIntensity:
    """At most ``max_restarts`` restarts within ``within_seconds``; one more escalates."""

    max_restarts: int = attrs.field(default=3, validator=attrs.validators.ge(0))
    within_seconds: float = attrs.field(default=5.0, validator=attrs.validators.gt(0))


LEAF_INTENSITY: Final = RestartIntensity(max_restarts=3, within_seconds=5.0)
"""Default for supervisors of leaf actors."""

ROOT_INTENSITY: Final = RestartIntensity(max_restarts=1, within_seconds=30.0)
"""Default for a process's root supervisor: limits multiply up the tree (OTP tuning advice)."""


@attrs.frozen(kw_only=True)
class Backoff:
    """Exponential, capped, jittered delay before a restart (as Akka's BackoffSupervisor).

    The n-th restart within the intensity window waits
    ``min(max_seconds, initial_seconds * multiplier ** (n - 1))``, scaled by a random
    factor in ``[1 - jitter, 1 + jitter]`` so that many crashing actors do not restart
    in lockstep.
    """

    initial_seconds: float = attrs.field(default=0.05, validator=attrs.validators.ge(0))
    max_seconds: float = attrs.field(default=5.0, validator=attrs.validators.ge(0))
    multiplier: float = attrs.field(default=2.0, validator=attrs.validators.ge(1))
    jitter: float = attrs.field(
        default=0.2, validator=[attrs.validators.ge(0), attrs.validators.le(1)]
    )

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Return the pause before restart number ``attempt`` (1-based) within the window."""
        base = min(self.max_seconds, self.initial_seconds * self.multiplier ** max(0, attempt - 1))
        return base * rng.uniform(1 - self.jitter, 1 + self.jitter)

    def delays(self, rng: random.Random) -> Iterator[float]:
        """The pauses before attempt 1, 2, 3, ... of a retry or reconnect loop (endless:
        once capped, every pause is about ``max_seconds``)."""
        for attempt in itertools.count(1):
            yield self.delay(attempt, rng)


class MailboxControl(Protocol):
    """What a supervisor needs of a mailbox, whatever its message type."""

    def close(self) -> None:
        """Close the sending side (graceful stop)."""
        ...

    def statistics(self) -> MailboxStatistics:
        """Return a snapshot of the mailbox."""
        ...


class ChildRunner(Protocol):
    """One incarnation of a child: a fresh actor bound to its inbox."""

    @property
    def actor(self) -> object:
        """The actor instance (for statistics)."""
        ...

    async def run(self, *, task_status: trio.TaskStatus[None]) -> None:
        """Run the actor until its inbox closes."""
        ...


class Startable(Protocol):
    """Anything a supervisor can start: a `ChildSpec` of any message type, or a pool's spec.

    The supervisor does not care what messages a child reads, so it works with this
    type-erased view.
    """

    @property
    def name(self) -> str:
        """The child's name, unique within its supervisor."""
        ...

    @property
    def restart(self) -> RestartType:
        """When the child is started again after it ends."""
        ...

    @property
    def shutdown_grace_seconds(self) -> float:
        """How long the child may take to drain and stop before it is cancelled."""
        ...

    @property
    def mailbox(self) -> MailboxControl:
        """The child's mailbox (owned by the supervisor once started)."""
        ...

    def incarnate(self) -> ChildRunner:
        """Build a fresh actor bound to the mailbox."""
        ...


@attrs.frozen(eq=False)
class _Bound(Generic[M]):
    actor: Actor[M]
    inbox: trio.MemoryReceiveChannel[M]

    async def run(self, *, task_status: trio.TaskStatus[None]) -> None:  # noqa: ASYNC128
        await self.actor.run(self.inbox, task_status=task_status)


def _default_mailbox(spec: ChildSpec[M]) -> Mailbox[M]:
    return Mailbox[M](spec.name, spec.capacity)


@attrs.frozen(kw_only=True, eq=False)
class ChildSpec(Generic[M]):
    """How a supervisor starts, restarts and stops one child.

    Args:
        name: unique within the supervisor; names the mailbox too.
        factory: builds a fresh actor; called again on every restart.
        restart: when the child is started again after it ends.
        shutdown_grace_seconds: on graceful shutdown, how long the child may take to
            drain its mailbox after it is closed before it is cancelled.
        capacity: mailbox capacity, if the spec creates the mailbox.
        mailbox: an existing mailbox to read (several pool members share one).
    """

    name: str
    factory: Callable[[], Actor[M]]
    restart: RestartType = "permanent"
    shutdown_grace_seconds: float = attrs.field(default=5.0, validator=attrs.validators.ge(0))
    capacity: int = DEFAULT_CAPACITY
    mailbox: Mailbox[M] = attrs.field(default=attrs.Factory(_default_mailbox, takes_self=True))

    @property
    def address(self) -> Address[M]:
        """Where to send this child messages; valid before it starts and across restarts."""
        return self.mailbox.address

    def incarnate(self) -> ChildRunner:
        """Build a fresh actor bound to this spec's mailbox."""
        return _Bound(self.factory(), self.mailbox.inbox)
