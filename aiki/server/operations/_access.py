"""Who may call an operation, checked before its handler runs (both carriers).

Each operation declares the roles that may call it (`aiki.protocol.Operation.callers`);
a caller whose key has none of them is refused (403, naming the roles it would need).
Without authentication (``--insecure-no-auth``) every caller has every role.

Worker operations (their declared callers are ``worker`` alone) are for worker sessions
only: ``register_worker`` binds a WebSocket session to a worker, and every other worker
operation needs a session so bound, never plain HTTP. The handlers then hold each write
to the runs that worker holds (the claim records it), and each request's ``worker_id``
to the session's own.

Every operation declared for clients or admins (what changes runs, schedules or keys, and
the listing of keys; reads change nothing, and a worker's changes are in its runs'
history) is written to the ``aiki.audit`` log with the key that called it
(``cancel_run run 0b7f… by key ab12cd… (ops-team)``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Final

from ...errors import ForbiddenError
from ...protocol import ADMINS, CLIENTS, WORKERS

if TYPE_CHECKING:
    from ...protocol import Operation
    from .._auth import Principal
    from ._handlers import Handlers
    from ._services import Caller, Services


audit: Final = logging.getLogger("aiki.audit")


def admit(operation: Operation[Any, Any], principal: Principal) -> None:
    """Refuse ``principal`` if its role may not call ``operation`` (the carriers ask this
    before they read the request's body).

    Raises:
        aiki.ForbiddenError: names the roles that may.
    """
    if not operation.callers & principal.roles:
        needed = " or ".join(sorted(operation.callers))
        raise ForbiddenError(
            f"{operation.name} needs a key with role {needed}; {principal} has role "
            f"{principal.role}"
        )


def authorize(operation: Operation[Any, Any], caller: Caller) -> None:
    """Refuse ``caller`` if it may not call ``operation``.

    Raises:
        aiki.ForbiddenError: the caller's key has none of the operation's roles (`admit`);
            a worker operation over plain HTTP, or from a session no worker registered on.
    """
    admit(operation, caller.principal)
    if operation.callers != WORKERS:
        return
    if caller.session is None:
        raise ForbiddenError(
            f"{operation.name} is a worker operation: only a worker's WebSocket session may "
            "call it, not plain HTTP"
        )
    if operation.name != "register_worker" and caller.session.worker_id is None:
        raise ForbiddenError(
            f"{operation.name} is a worker operation: register_worker on this session first"
        )


def worker_of(caller: Caller, named: str | None = None) -> str:
    """The worker registered on the caller's session (`authorize` made sure there is one),
    which must be ``named`` if a request names one.

    Raises:
        aiki.ForbiddenError: the request names another worker.
    """
    worker_id = caller.worker_id
    if worker_id is None:
        raise ForbiddenError("a worker operation needs a worker's session")
    if named is not None and named != worker_id:
        raise ForbiddenError(
            f"this session is worker {worker_id!r}; it cannot act as worker {named!r}"
        )
    return worker_id


def _target(request: object) -> str:
    """What a request acts on, for the audit log (`` run 0b7f…``)."""
    for field, label in (("run_id", "run"), ("schedule_id", "schedule"), ("prefix", "key"),
                         ("workflow", "workflow")):  # fmt: skip
        value = getattr(request, field, None)
        if isinstance(value, str) and value:
            return f" {label} {value}"
    return ""


async def dispatch(
    handlers: Handlers,
    services: Services,
    operation: Operation[Any, Any],
    request: object,
    caller: Caller,
) -> object:
    """Authorize ``caller`` for ``operation``, then carry ``request`` out.

    Raises:
        aiki.AikiError: the refusal, or the handler's error.
    """
    authorize(operation, caller)
    reply = await handlers.handler(request)(services, request, caller)
    if operation.callers in (CLIENTS, ADMINS):  # (readers change nothing; workers: history)
        audit.info("%s%s by %s", operation.name, _target(request), caller.principal,
                   extra={"operation": operation.name, "key": caller.principal.prefix})  # fmt: skip
    return reply
