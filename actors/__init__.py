"""The actor runtime on trio: bounded mailboxes, supervisors with OTP semantics, pools.

Generic on purpose: nothing here knows about workflows, Redis or PostgreSQL.

An actor is a trio task that reads a bounded mailbox (``async for message in inbox``)
and reports ready with ``task_status.started()``. Supervisors own the mailboxes, start
children in order, restart them per strategy and restart type, and escalate by raising
`RestartIntensityExceeded` when children crash too often.
"""

from ._errors import ActorError as ActorError
from ._errors import ActorStoppedError as ActorStoppedError
from ._errors import ChildStartError as ChildStartError
from ._errors import DuplicateChildError as DuplicateChildError
from ._errors import MailboxFullError as MailboxFullError
from ._errors import RestartIntensityExceeded as RestartIntensityExceeded
from ._errors import UnknownChildError as UnknownChildError
from ._mailbox import DEFAULT_CAPACITY as DEFAULT_CAPACITY
from ._mailbox import Address as Address
from ._mailbox import Destination as Destination
from ._mailbox import Mailbox as Mailbox
from ._mailbox import answer as answer
from ._mailbox import ask as ask
from ._mailbox import messages_or_ticks as messages_or_ticks
from ._policy import LEAF_INTENSITY as LEAF_INTENSITY
from ._policy import ROOT_INTENSITY as ROOT_INTENSITY
from ._policy import Actor as Actor
from ._policy import Backoff as Backoff
from ._policy import ChildSpec as ChildSpec
from ._policy import RestartIntensity as RestartIntensity
from ._policy import RestartType as RestartType
from ._policy import Startable as Startable
from ._policy import Strategy as Strategy
from ._pool import Pool as Pool
from ._pool import Router as Router
from ._pool import Routing as Routing
from ._pool import pool as pool
from ._stats import ChildState as ChildState
from ._stats import ChildStatistics as ChildStatistics
from ._stats import MailboxStatistics as MailboxStatistics
from ._stats import SupervisorStatistics as SupervisorStatistics
from ._supervisor import GetStatistics as GetStatistics
from ._supervisor import StartChild as StartChild
from ._supervisor import Supervisor as Supervisor
from ._supervisor import SupervisorMsg as SupervisorMsg
from ._supervisor import TerminateChild as TerminateChild
from ._supervisor_handles import RunningSupervisor as RunningSupervisor
from ._supervisor_handles import SupervisorRef as SupervisorRef
from ._supervisor_handles import open_supervisor as open_supervisor
from ._supervisor_handles import supervisor_spec as supervisor_spec

__all__ = [
    "DEFAULT_CAPACITY",
    "LEAF_INTENSITY",
    "ROOT_INTENSITY",
    "Actor",
    "ActorError",
    "ActorStoppedError",
    "Address",
    "Backoff",
    "ChildSpec",
    "ChildStartError",
    "ChildState",
    "ChildStatistics",
    "Destination",
    "DuplicateChildError",
    "GetStatistics",
    "Mailbox",
    "MailboxFullError",
    "MailboxStatistics",
    "Pool",
    "RestartIntensity",
    "RestartIntensityExceeded",
    "RestartType",
    "Router",
    "Routing",
    "RunningSupervisor",
    "StartChild",
    "Startable",
    "Strategy",
    "Supervisor",
    "SupervisorMsg",
    "SupervisorRef",
    "SupervisorStatistics",
    "TerminateChild",
    "UnknownChildError",
    "answer",
    "ask",
    "messages_or_ticks",
    "open_supervisor",
    "pool",
    "supervisor_spec",
]
