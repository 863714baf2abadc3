"""Frozen statistics snapshots of mailboxes and supervisors, for health endpoints and benchmarks."""

from __future__ import annotations

from typing import Literal

import attrs

ChildState = Literal["starting", "running", "restarting", "stopping", "stopped"]
"""Where a supervised child is in its life.

``restarting`` covers the backoff pause between a crash and the next start;
``stopped`` is a child that ended and is not restarted (transient after a normal
exit); temporary children are removed when they end.
"""


@attrs.frozen(kw_only=True)
class MailboxStatistics:
    """One mailbox at one moment."""

    name: str
    capacity: int
    depth: int
    """Messages buffered and not yet received."""
    senders_waiting: int
    """Tasks blocked in ``send`` because the mailbox is full (backpressure in action)."""
    receivers_waiting: int
    closed: bool


@attrs.frozen(kw_only=True)
class ChildStatistics:
    """One supervised child at one moment."""

    name: str
    state: ChildState
    restart: str
    restarts: int
    """How many times this child was restarted since it was first started."""
    mailbox: MailboxStatistics
    last_error: str | None
    supervisor: SupervisorStatistics | None = None
    """Set when the child is itself a supervisor: the subtree's statistics."""


@attrs.frozen(kw_only=True)
class SupervisorStatistics:
    """A supervisor and all its children at one moment."""

    name: str
    strategy: str
    restarts_in_window: int
    max_restarts: int
    within_seconds: float
    children: tuple[ChildStatistics, ...]

    def child(self, name: str) -> ChildStatistics:
        """Return the statistics of the direct child called ``name``.

        Raises:
            KeyError: there is no such child.
        """
        for child in self.children:
            if child.name == name:
                return child
        raise KeyError(name)
