"""Events: typed messages a run waits for and the outside world sends.

::

    @orders.version("1.0.0", events={"payment_received": aiki.event(Payment)})
    async def process(run: aiki.Run[Order], order: Order) -> Receipt:
        payment = await run.events.payment_received.wait(timeout=timedelta(days=3))
        if isinstance(payment, aiki.TimedOut):
            ...

    await handle.events.payment_received.send(Payment(...), reference_id="psp-123")

Events sent before the run waits are kept; each wait takes the oldest one not yet taken
(per event name, in arrival order). A repeated ``reference_id`` is ignored.
"""

from __future__ import annotations

import re
import typing
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar

import attrs

from ._payload import PayloadType
from ._steps import Seconds, Step, seconds_of

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ._run_context import Run

T = TypeVar("T")

_NAME: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@attrs.frozen
class TimedOut:
    """What a wait with a timeout returns when the timeout passed first."""


class EventDefinition(Generic[T]):
    """A declared event and its payload type. Build with `event`."""

    def __init__(self, payload_type: object) -> None:
        self.payload_type = payload_type
        self.name = ""
        self.payload: PayloadType[T] = PayloadType(payload_type, "event payload")

    def bind(self, name: str, owner: str) -> EventDefinition[T]:
        """A copy named ``name`` for the workflow version ``owner``."""
        if not _NAME.match(name):
            raise ValueError(f"invalid event name {name!r}: use a Python identifier")
        bound = EventDefinition[T](self.payload_type)
        bound.name = name
        bound.payload = PayloadType(self.payload_type, f"payload of event {name!r} of {owner}")
        return bound


def event(payload_type: object = None) -> EventDefinition[object]:
    """Declare an event whose payload has type ``payload_type`` (None: no payload)."""
    return EventDefinition(payload_type)


def bind_events(
    events: Mapping[str, EventDefinition[object]], owner: str
) -> dict[str, EventDefinition[object]]:
    """Name each declared event after its key."""
    return {name: definition.bind(name, owner) for name, definition in events.items()}


class RunEvent(Generic[T]):
    """One declared event, seen from inside a run."""

    def __init__(self, run: Run[Any], definition: EventDefinition[T]) -> None:
        self._run = run
        self._definition = definition

    @typing.overload
    def wait(self) -> Step[T]: ...
    @typing.overload
    def wait(self, *, timeout: Seconds) -> Step[T | TimedOut]: ...

    def wait(self, *, timeout: Seconds | None = None) -> Step[T] | Step[T | TimedOut]:
        """Take the oldest event of this name not taken yet, waiting (suspended) for one
        (await it).

        Returns:
            The event's payload, or `aiki.TimedOut` if ``timeout`` passed first.
        """
        label = f"run.events.{self._definition.name}.wait()"
        return Step(self._wait(timeout), label, self._run._unawaited, 1)

    async def _wait(self, limit: Seconds | None) -> T | TimedOut:
        name = self._definition.name
        record = await self._run._wait("event", name, seconds_of(limit))
        if record.state == "timed_out":
            return TimedOut()
        return self._definition.payload.from_json(record.result)


class RunEvents:
    """``run.events.<name>``: the events the run's workflow version declares."""

    def __init__(self, run: Run[Any], definitions: dict[str, EventDefinition[Any]]) -> None:
        self._run = run
        self._definitions = definitions

    def __getattr__(self, name: str) -> RunEvent[typing.Any]:
        definition = self._definitions.get(name)
        if definition is None:
            declared = ", ".join(sorted(self._definitions)) or "none"
            raise AttributeError(
                f"{self._run.workflow}@{self._run.version} declares no event {name!r} "
                f"(declared: {declared})"
            )
        return RunEvent(self._run, definition)
