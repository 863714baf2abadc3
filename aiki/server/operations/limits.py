"""Operations on concurrency limits: reading them with their counts, and changing their
numbers at run time (each change kept, with who made it)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from ...errors import BadRequestError, NotFoundError
from ...protocol import (
    LIST_LIMITS,
    SET_LIMIT,
    LimitInfo,
    LimitList,
    ListLimits,
    SetLimit,
)
from ._handlers import Handlers

if TYPE_CHECKING:
    from ._services import Caller, Services


async def list_limits(services: Services, request: ListLimits, caller: Caller) -> LimitList:
    """The caller's namespace's limits (or the one named, with its latest changes)."""
    found = await services.transact(caller, lambda scoped: scoped.list_limits(request.name))
    if request.name is not None and not found:
        raise NotFoundError(f"no concurrency limit named {request.name!r} in this namespace")
    return LimitList(limits=tuple(found))


async def set_limit(services: Services, request: SetLimit, caller: Caller) -> LimitInfo:
    """Change a limit's numbers now; runs waiting for it are looked at again at once."""
    if request.total is not None and request.total < request.per_key:
        raise BadRequestError("total is below per_key",
                              errors=("total is below per_key @ $.total",))  # fmt: skip
    by = caller.principal.name or caller.principal.prefix or "no authentication"
    changed = await services.transact(caller, lambda scoped: scoped.set_limit(
        request.name, request.per_key, request.total, by))  # fmt: skip
    if changed is None:
        raise NotFoundError(f"no concurrency limit named {request.name!r} in this namespace "
                            "(a worker declares limits when it registers)")  # fmt: skip
    services.wakeups.gated()
    return changed


HANDLERS: Final = Handlers().on(LIST_LIMITS, list_limits).on(SET_LIMIT, set_limit)
"""The handlers of the limit operations."""
