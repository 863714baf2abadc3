"""The protocol: what the server, workers and clients say to each other.

- wire types by concept: runs (`_runs`), workers (`_workers`), operators' views
  (`_views`), live updates (`_live`), API keys and identity (`_keys`), namespaces
  (`_namespaces`), schedules
  (`_schedules`, with when their occurrences fall: `_occurrences`), a run's recorded
  steps (`_history`), run states (`_states`), stream names
  (`_streams`), error replies (`_errors`);
- `Operation` and `Request`: each operation declared once, with its reply type and the
  roles that may call it, collected in `OPERATIONS`;
- the session protocol over one WebSocket (`ClientProtocol`, `read_request` and the
  ``*_frame`` functions), without I/O.

Everything here is shared by the server, workers and clients; nothing here does I/O.
"""

from ._bounds import MAX_CLAIM_NEXT as MAX_CLAIM_NEXT
from ._bounds import MAX_INT as MAX_INT
from ._bounds import MAX_ITEMS as MAX_ITEMS
from ._bounds import MAX_OFFER_QUEUES as MAX_OFFER_QUEUES
from ._bounds import MAX_OFFER_SECONDS as MAX_OFFER_SECONDS
from ._bounds import MAX_PAGE as MAX_PAGE
from ._bounds import MAX_PAYLOAD_DEPTH as MAX_PAYLOAD_DEPTH
from ._bounds import MAX_SECONDS as MAX_SECONDS
from ._bounds import MAX_TEXT as MAX_TEXT
from ._bounds import MAX_UPCOMING as MAX_UPCOMING
from ._bounds import RANGES as RANGES
from ._bounds import SUBSCRIBE_RUNS as SUBSCRIBE_RUNS
from ._bounds import WAIT_RUN_MAX_SECONDS as WAIT_RUN_MAX_SECONDS
from ._bounds import payload_problems as payload_problems
from ._bounds import request_problems as request_problems
from ._errors import ERROR_BODY as ERROR_BODY
from ._errors import ErrorBody as ErrorBody
from ._errors import InternalError as InternalError
from ._errors import decode_error as decode_error
from ._errors import encode_error as encode_error
from ._history import RecordedChild as RecordedChild
from ._history import RecordedTask as RecordedTask
from ._history import RecordedWait as RecordedWait
from ._history import Settled as Settled
from ._history import Step as Step
from ._history import canonical_json as canonical_json
from ._history import wait_address as wait_address
from ._keys import CREATE_KEY as CREATE_KEY
from ._keys import LIST_KEYS as LIST_KEYS
from ._keys import REVOKE_KEY as REVOKE_KEY
from ._keys import WHOAMI as WHOAMI
from ._keys import CreateKey as CreateKey
from ._keys import Identity as Identity
from ._keys import KeyCreated as KeyCreated
from ._keys import KeyInfo as KeyInfo
from ._keys import KeyList as KeyList
from ._keys import ListKeys as ListKeys
from ._keys import RevokeKey as RevokeKey
from ._keys import WhoAmI as WhoAmI
from ._limits import LIST_LIMITS as LIST_LIMITS
from ._limits import MAX_KEY_DEPTH as MAX_KEY_DEPTH
from ._limits import MAX_KEY_LENGTH as MAX_KEY_LENGTH
from ._limits import SET_LIMIT as SET_LIMIT
from ._limits import ConcurrencyLimit as ConcurrencyLimit
from ._limits import Holds as Holds
from ._limits import LimitChange as LimitChange
from ._limits import LimitInfo as LimitInfo
from ._limits import LimitKeyError as LimitKeyError
from ._limits import LimitList as LimitList
from ._limits import ListLimits as ListLimits
from ._limits import OnLimit as OnLimit
from ._limits import SetLimit as SetLimit
from ._limits import key_path_problem as key_path_problem
from ._limits import limit_key as limit_key
from ._limits import limit_name_problem as limit_name_problem
from ._limits import limits_problems as limits_problems
from ._live import RUN_UPDATE as RUN_UPDATE
from ._live import SUBSCRIBE as SUBSCRIBE
from ._live import TASK_PROGRESS as TASK_PROGRESS
from ._live import UNSUBSCRIBE as UNSUBSCRIBE
from ._live import RunUpdate as RunUpdate
from ._live import Subscribe as Subscribe
from ._live import Subscribed as Subscribed
from ._live import TaskProgress as TaskProgress
from ._live import Unsubscribe as Unsubscribe
from ._live import Unsubscribed as Unsubscribed
from ._namespaces import DEFAULT_NAMESPACE as DEFAULT_NAMESPACE
from ._namespaces import NAMESPACE_PATTERN as NAMESPACE_PATTERN
from ._namespaces import is_namespace as is_namespace
from ._occurrences import COUNT_CAP as COUNT_CAP
from ._occurrences import MIN_EVERY_SECONDS as MIN_EVERY_SECONDS
from ._occurrences import UTC as UTC
from ._occurrences import CatchupPolicy as CatchupPolicy
from ._occurrences import Clock as Clock
from ._occurrences import OverlapPolicy as OverlapPolicy
from ._occurrences import Plan as Plan
from ._occurrences import SchedulePolicy as SchedulePolicy
from ._occurrences import ScheduleSpec as ScheduleSpec
from ._occurrences import check_spec as check_spec
from ._occurrences import describe as describe
from ._occurrences import jitter_of as jitter_of
from ._occurrences import plan as plan
from ._operation import ADMINS as ADMINS
from ._operation import ANYONE as ANYONE
from ._operation import CLIENTS as CLIENTS
from ._operation import READERS as READERS
from ._operation import WORKERS as WORKERS
from ._operation import Operation as Operation
from ._operation import Registry as Registry
from ._operation import Request as Request
from ._operation import Role as Role
from ._operation import declare as declare
from ._operation import reply_type_of as reply_type_of
from ._registry import OPERATIONS as OPERATIONS
from ._runs import CANCEL_RUN as CANCEL_RUN
from ._runs import DEFAULT_PRIORITY as DEFAULT_PRIORITY
from ._runs import GET_RUN as GET_RUN
from ._runs import LIST_RUNS as LIST_RUNS
from ._runs import PAUSE_RUN as PAUSE_RUN
from ._runs import REQUEUE_RUN as REQUEUE_RUN
from ._runs import RESUME_RUN as RESUME_RUN
from ._runs import RETRY_RUN as RETRY_RUN
from ._runs import RETRY_RUNS as RETRY_RUNS
from ._runs import SEND_EVENT as SEND_EVENT
from ._runs import START_RUN as START_RUN
from ._runs import WAIT_RUN as WAIT_RUN
from ._runs import WAKEUP_RUN as WAKEUP_RUN
from ._runs import CancelRun as CancelRun
from ._runs import ConflictPolicy as ConflictPolicy
from ._runs import EventSent as EventSent
from ._runs import GetRun as GetRun
from ._runs import ListRuns as ListRuns
from ._runs import PauseRun as PauseRun
from ._runs import RequeueRun as RequeueRun
from ._runs import ResumeRun as ResumeRun
from ._runs import RetryRun as RetryRun
from ._runs import RetryRuns as RetryRuns
from ._runs import RunInfo as RunInfo
from ._runs import RunPage as RunPage
from ._runs import RunsRetried as RunsRetried
from ._runs import RunsStopped as RunsStopped
from ._runs import RunStarted as RunStarted
from ._runs import RunTransitioned as RunTransitioned
from ._runs import SendEvent as SendEvent
from ._runs import StartOptions as StartOptions
from ._runs import StartRun as StartRun
from ._runs import WaitRun as WaitRun
from ._runs import WakeupRun as WakeupRun
from ._runs import WokenUp as WokenUp
from ._schedules import ACTIVATE_SCHEDULE as ACTIVATE_SCHEDULE
from ._schedules import DEACTIVATE_SCHEDULE as DEACTIVATE_SCHEDULE
from ._schedules import GET_SCHEDULE as GET_SCHEDULE
from ._schedules import LIST_SCHEDULES as LIST_SCHEDULES
from ._schedules import PAUSE_SCHEDULE as PAUSE_SCHEDULE
from ._schedules import RESUME_SCHEDULE as RESUME_SCHEDULE
from ._schedules import ActivateSchedule as ActivateSchedule
from ._schedules import DeactivateSchedule as DeactivateSchedule
from ._schedules import GetSchedule as GetSchedule
from ._schedules import ListSchedules as ListSchedules
from ._schedules import PauseSchedule as PauseSchedule
from ._schedules import ResumeSchedule as ResumeSchedule
from ._schedules import ScheduleActivated as ScheduleActivated
from ._schedules import ScheduleDetails as ScheduleDetails
from ._schedules import ScheduleInfo as ScheduleInfo
from ._schedules import SchedulePage as SchedulePage
from ._schedules import ScheduleStatus as ScheduleStatus
from ._schedules import is_schedule_status as is_schedule_status
from ._schemas import MAX_SCHEMA_DEPTH as MAX_SCHEMA_DEPTH
from ._schemas import MAX_SCHEMA_NODES as MAX_SCHEMA_NODES
from ._schemas import SCHEMA_FORMATS as SCHEMA_FORMATS
from ._schemas import SCHEMA_KEYWORDS as SCHEMA_KEYWORDS
from ._schemas import canonical_schema as canonical_schema
from ._schemas import same_schemas as same_schemas
from ._schemas import schema_problems as schema_problems
from ._session import MAX_MESSAGE_BYTES as MAX_MESSAGE_BYTES
from ._session import PUSH as PUSH
from ._session import SESSION_PATH as SESSION_PATH
from ._session import ClientProtocol as ClientProtocol
from ._session import FrameError as FrameError
from ._session import Incoming as Incoming
from ._session import Outgoing as Outgoing
from ._session import Published as Published
from ._session import Pushed as Pushed
from ._session import Replied as Replied
from ._session import RequestError as RequestError
from ._session import SessionEvent as SessionEvent
from ._session import decode_request as decode_request
from ._session import error_frame as error_frame
from ._session import publication_frames as publication_frames
from ._session import push_frame as push_frame
from ._session import read_request as read_request
from ._session import reply_frame as reply_frame
from ._session import session_url as session_url
from ._states import ALL_STATUSES as ALL_STATUSES
from ._states import TERMINAL as TERMINAL
from ._states import WAITING as WAITING
from ._states import RunStatus as RunStatus
from ._states import is_status as is_status
from ._streams import GROUP as GROUP
from ._streams import MAX_SHARDS as MAX_SHARDS
from ._streams import QUEUED_RUN as QUEUED_RUN
from ._streams import QueuedRun as QueuedRun
from ._streams import queue_for as queue_for
from ._streams import shard_of as shard_of
from ._streams import stream_for as stream_for
from ._streams import streams_for as streams_for
from ._views import DESCRIBE_RUN as DESCRIBE_RUN
from ._views import LIST_VERSIONS as LIST_VERSIONS
from ._views import LIST_WORKERS as LIST_WORKERS
from ._views import DescribeRun as DescribeRun
from ._views import GateWait as GateWait
from ._views import LimitWait as LimitWait
from ._views import ListVersions as ListVersions
from ._views import ListWorkers as ListWorkers
from ._views import PendingWait as PendingWait
from ._views import RunDetails as RunDetails
from ._views import TaskAttempt as TaskAttempt
from ._views import TaskDetail as TaskDetail
from ._views import TaskState as TaskState
from ._views import Transition as Transition
from ._views import VersionInfo as VersionInfo
from ._views import VersionList as VersionList
from ._views import WorkerInfo as WorkerInfo
from ._views import WorkerList as WorkerList
from ._views import is_task_state as is_task_state
from ._workers import BEGIN_WAIT as BEGIN_WAIT
from ._workers import CLAIM_NEXT as CLAIM_NEXT
from ._workers import CLAIM_RUN as CLAIM_RUN
from ._workers import DEREGISTER_WORKER as DEREGISTER_WORKER
from ._workers import HEARTBEAT as HEARTBEAT
from ._workers import OFFER_SLOT as OFFER_SLOT
from ._workers import RECORD_HISTORY as RECORD_HISTORY
from ._workers import RECORD_TASK as RECORD_TASK
from ._workers import REGISTER_WORKER as REGISTER_WORKER
from ._workers import REPORT_PROGRESS as REPORT_PROGRESS
from ._workers import START_CHILD as START_CHILD
from ._workers import SUSPEND_RUN as SUSPEND_RUN
from ._workers import TRANSITION_RUN as TRANSITION_RUN
from ._workers import BeginWait as BeginWait
from ._workers import ClaimedRuns as ClaimedRuns
from ._workers import ClaimNext as ClaimNext
from ._workers import ClaimRejected as ClaimRejected
from ._workers import ClaimRun as ClaimRun
from ._workers import DeregisterWorker as DeregisterWorker
from ._workers import Heartbeat as Heartbeat
from ._workers import HeartbeatAck as HeartbeatAck
from ._workers import HistoryRecorded as HistoryRecorded
from ._workers import HistoryUpdate as HistoryUpdate
from ._workers import OfferSlot as OfferSlot
from ._workers import ProgressReported as ProgressReported
from ._workers import RecordHistory as RecordHistory
from ._workers import RecordTask as RecordTask
from ._workers import RedisGrant as RedisGrant
from ._workers import RegisterWorker as RegisterWorker
from ._workers import ReportProgress as ReportProgress
from ._workers import RunClaimed as RunClaimed
from ._workers import ServedQueue as ServedQueue
from ._workers import StartChild as StartChild
from ._workers import StopRun as StopRun
from ._workers import SuspendRun as SuspendRun
from ._workers import TaskRecorded as TaskRecorded
from ._workers import TaskRecordState as TaskRecordState
from ._workers import TransitionRun as TransitionRun
from ._workers import VersionSpec as VersionSpec
from ._workers import WaitKind as WaitKind
from ._workers import WorkerDeregistered as WorkerDeregistered
from ._workers import WorkerRegistered as WorkerRegistered

__all__ = [
    "ACTIVATE_SCHEDULE",
    "ADMINS",
    "ALL_STATUSES",
    "ANYONE",
    "BEGIN_WAIT",
    "CANCEL_RUN",
    "CLAIM_NEXT",
    "CLAIM_RUN",
    "CLIENTS",
    "COUNT_CAP",
    "CREATE_KEY",
    "DEACTIVATE_SCHEDULE",
    "DEFAULT_NAMESPACE",
    "DEFAULT_PRIORITY",
    "DEREGISTER_WORKER",
    "DESCRIBE_RUN",
    "ERROR_BODY",
    "GET_RUN",
    "GET_SCHEDULE",
    "GROUP",
    "HEARTBEAT",
    "LIST_KEYS",
    "LIST_LIMITS",
    "LIST_RUNS",
    "LIST_SCHEDULES",
    "LIST_VERSIONS",
    "LIST_WORKERS",
    "MAX_CLAIM_NEXT",
    "MAX_INT",
    "MAX_ITEMS",
    "MAX_KEY_DEPTH",
    "MAX_KEY_LENGTH",
    "MAX_MESSAGE_BYTES",
    "MAX_OFFER_QUEUES",
    "MAX_OFFER_SECONDS",
    "MAX_PAGE",
    "MAX_PAYLOAD_DEPTH",
    "MAX_SCHEMA_DEPTH",
    "MAX_SCHEMA_NODES",
    "MAX_SECONDS",
    "MAX_SHARDS",
    "MAX_TEXT",
    "MAX_UPCOMING",
    "MIN_EVERY_SECONDS",
    "NAMESPACE_PATTERN",
    "OFFER_SLOT",
    "OPERATIONS",
    "PAUSE_RUN",
    "PAUSE_SCHEDULE",
    "PUSH",
    "QUEUED_RUN",
    "RANGES",
    "READERS",
    "RECORD_HISTORY",
    "RECORD_TASK",
    "REGISTER_WORKER",
    "REPORT_PROGRESS",
    "REQUEUE_RUN",
    "RESUME_RUN",
    "RESUME_SCHEDULE",
    "RETRY_RUN",
    "RETRY_RUNS",
    "REVOKE_KEY",
    "RUN_UPDATE",
    "SCHEMA_FORMATS",
    "SCHEMA_KEYWORDS",
    "SEND_EVENT",
    "SESSION_PATH",
    "SET_LIMIT",
    "START_CHILD",
    "START_RUN",
    "SUBSCRIBE",
    "SUBSCRIBE_RUNS",
    "SUSPEND_RUN",
    "TASK_PROGRESS",
    "TERMINAL",
    "TRANSITION_RUN",
    "UNSUBSCRIBE",
    "UTC",
    "WAITING",
    "WAIT_RUN",
    "WAIT_RUN_MAX_SECONDS",
    "WAKEUP_RUN",
    "WHOAMI",
    "WORKERS",
    "ActivateSchedule",
    "BeginWait",
    "CancelRun",
    "CatchupPolicy",
    "ClaimNext",
    "ClaimRejected",
    "ClaimRun",
    "ClaimedRuns",
    "ClientProtocol",
    "Clock",
    "ConcurrencyLimit",
    "ConflictPolicy",
    "CreateKey",
    "DeactivateSchedule",
    "DeregisterWorker",
    "DescribeRun",
    "ErrorBody",
    "EventSent",
    "FrameError",
    "GateWait",
    "GetRun",
    "GetSchedule",
    "Heartbeat",
    "HeartbeatAck",
    "HistoryRecorded",
    "HistoryUpdate",
    "Holds",
    "Identity",
    "Incoming",
    "InternalError",
    "KeyCreated",
    "KeyInfo",
    "KeyList",
    "LimitChange",
    "LimitInfo",
    "LimitKeyError",
    "LimitList",
    "LimitWait",
    "ListKeys",
    "ListLimits",
    "ListRuns",
    "ListSchedules",
    "ListVersions",
    "ListWorkers",
    "OfferSlot",
    "OnLimit",
    "Operation",
    "Outgoing",
    "OverlapPolicy",
    "PauseRun",
    "PauseSchedule",
    "PendingWait",
    "Plan",
    "ProgressReported",
    "Published",
    "Pushed",
    "QueuedRun",
    "RecordHistory",
    "RecordTask",
    "RecordedChild",
    "RecordedTask",
    "RecordedWait",
    "RedisGrant",
    "RegisterWorker",
    "Registry",
    "Replied",
    "ReportProgress",
    "Request",
    "RequestError",
    "RequeueRun",
    "ResumeRun",
    "ResumeSchedule",
    "RetryRun",
    "RetryRuns",
    "RevokeKey",
    "Role",
    "RunClaimed",
    "RunDetails",
    "RunInfo",
    "RunPage",
    "RunStarted",
    "RunStatus",
    "RunTransitioned",
    "RunUpdate",
    "RunsRetried",
    "RunsStopped",
    "ScheduleActivated",
    "ScheduleDetails",
    "ScheduleInfo",
    "SchedulePage",
    "SchedulePolicy",
    "ScheduleSpec",
    "ScheduleStatus",
    "SendEvent",
    "ServedQueue",
    "SessionEvent",
    "SetLimit",
    "Settled",
    "StartChild",
    "StartOptions",
    "StartRun",
    "Step",
    "StopRun",
    "Subscribe",
    "Subscribed",
    "SuspendRun",
    "TaskAttempt",
    "TaskDetail",
    "TaskProgress",
    "TaskRecordState",
    "TaskRecorded",
    "TaskState",
    "Transition",
    "TransitionRun",
    "Unsubscribe",
    "Unsubscribed",
    "VersionInfo",
    "VersionList",
    "VersionSpec",
    "WaitKind",
    "WaitRun",
    "WakeupRun",
    "WhoAmI",
    "WokenUp",
    "WorkerDeregistered",
    "WorkerInfo",
    "WorkerList",
    "WorkerRegistered",
    "canonical_json",
    "canonical_schema",
    "check_spec",
    "declare",
    "decode_error",
    "decode_request",
    "describe",
    "encode_error",
    "error_frame",
    "is_namespace",
    "is_schedule_status",
    "is_status",
    "is_task_state",
    "jitter_of",
    "key_path_problem",
    "limit_key",
    "limit_name_problem",
    "limits_problems",
    "payload_problems",
    "plan",
    "publication_frames",
    "push_frame",
    "queue_for",
    "read_request",
    "reply_frame",
    "reply_type_of",
    "request_problems",
    "same_schemas",
    "schema_problems",
    "session_url",
    "shard_of",
    "stream_for",
    "streams_for",
    "wait_address",
]
