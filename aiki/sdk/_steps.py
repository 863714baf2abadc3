"""Steps a handler must await: a durable step not awaited never happens.

``run.sleep(...)``, ``task.start(run, ...)``, ``version.start_as_child(run, ...)``,
``run.events.<name>.wait()`` and ``child.wait_for_status(...)`` return a `Step`: a
coroutine that remembers where it was made. A handler that ends while one of its steps
was never awaited (``run.sleep("nap", hours=1)`` without ``await`` would otherwise just
not sleep) fails with `aiki.UnawaitedStepError` naming the step and its line.
"""

from __future__ import annotations

import datetime as dt
import sys
import typing
from collections.abc import Coroutine
from typing import Any, TypeVar

from ..errors import UnawaitedStepError

if typing.TYPE_CHECKING:
    from collections.abc import Generator

T = TypeVar("T")

Seconds = float | dt.timedelta
"""A duration. The ``timeout`` of a durable wait is recorded on the server and outlives
the worker's process: it is not a cancellation deadline."""


def seconds_of(value: Seconds | None) -> float | None:
    """``value`` in seconds (None stays None)."""
    if value is None:
        return None
    return value.total_seconds() if isinstance(value, dt.timedelta) else float(value)


class Step(Coroutine[Any, Any, T]):
    """A durable step's coroutine, tracked until it is first awaited (or driven)."""

    __slots__ = ("_coro", "_label", "_line", "_pending")

    def __init__(
        self, coro: Coroutine[Any, Any, T], label: str, pending: set[Step[Any]], depth: int
    ) -> None:
        self._coro = coro
        self._label = label
        caller = sys._getframe(depth + 1)
        self._line = (caller.f_code.co_filename, caller.f_lineno)
        self._pending = pending
        pending.add(self)

    def __repr__(self) -> str:
        return f"<aiki step {self._label} at {self.where}>"

    @property
    def where(self) -> str:
        """``file:line`` where the step was made."""
        return f"{self._line[0]}:{self._line[1]}"

    @property
    def label(self) -> str:
        """What the step is, e.g. ``run.sleep('nap')``."""
        return self._label

    def __await__(self) -> Generator[Any, None, T]:
        self._pending.discard(self)
        return self._coro.__await__()

    def send(self, value: Any) -> Any:
        """Drive the step (as an event loop does with a coroutine)."""
        self._pending.discard(self)
        return self._coro.send(value)

    def throw(self, *args: Any) -> Any:
        """Throw into the step."""
        self._pending.discard(self)
        return self._coro.throw(*args)

    def close(self) -> None:
        """Close the step's coroutine (it will not run)."""
        self._coro.close()


def unawaited_error(pending: set[Step[Any]]) -> UnawaitedStepError | None:
    """The error for steps made and never awaited (closing them), or None if none were."""
    if not pending:
        return None
    steps = sorted(pending, key=lambda step: step._line)
    for step in steps:
        step.close()
    pending.clear()
    first = steps[0]
    more = f" (and {len(steps) - 1} more)" if len(steps) > 1 else ""
    return UnawaitedStepError(
        f"{first.label} at {first.where} was never awaited{more}: a durable step happens "
        f"only when awaited; write 'await {first.label}'"
    )
