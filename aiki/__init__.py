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

from . import retry as retry
from . import trigger as trigger
from ._event import EventDefinition as EventDefinition
from ._event import TimedOut as TimedOut
from ._event import event as event
from ._occurrences import SchedulePolicy as SchedulePolicy
from ._occurrences import ScheduleSpec as ScheduleSpec
from ._progress import progress as progress
from ._protocol import RunInfo as RunInfo
from ._protocol import RunPage as RunPage
from ._protocol_live import RunUpdate as RunUpdate
from ._protocol_live import TaskProgress as TaskProgress
from ._protocol_schedules import ScheduleDetails as ScheduleDetails
from ._protocol_schedules import ScheduleInfo as ScheduleInfo
from ._protocol_schedules import SchedulePage as SchedulePage
from ._run_context import ChildResult as ChildResult
from ._run_context import ChildRun as ChildRun
from ._run_context import Run as Run
from ._schedule import Schedule as Schedule
from ._schedule import ScheduleHandle as ScheduleHandle
from ._schedule import schedule as schedule
from ._states import RunStatus as RunStatus
from ._task import Task as Task
from ._task import task as task
from ._watch import Resync as Resync
from ._watch import Watch as Watch
from ._workflow import Workflow as Workflow
from ._workflow import WorkflowVersion as WorkflowVersion
from ._workflow import workflow as workflow
from .client import Client as Client
from .client import RunHandle as RunHandle
from .client import RunResult as RunResult
from .errors import AikiError as AikiError
from .errors import BadRequestError as BadRequestError
from .errors import ConflictError as ConflictError
from .errors import ErrorInfo as ErrorInfo
from .errors import InvalidTransitionError as InvalidTransitionError
from .errors import NonDeterminismError as NonDeterminismError
from .errors import NonRetryableError as NonRetryableError
from .errors import NotFoundError as NotFoundError
from .errors import PayloadTooLargeError as PayloadTooLargeError
from .errors import PushUnavailableError as PushUnavailableError
from .errors import ReferenceConflictError as ReferenceConflictError
from .errors import RunNotFoundError as RunNotFoundError
from .errors import RunTimeoutError as RunTimeoutError
from .errors import ScheduleConflictError as ScheduleConflictError
from .errors import ScheduleNotFoundError as ScheduleNotFoundError
from .errors import StaleRevisionError as StaleRevisionError
from .errors import TaskFailedError as TaskFailedError
from .errors import TaskTimeoutError as TaskTimeoutError
from .errors import UnavailableError as UnavailableError
from .errors import ValidationError as ValidationError
from .errors import WorkflowNotFoundError as WorkflowNotFoundError
from .retry import RetryPolicy as RetryPolicy
from .worker import Worker as Worker

try:
    __version__ = version("aiki")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0+unknown"

__all__ = [
    "AikiError",
    "BadRequestError",
    "ChildResult",
    "ChildRun",
    "Client",
    "ConflictError",
    "ErrorInfo",
    "EventDefinition",
    "InvalidTransitionError",
    "NonDeterminismError",
    "NonRetryableError",
    "NotFoundError",
    "PayloadTooLargeError",
    "PushUnavailableError",
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
    "TaskProgress",
    "TaskTimeoutError",
    "TimedOut",
    "UnavailableError",
    "ValidationError",
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
