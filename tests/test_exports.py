"""The public surface of each package is pinned: changing it is a deliberate act."""

from __future__ import annotations

import ast
import importlib
import inspect
import subprocess
import sys

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
        "ConcurrencyLimit",
        "Client",
        "ConflictError",
        "ErrorInfo",
        "EventDefinition",
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
        "LocalServiceError",
        "MigrationError",
        "StorageConflictError",
        "StorageError",
        "StorageTimeoutError",
        "StorageUnavailableError",
        "StreamError",
        "StreamUnavailableError",
        "TransportError",
        "UniqueViolationError",
        "WebSocketError",
    ],
    "aiki.wire": ["CodecError", "WireCodec", "make_wire_converter"],
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


DRIVERS = ("psycopg", "redis", "hypercorn", "trio_websocket", "starlette", "websockets")


def _loaded_after(statement: str) -> list[str]:
    """The driver modules a fresh interpreter has loaded after running ``statement``."""
    wanted = set(DRIVERS)
    probe = (f"import sys; {statement}; "
             f"print(sorted(m for m in sys.modules if m.split('.')[0] in {wanted!r}))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True,
                         text=True, timeout=60).stdout  # fmt: skip
    return list(ast.literal_eval(out.strip()))


def test_an_application_that_only_starts_runs_loads_no_driver() -> None:
    """``import aiki`` and ``aiki.Client`` load the wire and the client only: no database,
    Redis, server or WebSocket library until the client first connects (and then the one
    for the running event loop)."""
    assert _loaded_after("import aiki; aiki.Client") == []


def test_the_worker_is_a_name_loaded_when_first_used() -> None:
    assert "redis" in {name.split(".")[0] for name in _loaded_after("import aiki; aiki.Worker")}
