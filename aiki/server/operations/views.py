"""Operators' views: a run in full (tasks, attempts, progress, waits, timeline), the
workers, the workflow versions."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from ...errors import RunNotFoundError
from ...protocol import (
    DESCRIBE_RUN,
    LIST_VERSIONS,
    LIST_WORKERS,
    DescribeRun,
    ListVersions,
    ListWorkers,
    RunDetails,
    VersionList,
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


async def list_versions(services: Services, request: ListVersions, caller: Caller) -> VersionList:
    """The registered workflow versions, their open runs and live workers."""
    versions = await services.transact(
        caller, lambda scoped: scoped.list_versions(workflow=request.workflow)
    )
    return VersionList(versions=tuple(versions))


HANDLERS: Final = (
    Handlers()
    .on(DESCRIBE_RUN, describe_run)
    .on(LIST_WORKERS, list_workers)
    .on(LIST_VERSIONS, list_versions)
)
"""The handlers of the operators' views."""
