"""Run states. Which changes of status are allowed, and when, is the server's run
lifecycle (`aiki.server.lifecycle`)."""

from __future__ import annotations

from typing import Final, Literal, TypeGuard, get_args

RunStatus = Literal[
    "scheduled",
    "queued",
    "running",
    "paused",
    "sleeping",
    "awaiting_event",
    "awaiting_retry",
    "awaiting_child_workflow",
    "stalled",
    "completed",
    "failed",
    "cancelled",
]

ALL_STATUSES: Final[frozenset[str]] = frozenset(get_args(RunStatus))
TERMINAL: Final[frozenset[str]] = frozenset({"completed", "failed", "cancelled"})
WAITING: Final[frozenset[str]] = frozenset(
    {"sleeping", "awaiting_event", "awaiting_retry", "awaiting_child_workflow"}
)


def is_status(value: str) -> TypeGuard[RunStatus]:
    """Whether ``value`` names a run status."""
    return value in ALL_STATUSES
