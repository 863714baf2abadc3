"""Task progress: ``aiki.progress(details)`` from inside a task body.

The latest details of each task are sent to the server (coalesced: at most one send per
task every `SEND_EVERY_SECONDS`), kept with the run, shown by ``aiki runs show`` and the
dashboard, and pushed live to watchers that ask for progress. Progress is advisory: it is
not part of the run's history and a report lost in a crash is simply gone.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from typing import Final

import attrs
import orjson
import trio

SEND_EVERY_SECONDS: Final = 0.1

Report = Callable[[str, int, str, object], None]


@attrs.frozen
class Reporter:
    """Where one task attempt's progress goes (set around the attempt)."""

    report: Report
    token: trio.lowlevel.TrioToken
    address: str
    seq: int
    task: str


CURRENT_TASK: Final = contextvars.ContextVar[Reporter | None]("aiki_current_task", default=None)


def progress(details: object = None) -> None:
    """Report the current task's progress: any JSON value (a percentage, a dict of
    counters, a message). The latest value is what watchers see.

    Works in ``async`` tasks and in plain ``def`` tasks (which run in a thread).

    Raises:
        RuntimeError: not called from inside a task body.
        TypeError: ``details`` is not JSON-serializable.
    """
    reporter = CURRENT_TASK.get()
    if reporter is None:
        raise RuntimeError("aiki.progress() reports a task's progress: call it from a task body")
    try:
        orjson.dumps(details)
    except TypeError as exc:
        raise TypeError(f"progress details must be JSON-serializable: {exc}") from None
    args = (reporter.address, reporter.seq, reporter.task, details)
    try:
        trio.lowlevel.current_task()
    except RuntimeError:  # a sync task's thread: hand it to the run's trio thread
        reporter.token.run_sync_soon(reporter.report, *args)
    else:
        reporter.report(*args)
