"""Errors raised by the actor runtime.

Every error here derives from `ActorError`, so callers can tell runtime failures
apart from errors raised by actors' own code.
"""

from __future__ import annotations

import attrs


class ActorError(Exception):
    """Base class of every error the actor runtime raises."""


@attrs.define(auto_exc=True)
class ActorStoppedError(ActorError):
    """The actor behind an address stopped for good and its mailbox is closed."""

    name: str

    def __str__(self) -> str:
        return f"actor {self.name!r} has stopped; its mailbox is closed"


@attrs.define(auto_exc=True)
class MailboxFullError(ActorError):
    """``send_nowait`` found the mailbox full (backpressure, not a failure)."""

    name: str
    capacity: int

    def __str__(self) -> str:
        return f"mailbox of {self.name!r} is full ({self.capacity} messages)"


@attrs.define(auto_exc=True)
class ChildStartError(ActorError):
    """A child failed, returned or was stopped before it reported ready.

    The underlying error, if any, is the ``__cause__``.
    """

    supervisor: str
    child: str
    reason: str

    def __str__(self) -> str:
        return f"supervisor {self.supervisor!r} could not start {self.child!r}: {self.reason}"


@attrs.define(auto_exc=True)
class DuplicateChildError(ActorError, ValueError):
    """A supervisor already has a child with this name."""

    supervisor: str
    child: str

    def __str__(self) -> str:
        return f"supervisor {self.supervisor!r} already has a child named {self.child!r}"


@attrs.define(auto_exc=True)
class UnknownChildError(ActorError, LookupError):
    """A supervisor has no child with this name."""

    supervisor: str
    child: str

    def __str__(self) -> str:
        return f"supervisor {self.supervisor!r} has no child named {self.child!r}"


@attrs.define(auto_exc=True)
class RestartIntensityExceeded(ActorError):
    """A supervisor saw more restarts within its window than it allows, and gave up.

    The supervisor stopped all of its children before raising this; the last
    child error is the ``__cause__``. Its own supervisor treats it as a crash.
    """

    supervisor: str
    child: str
    restarts: int
    within_seconds: float

    def __str__(self) -> str:
        return (
            f"supervisor {self.supervisor!r} gave up: {self.restarts} restarts within "
            f"{self.within_seconds:g} s (last crash: {self.child!r})"
        )
