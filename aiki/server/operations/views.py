"""Operators' views: a run in full (tasks, attempts, progress, timeline), the workers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from ...errors import RunNotFoundError
from ...protocol import (
    DESCRIBE_RUN,
    LIST_WORKERS,
    DescribeRun,
    ListWorkers,
    RunDetails,
    WorkerList,
)
from ._handlers import Handlers
from ._services import run_uuid

if TYPE_CHECKING:
    from ._services import Caller, Services


async def describe_run(services: Services, request: DescribeRun, caller: Caller) -> RunDetails:
    """A run with its tasks, their failed attempts, and its timeline."""
    run_id = run_uuid(request.run_id)
    details = await services.transact(caller, lambda scoped: scoped.describe_run(run_id))
    if details is None:
        raise RunNotFoundError(f"no run with ID {request.run_id!r}")
    return details


async def list_workers(services: Services, request: ListWorkers, caller: Caller) -> WorkerList:
    """The registered workers (alive ones, unless ``include_gone``)."""
    workers = await services.transact(
        caller, lambda scoped: scoped.list_workers(include_gone=request.include_gone)
    )
    return WorkerList(workers=tuple(workers))


HANDLERS: Final = Handlers().on(DESCRIBE_RUN, describe_run).on(LIST_WORKERS, list_workers)
"""The handlers of the operators' views."""
