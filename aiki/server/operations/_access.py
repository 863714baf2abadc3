"""Who may call an operation, checked before its handler runs (both carriers).

Worker operations (their declared callers are ``worker``) are for worker sessions only:
``register_worker`` binds a WebSocket session to a worker, and every other worker
operation needs a session so bound, never plain HTTP. The handlers then hold each write
to the runs that worker holds (the claim records it), and each request's ``worker_id``
to the session's own. Until API keys exist (roles per key), everything else is open to
every caller.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ...errors import ForbiddenError

if TYPE_CHECKING:
    from ...protocol import Operation
    from ._handlers import Handlers
    from ._services import Caller, Services


def authorize(operation: Operation[Any, Any], caller: Caller) -> None:
    """Refuse ``caller`` if it may not call ``operation``.

    Raises:
        aiki.ForbiddenError: a worker operation over plain HTTP, or from a session no
            worker registered on.
    """
    if "worker" not in operation.callers:
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
    return await handlers.handler(request)(services, request, caller)
