"""Run states and the transitions between them. The server checks every transition here."""

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

TRANSITIONS: Final[dict[str, frozenset[str]]] = {
    "scheduled": frozenset({"queued", "cancelled", "failed"}),
    "queued": frozenset({"running", "paused", "stalled", "cancelled", "failed"}),
    # running -> queued: the claim was released (recovery, or the worker gave the run back).
    "running": frozenset({"completed", "failed", "cancelled", "paused", "queued"} | WAITING),
    "paused": frozenset({"queued", "cancelled", "failed"}),
    "sleeping": frozenset({"queued", "paused", "cancelled", "failed"}),
    "awaiting_event": frozenset({"queued", "paused", "cancelled", "failed"}),
    "awaiting_retry": frozenset({"queued", "paused", "cancelled", "failed"}),
    "awaiting_child_workflow": frozenset({"queued", "paused", "cancelled", "failed"}),
    "stalled": frozenset({"queued", "cancelled", "failed"}),
    "completed": frozenset(),
    "failed": frozenset(),
    "cancelled": frozenset(),
}
"""For each status, the statuses a run may move to next. Every non-terminal status may go
to ``failed`` because a run timeout fails the run wherever it is."""

INITIAL: Final[frozenset[str]] = frozenset({"queued", "scheduled"})
"""The statuses a run is created in."""


def is_status(value: str) -> TypeGuard[RunStatus]:
    """Whether ``value`` names a run status."""
    return value in ALL_STATUSES


def can_transition(current: str, target: str) -> bool:
    """True if a run in ``current`` may move to ``target``."""
    return target in TRANSITIONS.get(current, frozenset())
