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
from typing import TYPE_CHECKING, Final, Generic, TypeVar

import attrs

from ._payload import PayloadType

if TYPE_CHECKING:
    from collections.abc import Mapping

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
