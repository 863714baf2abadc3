"""The public surface of each package is pinned: changing it is a deliberate act."""

from __future__ import annotations

import importlib
import inspect

import pytest

import actors
import aiki
import transport

EXPECTED = {
    "aiki": [
        "AikiError",
        "BadRequestError",
        "BlockingTaskError",
        "ChildResult",
        "ChildRun",
        "Client",
        "ConflictError",
        "ErrorInfo",
        "EventDefinition",
        "ForbiddenError",
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
        "ExecutionsLostError",
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
        "UnawaitedStepError",
        "UnavailableError",
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
    ],
    "actors": [
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
    ],
    "transport": [
        "CodecError",
        "LocalPostgres",
        "LocalRedis",
        "LocalRedisCluster",
        "RedisTarget",
        "SLOTS",
        "hash_slot",
        "parse_redis_url",
        "start_local_redis_cluster",
        "LocalServiceError",
        "Migration",
        "MigrationError",
        "PostgresStore",
        "RedisStreams",
        "ServerLimits",
        "ServerStatistics",
        "Services",
        "StorageConflictError",
        "StorageError",
        "StorageTimeoutError",
        "StorageUnavailableError",
        "StreamEntry",
        "StreamError",
        "StreamReader",
        "StreamUnavailableError",
        "Transaction",
        "TransportError",
        "UniqueViolationError",
        "WebSocketClient",
        "WebSocketError",
        "WireCodec",
        "apply_migrations",
        "apply_migrations_sync",
        "client_tls",
        "load_migrations",
        "make_wire_converter",
        "open_postgres_store",
        "open_redis_streams",
        "open_websocket",
        "serve_asgi",
        "server_tls",
        "services_from_env",
        "start_local_postgres",
        "start_local_redis",
    ],
}


@pytest.mark.parametrize("package", sorted(EXPECTED))
def test_public_names_are_pinned(package: str) -> None:
    """__all__ matches the pinned list exactly, and every name in it resolves."""
    module = importlib.import_module(package)
    assert sorted(module.__all__) == sorted(EXPECTED[package])
    for name in module.__all__:
        assert hasattr(module, name), name


@pytest.mark.parametrize("module", [actors, transport, aiki])
def test_every_public_name_is_documented(module: object) -> None:
    """Every exported class and function has a docstring."""
    undocumented = [
        name
        for name in module.__all__
        if (inspect.isclass(obj := getattr(module, name)) or inspect.isfunction(obj))
        and not (obj.__doc__ or "").strip()
    ]
    assert undocumented == []
