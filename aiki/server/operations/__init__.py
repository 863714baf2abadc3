"""The server's operations: one handler per declared operation, by domain.

- `runs`: start, read, list, wait for a run;
- `workers`: register, claim, record tasks, move runs on, heartbeats, pull claims;
- `waits`: begin waits, suspend runs, send events, start child runs;
- `control`: cancel, pause, resume, wake up, requeue;
- `views`: a run in full, the workers;
- `live`: subscribe and unsubscribe (WebSocket sessions only);
- `schedules`: activate, read, list, pause, resume, deactivate;
- `keys`: create, list and revoke API keys; who the caller is.

`HANDLERS` merges the domains' tables; a carrier decodes a request (by the protocol's
`aiki.protocol.OPERATIONS`) and calls ``HANDLERS.handler(request)(services, request,
caller)``. A test checks that every declared operation has exactly one handler.
"""

from typing import Final

from . import control, keys, limits, live, runs, schedules, views, waits, workers
from ._access import admit as admit
from ._access import authorize as authorize
from ._access import dispatch as dispatch
from ._access import worker_of as worker_of
from ._handlers import Handler as Handler
from ._handlers import Handlers as Handlers
from ._services import Caller as Caller
from ._services import RunNotifier as RunNotifier
from ._services import Schemas as Schemas
from ._services import Services as Services
from ._services import SessionHandle as SessionHandle
from ._services import Wakeups as Wakeups
from ._services import WorkerSessions as WorkerSessions

HANDLERS: Final = Handlers(
    runs.HANDLERS,
    workers.HANDLERS,
    waits.HANDLERS,
    control.HANDLERS,
    views.HANDLERS,
    live.HANDLERS,
    schedules.HANDLERS,
    keys.HANDLERS,
    limits.HANDLERS,
)
"""Every operation's handler, by request type."""

__all__ = [
    "HANDLERS",
    "Caller",
    "Handler",
    "Handlers",
    "RunNotifier",
    "Schemas",
    "Services",
    "SessionHandle",
    "Wakeups",
    "WorkerSessions",
    "admit",
    "authorize",
    "control",
    "dispatch",
    "keys",
    "live",
    "runs",
    "schedules",
    "views",
    "waits",
    "worker_of",
    "workers",
]
