"""Small actors used by the actor-runtime tests, and a journal they write to.

The journal is shared across incarnations (the factory closes over it), so a test can
see every start, message, crash and stop in order, and wait for an entry to appear.
"""

from __future__ import annotations

from typing import assert_never

import attrs
import trio

from actors import ChildSpec, answer


class Boom(Exception):
    """The crash our test actors raise on request."""


@attrs.frozen
class Work:
    value: int


@attrs.frozen
class Crash:
    pass


@attrs.frozen
class Finish:
    """Return from ``run`` normally (an exit that is not a crash)."""


@attrs.frozen
class Hold:
    """Block the actor until ``release`` is set (keeps it busy)."""

    release: trio.Event = attrs.field(eq=False)


@attrs.frozen
class Ping:
    reply_to: trio.MemorySendChannel[str] = attrs.field(eq=False, repr=False)


Msg = Work | Crash | Finish | Hold | Ping


@attrs.define(eq=False)
class Journal:
    """Ordered record of (actor, event, detail) with event-driven waiting."""

    entries: list[tuple[str, str, object]] = attrs.field(factory=list)
    _changed: trio.Event = attrs.field(factory=trio.Event)

    def add(self, actor: str, event: str, detail: object = None) -> None:
        self.entries.append((actor, event, detail))
        self._changed.set()
        self._changed = trio.Event()

    def events(
        self, actor: str | None = None, event: str | None = None
    ) -> list[tuple[str, str, object]]:
        return [
            entry
            for entry in self.entries
            if (actor is None or entry[0] == actor) and (event is None or entry[1] == event)
        ]

    def values(self, event: str = "work", actor: str | None = None) -> list[object]:
        return [detail for _, _, detail in self.events(actor, event)]

    async def wait_for(self, count: int, event: str, actor: str | None = None) -> None:
        """Wait until at least ``count`` entries match (callers put a deadline around it)."""
        while len(self.events(actor, event)) < count:
            await self._changed.wait()


@attrs.define(eq=False)
class Worker:
    """Records what it does; crashes on `Crash`; blocks on `Hold`; answers `Ping`."""

    name: str
    journal: Journal
    ready_delay: float = 0.0
    fail_start: bool = False

    async def run(
        self,
        inbox: trio.MemoryReceiveChannel[Msg],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        self.journal.add(self.name, "start")
        try:
            if self.ready_delay:
                await trio.sleep(self.ready_delay)
            if self.fail_start:
                raise Boom(f"{self.name} cannot start")
            task_status.started()
            self.journal.add(self.name, "ready")
            async for message in inbox:
                match message:
                    case Work(value=value):
                        self.journal.add(self.name, "work", value)
                        await trio.lowlevel.checkpoint()
                    case Crash():
                        self.journal.add(self.name, "crash")
                        raise Boom(self.name)
                    case Finish():
                        self.journal.add(self.name, "finish")
                        return
                    case Hold(release=release):
                        self.journal.add(self.name, "hold")
                        await release.wait()
                    case Ping(reply_to=reply_to):
                        answer(reply_to, self.name)
                    case _:
                        assert_never(message)
            self.journal.add(self.name, "drained")
        finally:
            self.journal.add(self.name, "exit")


def worker_spec(name: str, journal: Journal, **kwargs: object) -> ChildSpec[Msg]:
    """A `ChildSpec` for a `Worker`; ``kwargs`` split between the spec and the worker."""
    spec_fields = {"restart", "shutdown_grace_seconds", "capacity", "mailbox"}
    spec_kwargs = {key: value for key, value in kwargs.items() if key in spec_fields}
    worker_kwargs = {key: value for key, value in kwargs.items() if key not in spec_fields}
    return ChildSpec(
        name=name,
        factory=lambda: Worker(name, journal, **worker_kwargs),  # type: ignore[arg-type]
        **spec_kwargs,  # type: ignore[arg-type]
    )
