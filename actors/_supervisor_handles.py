"""Handles on supervisors: `SupervisorRef` (control through the mailbox), `open_supervisor`
(run a root supervisor for a block) and `supervisor_spec` (nest one under another)."""

from __future__ import annotations

import random
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, TypeVar

import attrs
import trio

from ._errors import ChildStartError, UnknownChildError
from ._mailbox import Address, Mailbox, ask
from ._policy import (
    LEAF_INTENSITY,
    ROOT_INTENSITY,
    Backoff,
    ChildSpec,
    RestartIntensity,
    RestartType,
    Startable,
    Strategy,
)
from ._supervisor import (
    ChildNotFound,
    ChildStarted,
    ChildStartFailed,
    ChildTerminated,
    GetStatistics,
    StartChild,
    Supervisor,
    SupervisorMsg,
    TerminateChild,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

    from ._stats import SupervisorStatistics

M = TypeVar("M")


@attrs.frozen
class SupervisorRef:
    """Controls a running supervisor through its mailbox. Put deadlines around the calls."""

    address: Address[SupervisorMsg]

    async def start_child(self, spec: ChildSpec[M]) -> Address[M]:
        """Add ``spec`` as a new child and wait until it reports ready.

        Returns:
            The child's address.

        Raises:
            DuplicateChildError: the supervisor already has a child of that name.
            ChildStartError: the child failed before it reported ready (the cause is attached).
            ActorStoppedError: the supervisor has stopped.
        """
        reply: ChildStarted | ChildStartFailed = await ask(
            self.address, lambda reply_to: StartChild(spec=spec, reply_to=reply_to)
        )
        if isinstance(reply, ChildStartFailed):
            raise reply.error
        return spec.address

    async def terminate_child(self, name: str) -> None:
        """Stop the child ``name`` gracefully and remove it from the supervisor.

        Raises:
            UnknownChildError: no such child.
            ActorStoppedError: the supervisor has stopped.
        """
        reply: ChildTerminated | ChildNotFound = await ask(
            self.address, lambda reply_to: TerminateChild(name=name, reply_to=reply_to)
        )
        if isinstance(reply, ChildNotFound):
            raise UnknownChildError(self.address.name, name)

    async def statistics(self) -> SupervisorStatistics:
        """Return a snapshot of the supervisor's subtree."""
        return await ask(self.address, lambda reply_to: GetStatistics(reply_to=reply_to))


def supervisor_spec(
    name: str,
    children: Sequence[Startable],
    *,
    strategy: Strategy = "one_for_one",
    intensity: RestartIntensity = LEAF_INTENSITY,
    backoff: Backoff | None = None,
    restart: RestartType = "permanent",
    shutdown_grace_seconds: float = 10.0,
    rng: random.Random | None = None,
) -> ChildSpec[SupervisorMsg]:
    """Describe a nested supervisor as a child of another supervisor.

    Its children's mailboxes are created once, here, so their addresses stay valid when
    the nested supervisor is restarted. Control it with ``SupervisorRef(spec.address)``.
    """
    children = tuple(children)

    def build() -> Supervisor:
        return Supervisor(
            name=name,
            children=children,
            strategy=strategy,
            intensity=intensity,
            backoff=backoff or Backoff(),
            shutdown_grace_seconds=shutdown_grace_seconds,
            rng=rng or random.Random(),
        )

    return ChildSpec(
        name=name, factory=build, restart=restart, shutdown_grace_seconds=shutdown_grace_seconds
    )


@attrs.frozen
class RunningSupervisor(SupervisorRef):
    """What `open_supervisor` yields: a `SupervisorRef` that can also read statistics directly."""

    supervisor: Supervisor

    def statistics_nowait(self) -> SupervisorStatistics:
        """Return a snapshot without going through the mailbox."""
        return self.supervisor.statistics()


@asynccontextmanager
async def open_supervisor(
    name: str,
    children: Sequence[Startable] = (),
    *,
    strategy: Strategy = "one_for_one",
    intensity: RestartIntensity = ROOT_INTENSITY,
    backoff: Backoff | None = None,
    shutdown_grace_seconds: float = 10.0,
    rng: random.Random | None = None,
) -> AsyncIterator[RunningSupervisor]:
    """Run a root supervisor for the duration of the block.

    ``children`` are started in order before the block is entered. When the block ends,
    the supervisor shuts down gracefully: children's mailboxes are closed in reverse start
    order and each may drain for its grace, with ``shutdown_grace_seconds`` as the backstop.
    If the block raises, or the supervisor escalates, every child is cancelled and the
    error propagates (as an ExceptionGroup from the supervisor's nursery).

    Raises:
        ChildStartError: an initial child failed before it reported ready.
        RestartIntensityExceeded: (in an ExceptionGroup) children crashed too often.
    """
    mailbox = Mailbox[SupervisorMsg](name)
    supervisor = Supervisor(
        name=name,
        children=tuple(children),
        strategy=strategy,
        intensity=intensity,
        backoff=backoff or Backoff(),
        shutdown_grace_seconds=shutdown_grace_seconds,
        rng=rng or random.Random(),
    )
    start_failure: ChildStartError | None = None
    async with trio.open_nursery() as nursery:
        try:
            await nursery.start(supervisor.run, mailbox.inbox)
        except ChildStartError as exc:
            start_failure = exc  # raised below, outside the nursery, as a plain error
        else:
            try:
                yield RunningSupervisor(mailbox.address, supervisor)
            finally:
                mailbox.close()
    if start_failure is not None:
        raise start_failure
