"""Aiki: durable workflows as ordinary async Python, on trio.

Define workflows and tasks, serve them from workers, start and watch runs from any
application::

    import aiki

    orders = aiki.workflow("order-processing")

    @aiki.task(retry=aiki.retry.fixed(3, delay_seconds=1))
    async def charge(order: Order) -> str: ...

    @orders.version("1.0.0")
    async def process_order(run: aiki.Run[Order], order: Order) -> Receipt:
        return Receipt(charge_id=await charge.start(run, order))

    worker = aiki.Worker(process_order)          # aiki worker app:worker

    async with aiki.Client(url) as client:       # in your application
        handle = await process_order.start(client, order)
        result = await handle.wait_for_status("completed")
"""

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

from . import retry as retry
from . import trigger as trigger
from .client import Client as Client
from .client import Resync as Resync
from .client import RunHandle as RunHandle
from .client import RunResult as RunResult
from .client import ScheduleHandle as ScheduleHandle
from .client import Watch as Watch
from .errors import AikiError as AikiError
from .errors import BadRequestError as BadRequestError
from .errors import BlockingTaskError as BlockingTaskError
from .errors import ConflictError as ConflictError
from .errors import ErrorInfo as ErrorInfo
from .errors import ExecutionsLostError as ExecutionsLostError
from .errors import ForbiddenError as ForbiddenError
from .errors import InvalidTransitionError as InvalidTransitionError
from .errors import LimitReachedError as LimitReachedError
from .errors import NonDeterminismError as NonDeterminismError
from .errors import NonRetryableError as NonRetryableError
from .errors import NotFoundError as NotFoundError
from .errors import PayloadTooLargeError as PayloadTooLargeError
from .errors import PushUnavailableError as PushUnavailableError
from .errors import RateLimitedError as RateLimitedError
from .errors import ReferenceConflictError as ReferenceConflictError
from .errors import RunNotFoundError as RunNotFoundError
from .errors import RunTimeoutError as RunTimeoutError
from .errors import ScheduleConflictError as ScheduleConflictError
from .errors import ScheduleNotFoundError as ScheduleNotFoundError
from .errors import StaleRevisionError as StaleRevisionError
from .errors import TaskFailedError as TaskFailedError
from .errors import TaskOutputError as TaskOutputError
from .errors import TaskTimeoutError as TaskTimeoutError
from .errors import UnauthenticatedError as UnauthenticatedError
from .errors import UnavailableError as UnavailableError
from .errors import UnawaitedStepError as UnawaitedStepError
from .errors import ValidationError as ValidationError
from .errors import VersionConflictError as VersionConflictError
from .errors import WorkflowNotFoundError as WorkflowNotFoundError
from .protocol import ConcurrencyLimit as ConcurrencyLimit
from .protocol import RunInfo as RunInfo
from .protocol import RunPage as RunPage
from .protocol import RunStatus as RunStatus
from .protocol import RunUpdate as RunUpdate
from .protocol import ScheduleDetails as ScheduleDetails
from .protocol import ScheduleInfo as ScheduleInfo
from .protocol import SchedulePage as SchedulePage
from .protocol import SchedulePolicy as SchedulePolicy
from .protocol import ScheduleSpec as ScheduleSpec
from .protocol import TaskProgress as TaskProgress
from .retry import RetryPolicy as RetryPolicy
from .sdk import ChildResult as ChildResult
from .sdk import ChildRun as ChildRun
from .sdk import EventDefinition as EventDefinition
from .sdk import Run as Run
from .sdk import Schedule as Schedule
from .sdk import Task as Task
from .sdk import TimedOut as TimedOut
from .sdk import Workflow as Workflow
from .sdk import WorkflowVersion as WorkflowVersion
from .sdk import event as event
from .sdk import progress as progress
from .sdk import schedule as schedule
from .sdk import task as task
from .sdk import workflow as workflow

if TYPE_CHECKING:
    from .worker import Worker as Worker


def __getattr__(name: str) -> object:
    # `Worker` is loaded when first named: it brings Redis and the worker's actors, which
    # an application that only starts and watches runs never needs.
    if name == "Worker":
        from .worker import Worker

        return Worker
    raise AttributeError(f"module 'aiki' has no attribute {name!r}")


try:
    __version__ = version("aiki")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0+unknown"

__all__ = [
    "AikiError",
    "BadRequestError",
    "BlockingTaskError",
    "ChildResult",
    "ChildRun",
    "Client",
    "ConcurrencyLimit",
    "ConflictError",
    "ErrorInfo",
    "EventDefinition",
    "ExecutionsLostError",
    "ForbiddenError",
    "InvalidTransitionError",
    "LimitReachedError",
    "NonDeterminismError",
    "NonRetryableError",
    "NotFoundError",
    "PayloadTooLargeError",
    "PushUnavailableError",
    "RateLimitedError",
    "ReferenceConflictError",
    "Resync",
    "RetryPolicy",
    "Run",
    "RunHandle",
    "RunInfo",
    "RunNotFoundError",
    "RunPage",
    "RunResult",
    "RunStatus",
    "RunTimeoutError",
    "RunUpdate",
    "Schedule",
    "ScheduleConflictError",
    "ScheduleDetails",
    "ScheduleHandle",
    "ScheduleInfo",
    "ScheduleNotFoundError",
    "SchedulePage",
    "SchedulePolicy",
    "ScheduleSpec",
    "StaleRevisionError",
    "Task",
    "TaskFailedError",
    "TaskOutputError",
    "TaskProgress",
    "TaskTimeoutError",
    "TimedOut",
    "UnauthenticatedError",
    "UnavailableError",
    "UnawaitedStepError",
    "ValidationError",
    "VersionConflictError",
    "Watch",
    "Worker",
    "Workflow",
    "WorkflowNotFoundError",
    "WorkflowVersion",
    "__version__",
    "event",
    "progress",
    "retry",
    "schedule",
    "task",
    "trigger",
    "workflow",
]
