"""Supervisors: actors that start children in order, restart them when they crash, and stop
them in reverse order.

The semantics are Erlang/OTP's: strategies ``one_for_one``, ``one_for_all`` and
``rest_for_one``; restart types ``permanent``, ``transient`` and ``temporary``; a restart
intensity that, when exceeded, stops every child and escalates to the parent by raising
`RestartIntensityExceeded`. Restarts wait a jittered, capped backoff. A child counts as
started only once it calls ``task_status.started()`` (trio's ``nursery.start``).

A supervisor is itself an actor: its mailbox takes `StartChild`, `TerminateChild` and
`GetStatistics`, so supervisors nest, and closing its mailbox shuts it down gracefully.
Handles on it (`SupervisorRef`, `open_supervisor`, `supervisor_spec`) are in
`actors._supervisor_handles`.
"""

from __future__ import annotations

import logging
import random
from collections import deque
from collections.abc import Sequence
from typing import TypeVar, assert_never

import attrs
import trio

from ._errors import (
    ActorError,
    ChildStartError,
    DuplicateChildError,
    RestartIntensityExceeded,
)
from ._mailbox import answer
from ._policy import (
    LEAF_INTENSITY,
    Backoff,
    MailboxControl,
    RestartIntensity,
    RestartType,
    Startable,
    Strategy,
)
from ._stats import ChildState, ChildStatistics, SupervisorStatistics

M = TypeVar("M")

logger = logging.getLogger(__name__)


# -- the supervisor's protocol ---------------------------------------------------------------


@attrs.frozen(kw_only=True)
class ChildStarted:
    """Reply: the child is running and ready."""

    name: str


@attrs.frozen(kw_only=True)
class ChildStartFailed:
    """Reply: the child was not started (duplicate name, or it failed before ready)."""

    name: str
    error: ActorError = attrs.field(eq=False)


@attrs.frozen(kw_only=True)
class StartChild:
    """Add a child and start it; the reply comes once it is ready or has failed."""

    spec: Startable = attrs.field(eq=False)
    reply_to: trio.MemorySendChannel[ChildStarted | ChildStartFailed] = attrs.field(
        eq=False, repr=False
    )


@attrs.frozen(kw_only=True)
class ChildTerminated:
    """Reply: the child was stopped gracefully and removed."""

    name: str


@attrs.frozen(kw_only=True)
class ChildNotFound:
    """Reply: there is no child with that name."""

    name: str


@attrs.frozen(kw_only=True)
class TerminateChild:
    """Stop a child gracefully (close its mailbox, wait its grace) and remove it."""

    name: str
    reply_to: trio.MemorySendChannel[ChildTerminated | ChildNotFound] = attrs.field(
        eq=False, repr=False
    )


@attrs.frozen(kw_only=True)
class GetStatistics:
    """Ask for a `SupervisorStatistics` snapshot of the whole subtree."""

    reply_to: trio.MemorySendChannel[SupervisorStatistics] = attrs.field(eq=False, repr=False)


SupervisorMsg = StartChild | TerminateChild | GetStatistics


# -- children --------------------------------------------------------------------------------


@attrs.frozen
class _Exit:
    """How one incarnation of a child ended."""

    error: Exception | None
    """The crash, or None for a normal return."""


@attrs.define(eq=False)
class _Child:
    spec: Startable
    state: ChildState = "starting"
    generation: int = 0
    restarts: int = 0
    scope: trio.CancelScope | None = None
    exited: trio.Event = attrs.Factory(trio.Event)
    actor: object = None
    last_error: Exception | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def mailbox(self) -> MailboxControl:
        return self.spec.mailbox

    @property
    def alive(self) -> bool:
        return self.scope is not None and not self.exited.is_set()


class _Readiness:
    """Forwards ``started()`` to the real task status and remembers that it happened."""

    def __init__(self, task_status: trio.TaskStatus[_Exit | None]) -> None:
        self._task_status = task_status
        self.ready = False

    def started(self, value: None = None) -> None:
        self.ready = True
        self._task_status.started(None)


def _should_restart(restart: RestartType, error: Exception | None) -> bool:
    match restart:
        case "permanent":
            return True
        case "transient":
            return error is not None
        case "temporary":
            return False
        case _:
            assert_never(restart)


@attrs.define(eq=False)
class Supervisor:
    """An actor that supervises children with OTP semantics.

    Args:
        name: for logs, errors and statistics.
        children: started in order when the supervisor starts; each must report ready
            before the next starts. If one fails to start, the ones already started are
            stopped and ``run`` raises `ChildStartError`.
        strategy: what else is restarted when a child crashes.
        intensity: restart limit; exceeding it stops all children and raises
            `RestartIntensityExceeded` from ``run``.
        backoff: pause before each restart.
        shutdown_grace_seconds: backstop for a graceful shutdown of the whole subtree;
            anything still running after it is cancelled.
        rng: randomness for the backoff jitter (seed it in tests).
    """

    name: str
    children: Sequence[Startable] = ()
    strategy: Strategy = "one_for_one"
    intensity: RestartIntensity = LEAF_INTENSITY
    backoff: Backoff = attrs.Factory(Backoff)
    shutdown_grace_seconds: float = 10.0
    rng: random.Random = attrs.field(factory=random.Random, repr=False)

    _children: list[_Child] = attrs.field(init=False, factory=list)
    _recent: deque[float] = attrs.field(init=False, factory=deque)
    _exits: deque[tuple[_Child, int, _Exit]] = attrs.field(init=False, factory=deque)
    _exit_lot: trio.lowlevel.ParkingLot = attrs.field(init=False, factory=trio.lowlevel.ParkingLot)
    _lock: trio.Lock = attrs.field(init=False, factory=trio.Lock)
    _nursery: trio.Nursery | None = attrs.field(init=False, default=None)
    _failure: ActorError | None = attrs.field(init=False, default=None)
    _handler_scope: trio.CancelScope = attrs.field(init=False, factory=trio.CancelScope)

    async def run(
        self,
        inbox: trio.MemoryReceiveChannel[SupervisorMsg],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Start the children, then serve control messages until ``inbox`` closes.

        Raises:
            ChildStartError: an initial child failed before it reported ready.
            RestartIntensityExceeded: children crashed more often than allowed.

        Cancellation: every child is cancelled with the supervisor; mailboxes stay
            open, so a restarted supervisor serves the same addresses.
        """
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            if await self._start_initial():
                nursery.start_soon(self._handle_exits, name=f"{self.name}: exits")
                logger.info(
                    "supervisor %s started %d children",
                    self.name,
                    len(self._children),
                    extra={"actor": self.name},
                )
                task_status.started()
                async for message in inbox:
                    await self._serve(message)
                with trio.move_on_after(self.shutdown_grace_seconds) as backstop:
                    await self._shutdown()
                if backstop.cancelled_caught:
                    logger.warning(
                        "supervisor %s: shutdown grace expired; cancelling the rest",
                        self.name,
                        extra={"actor": self.name},
                    )
            nursery.cancel_scope.cancel()
        if self._failure is not None:
            raise self._failure
        logger.info("supervisor %s stopped", self.name, extra={"actor": self.name})

    def statistics(self) -> SupervisorStatistics:
        """Return a snapshot of this supervisor and, recursively, of child supervisors."""
        self._forget_old_restarts(trio.current_time())
        return SupervisorStatistics(
            name=self.name,
            strategy=self.strategy,
            restarts_in_window=len(self._recent),
            max_restarts=self.intensity.max_restarts,
            within_seconds=self.intensity.within_seconds,
            children=tuple(self._child_statistics(child) for child in self._children),
        )

    # -- starting --------------------------------------------------------------------------

    async def _start_initial(self) -> bool:
        for spec in self.children:
            if any(child.name == spec.name for child in self._children):
                self._failure = DuplicateChildError(self.name, spec.name)
            else:
                child = _Child(spec)
                self._children.append(child)
                exit_ = await self._start(child)
                if exit_ is not None:
                    self._failure = self._start_error(child, exit_)
            if self._failure is not None:
                for started in reversed(self._children):
                    await self._stop(started, graceful=False)
                return False
        return True

    async def _start(self, child: _Child) -> _Exit | None:
        """Start one incarnation; return None once it is ready, or how it ended before."""
        assert self._nursery is not None
        child.generation += 1
        child.state = "starting"
        failed: _Exit | None = await self._nursery.start(
            self._incarnate, child, child.generation, name=f"{self.name}/{child.name}"
        )
        if failed is None:
            child.state = "running"
        else:
            child.last_error = failed.error
        return failed

    async def _incarnate(
        self, child: _Child, generation: int, *, task_status: trio.TaskStatus[_Exit | None]
    ) -> None:
        scope = trio.CancelScope()
        exited = trio.Event()
        child.scope, child.exited = scope, exited
        readiness = _Readiness(task_status)
        error: Exception | None = None
        try:
            with scope:
                runner = child.spec.incarnate()
                child.actor = runner.actor
                await runner.run(task_status=readiness)
        except Exception as exc:  # a crash; Cancelled and other BaseExceptions pass through
            error = exc
        finally:
            exited.set()
        if not readiness.ready:
            task_status.started(_Exit(error))
        else:
            self._exits.append((child, generation, _Exit(error)))
            self._exit_lot.unpark_all()

    def _start_error(self, child: _Child, exit_: _Exit) -> ChildStartError:
        reason = "returned before it reported ready" if exit_.error is None else repr(exit_.error)
        error = ChildStartError(self.name, child.name, reason)
        error.__cause__ = exit_.error
        return error

    # -- reacting to exits -------------------------------------------------------------------

    async def _handle_exits(self) -> None:
        with self._handler_scope:
            while True:
                while not self._exits:
                    await self._exit_lot.park()
                child, generation, exit_ = self._exits.popleft()
                async with self._lock:
                    await self._on_exit(child, generation, exit_)

    async def _on_exit(self, child: _Child, generation: int, exit_: _Exit) -> None:
        if child.generation != generation or child not in self._children:
            return  # stale: we stopped or replaced this incarnation ourselves
        child.last_error = exit_.error
        if not _should_restart(child.spec.restart, exit_.error):
            self._retire(child, exit_)
            return
        now = trio.current_time()
        self._recent.append(now)
        self._forget_old_restarts(now)
        if len(self._recent) > self.intensity.max_restarts:
            await self._escalate(child, exit_)
            return
        group = self._restart_group(child)
        for sibling in reversed(group):
            if sibling is not child:
                await self._stop(sibling, graceful=False)
        for member in group:
            member.state = "restarting"
        delay = self.backoff.delay(len(self._recent), self.rng)
        logger.warning(
            "supervisor %s: %s %s; restarting %s in %.3f s (%d of %d within %g s)",
            self.name,
            child.name,
            f"crashed ({exit_.error!r})" if exit_.error else "returned",
            ", ".join(member.name for member in group),
            delay,
            len(self._recent),
            self.intensity.max_restarts,
            self.intensity.within_seconds,
            exc_info=exit_.error,
            extra={"actor": self.name, "child": child.name},
        )
        await trio.sleep(delay)
        for member in group:
            member.restarts += 1
            failed = await self._start(member)
            if failed is not None:
                # A failed restart is another crash of that child; the strategy applies again.
                self._exits.append((member, member.generation, failed))
                break

    def _retire(self, child: _Child, exit_: _Exit) -> None:
        if child.spec.restart == "temporary":
            self._children.remove(child)
        child.state = "stopped"
        if exit_.error is not None:
            logger.warning(
                "supervisor %s: %s (temporary) crashed; not restarted",
                self.name,
                child.name,
                exc_info=exit_.error,
                extra={"actor": self.name, "child": child.name},
            )
        else:
            logger.info(
                "supervisor %s: %s ended",
                self.name,
                child.name,
                extra={"actor": self.name, "child": child.name},
            )

    def _restart_group(self, child: _Child) -> list[_Child]:
        match self.strategy:
            case "one_for_one":
                return [child]
            case "one_for_all":
                return list(self._children)
            case "rest_for_one":
                return self._children[self._children.index(child) :]
            case _:
                assert_never(self.strategy)

    def _forget_old_restarts(self, now: float) -> None:
        while self._recent and now - self._recent[0] > self.intensity.within_seconds:
            self._recent.popleft()

    async def _escalate(self, child: _Child, exit_: _Exit) -> None:
        failure = RestartIntensityExceeded(
            self.name, child.name, len(self._recent), self.intensity.within_seconds
        )
        failure.__cause__ = exit_.error
        logger.error("%s", failure, exc_info=exit_.error, extra={"actor": self.name})
        for other in reversed(self._children):
            await self._stop(other, graceful=False)
        self._failure = failure
        assert self._nursery is not None
        self._nursery.cancel_scope.cancel()

    # -- stopping ----------------------------------------------------------------------------

    async def _stop(self, child: _Child, *, graceful: bool) -> None:
        """Stop the current incarnation: drain-and-return if graceful, then cancel."""
        if not child.alive:
            child.state = "stopped"
            return
        assert child.scope is not None
        child.state = "stopping"
        if graceful:
            child.mailbox.close()
            with trio.move_on_after(child.spec.shutdown_grace_seconds):
                await child.exited.wait()
        child.scope.cancel()
        await child.exited.wait()
        child.generation += 1  # whatever that incarnation reported is now stale
        child.state = "stopped"

    async def _shutdown(self) -> None:
        logger.info("supervisor %s shutting down", self.name, extra={"actor": self.name})
        # No restarts from here on; a pending backoff or restart is abandoned.
        self._handler_scope.cancel()
        async with self._lock:
            for child in reversed(self._children):
                await self._stop(child, graceful=True)

    # -- control messages --------------------------------------------------------------------

    async def _serve(self, message: SupervisorMsg) -> None:
        match message:
            case StartChild(spec=spec, reply_to=reply_to):
                async with self._lock:
                    answer(reply_to, await self._add(spec))
            case TerminateChild(name=name, reply_to=reply_to):
                async with self._lock:
                    answer(reply_to, await self._terminate(name))
            case GetStatistics(reply_to=reply_to):
                answer(reply_to, self.statistics())
            case _:
                assert_never(message)

    async def _add(self, spec: Startable) -> ChildStarted | ChildStartFailed:
        if any(child.name == spec.name for child in self._children):
            return ChildStartFailed(name=spec.name, error=DuplicateChildError(self.name, spec.name))
        child = _Child(spec)
        self._children.append(child)
        failed = await self._start(child)
        if failed is not None:
            self._children.remove(child)
            return ChildStartFailed(name=spec.name, error=self._start_error(child, failed))
        return ChildStarted(name=spec.name)

    async def _terminate(self, name: str) -> ChildTerminated | ChildNotFound:
        for child in self._children:
            if child.name == name:
                await self._stop(child, graceful=True)
                self._children.remove(child)
                return ChildTerminated(name=name)
        return ChildNotFound(name=name)

    def _child_statistics(self, child: _Child) -> ChildStatistics:
        nested = child.actor.statistics() if isinstance(child.actor, Supervisor) else None
        return ChildStatistics(
            name=child.name,
            state=child.state,
            restart=child.spec.restart,
            restarts=child.restarts,
            mailbox=child.mailbox.statistics(),
            last_error=None if child.last_error is None else repr(child.last_error),
            supervisor=nested,
        )
