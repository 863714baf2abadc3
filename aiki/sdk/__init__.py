"""What workflow code is written with: workflows, tasks, events, schedules, the run.

- `workflow` / `Workflow` / `WorkflowVersion` (`_workflow`) and `task` / `Task` (`_task`):
  definitions, typed by their annotations (`_payload` converts payloads strictly);
- `event` (`_event`), `schedule` (`_schedule`), `progress` (`_progress`);
- the loops task bodies run on, and their watchdogs (`_loops`);
- `Run` (`_run_context`): the handle a workflow handler gets; each step it takes parks
  its branch until the replay core (`_replay`, pure) decides, while no branch can run,
  what happens next (deliver a recorded outcome, start new steps, suspend).

The worker executes runs with these; the server never imports them.
"""

from ._branches import deterministic_scheduling as deterministic_scheduling
from ._children import ChildResult as ChildResult
from ._children import ChildRun as ChildRun
from ._event import EventDefinition as EventDefinition
from ._event import TimedOut as TimedOut
from ._event import event as event
from ._execution import Execution as Execution
from ._gateway import Completed as Completed
from ._gateway import ExecutionInterrupted as ExecutionInterrupted
from ._gateway import Failed as Failed
from ._gateway import RunGateway as RunGateway
from ._gateway import RunTakenOver as RunTakenOver
from ._gateway import Suspended as Suspended
from ._loops import AsyncioLoop as AsyncioLoop
from ._loops import open_asyncio_loop as open_asyncio_loop
from ._loops import watching_trio as watching_trio
from ._payload import PayloadType as PayloadType
from ._progress import SEND_EVERY_SECONDS as SEND_EVERY_SECONDS
from ._progress import progress as progress
from ._replay import Branch as Branch
from ._replay import Decision as Decision
from ._replay import Deliver as Deliver
from ._replay import Diverge as Diverge
from ._replay import Idle as Idle
from ._replay import NewStep as NewStep
from ._replay import Replay as Replay
from ._replay import Start as Start
from ._replay import Suspend as Suspend
from ._replay import child_address as child_address
from ._replay import task_address as task_address
from ._run_context import Run as Run
from ._schedule import Schedule as Schedule
from ._schedule import schedule as schedule
from ._task import Task as Task
from ._task import task as task
from ._workflow import Workflow as Workflow
from ._workflow import WorkflowVersion as WorkflowVersion
from ._workflow import workflow as workflow

__all__ = [
    "SEND_EVERY_SECONDS",
    "AsyncioLoop",
    "Branch",
    "ChildResult",
    "ChildRun",
    "Completed",
    "Decision",
    "Deliver",
    "Diverge",
    "EventDefinition",
    "Execution",
    "ExecutionInterrupted",
    "Failed",
    "Idle",
    "NewStep",
    "PayloadType",
    "Replay",
    "Run",
    "RunGateway",
    "RunTakenOver",
    "Schedule",
    "Start",
    "Suspend",
    "Suspended",
    "Task",
    "TimedOut",
    "Workflow",
    "WorkflowVersion",
    "child_address",
    "deterministic_scheduling",
    "event",
    "open_asyncio_loop",
    "progress",
    "schedule",
    "task",
    "task_address",
    "watching_trio",
    "workflow",
]
