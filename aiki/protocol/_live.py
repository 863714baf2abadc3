"""Wire types of live updates: what subscribers receive (run changes, task progress) and the
subscription requests (WebSocket session only)."""

from __future__ import annotations

import datetime as dt
from typing import Final

import attrs

from ..errors import ErrorInfo
from ..wire import WireCodec
from ._operation import READERS, Request, declare
from ._runs import RunInfo
from ._states import RunStatus


@attrs.frozen(kw_only=True)
class TaskProgress:
    """The latest progress a task reported (pushed live to subscriptions that ask)."""

    run_id: str
    workflow: str
    version: str
    address: str
    seq: int
    task: str
    details: object = None
    at: dt.datetime
    namespace: str = "default"


@attrs.frozen(kw_only=True)
class RunUpdate:
    """A committed change of a run's status, as pushed to subscribers.

    Attributes:
        revision: the run's revision after the change; a run's updates have consecutive
            revisions, so a gap shows a missed update.
        previous: the status before (None for the run's creation, and for the state a
            watch of given runs begins with: ``reason="watch began"``).
        at: when the change was committed (server clock).
        output: the output, once ``completed``.
        error: the error, once ``failed`` (or the cause of ``cancelled``).
        run: with a terminal status, the whole run as it ended.
    """

    run_id: str
    workflow: str
    version: str
    status: RunStatus
    revision: int
    previous: RunStatus | None = None
    reason: str | None = None
    at: dt.datetime
    output: object = None
    error: ErrorInfo | None = None
    run: RunInfo | None = None
    namespace: str = "default"
    """The run's namespace."""


@attrs.frozen(kw_only=True)
class Subscribed:
    """Reply to `Subscribe`: pushes for it carry this ``subscription``.

    Attributes:
        runs: with ``run_ids``, each run as it was once the subscription was in place:
            every later change is pushed (updates up to its ``revision`` may be pushed
            too, if replayed: skip them).
    """

    subscription: str
    runs: tuple[RunInfo, ...] = ()


@attrs.frozen(kw_only=True)
class Subscribe(Request[Subscribed]):
    """Push the updates of matching runs over this WebSocket session until `Unsubscribe`.

    Attributes:
        run_ids: only these runs (empty: any run).
        workflow: only runs of this workflow (and ``version``, if given).
        statuses: only updates to these statuses (empty: every status).
        after_revision: with ``run_ids``, first replay each run's recorded changes after
            this revision (0: its whole history), then continue live without a gap.
    """

    run_ids: tuple[str, ...] = ()
    workflow: str | None = None
    version: str | None = None
    statuses: tuple[RunStatus, ...] = ()
    after_revision: int | None = None
    progress: bool = False
    """Also push the matching runs' task progress (`TaskProgress`)."""


@attrs.frozen(kw_only=True)
class Unsubscribed:
    """Reply to `Unsubscribe` (also when the subscription was already gone)."""

    subscription: str


@attrs.frozen(kw_only=True)
class Unsubscribe(Request[Unsubscribed]):
    """Stop the pushes of one subscription."""

    subscription: str


RUN_UPDATE: Final = WireCodec[RunUpdate](RunUpdate)
TASK_PROGRESS: Final = WireCodec[TaskProgress](TaskProgress)

SUBSCRIBE: Final = declare("subscribe", Subscribe, callers=READERS, session_only=True)
UNSUBSCRIBE: Final = declare("unsubscribe", Unsubscribe, callers=READERS, session_only=True)

OPERATIONS: Final = (SUBSCRIBE, UNSUBSCRIBE)
"""Live updates (over a WebSocket session only: pushes need somewhere to go)."""
