"""Public errors of the Aiki SDK. Every error Aiki raises to users derives from `AikiError`.

Errors returned by the server carry a stable ``code`` (also in the HTTP body), and the
client raises the matching class below, so applications catch types, not strings.
"""

from __future__ import annotations

import traceback
from typing import ClassVar, Final

import attrs


@attrs.define(auto_exc=True)
class AikiError(Exception):
    """Base class of every error the Aiki SDK raises."""

    message: str

    code: ClassVar[str] = "error"
    """Stable identifier of the error kind, as sent by the server."""
    http_status: ClassVar[int] = 500

    def __str__(self) -> str:
        return self.message


@attrs.define(auto_exc=True)
class NonRetryableError(AikiError):
    """Raise this (or a subclass) from a task or workflow to fail it without retrying.

    Any exception with a truthy ``non_retryable`` attribute is treated the same way.
    """

    code: ClassVar[str] = "non_retryable"


@attrs.define(auto_exc=True)
class ValidationError(AikiError, ValueError):
    """A payload does not fit its declared type, or a request is malformed.

    ``errors`` lists each problem with its path, e.g. ``"expected int @ $.quantity"``.
    Nothing was stored.
    """

    errors: tuple[str, ...] = ()

    code: ClassVar[str] = "validation_error"
    http_status: ClassVar[int] = 422


@attrs.define(auto_exc=True)
class BadRequestError(ValidationError):
    """The request itself is malformed (not JSON, unknown operation, missing fields)."""

    code: ClassVar[str] = "bad_request"
    http_status: ClassVar[int] = 400


@attrs.define(auto_exc=True)
class PayloadTooLargeError(ValidationError):
    """A request or payload exceeds the server's size limit."""

    code: ClassVar[str] = "payload_too_large"
    http_status: ClassVar[int] = 413


@attrs.define(auto_exc=True)
class NotFoundError(AikiError, LookupError):
    """Something named in a request does not exist."""

    code: ClassVar[str] = "not_found"
    http_status: ClassVar[int] = 404


@attrs.define(auto_exc=True)
class WorkflowNotFoundError(NotFoundError):
    """No worker has registered this workflow version, so runs of it cannot be started."""

    code: ClassVar[str] = "workflow_not_found"


@attrs.define(auto_exc=True)
class RunNotFoundError(NotFoundError):
    """No run has this ID (or reference ID)."""

    code: ClassVar[str] = "run_not_found"


@attrs.define(auto_exc=True)
class ScheduleNotFoundError(NotFoundError):
    """No schedule has this ID (or reference ID)."""

    code: ClassVar[str] = "schedule_not_found"


@attrs.define(auto_exc=True)
class ConflictError(AikiError):
    """The request conflicts with the current state."""

    code: ClassVar[str] = "conflict"
    http_status: ClassVar[int] = 409


@attrs.define(auto_exc=True)
class ReferenceConflictError(ConflictError):
    """A run with this reference ID exists with a different input (conflict policy ``error``).

    ``run_id`` is the existing run.
    """

    run_id: str = ""

    code: ClassVar[str] = "reference_conflict"


@attrs.define(auto_exc=True)
class LimitReachedError(ConflictError):
    """A start was refused: a concurrency limit declared with ``on_limit="refuse"`` has as
    many runs of the start's key as it allows (nothing was stored).

    ``run_id`` is the run of that key that holds (or waits for) the slot longest.
    """

    run_id: str = ""

    code: ClassVar[str] = "limit_reached"


@attrs.define(auto_exc=True)
class ScheduleConflictError(ConflictError):
    """A live schedule with this reference ID has a different definition (conflict policy
    ``error``). Deactivate it first to replace it: definitions are immutable."""

    code: ClassVar[str] = "schedule_conflict"


@attrs.define(auto_exc=True)
class StaleRevisionError(ConflictError):
    """A write carried a revision the run no longer has: another owner took over (fencing)."""

    code: ClassVar[str] = "stale_revision"


@attrs.define(auto_exc=True)
class InvalidTransitionError(ConflictError):
    """The run's state machine does not allow this transition from its current status."""

    code: ClassVar[str] = "invalid_transition"


@attrs.define(auto_exc=True)
class UnauthenticatedError(AikiError):
    """The server needs an API key and got none, or one it does not know, or one that was
    revoked or has expired (``Authorization: Bearer aiki_...``; `aiki.Client`'s
    ``api_key``, ``AIKI_API_KEY``)."""

    code: ClassVar[str] = "unauthenticated"
    http_status: ClassVar[int] = 401


@attrs.define(auto_exc=True)
class ForbiddenError(AikiError):
    """The caller may not do this: its key's role does not allow the operation, or a worker
    operation comes from something that is not the worker holding the run (a client,
    plain HTTP, another worker)."""

    code: ClassVar[str] = "forbidden"
    http_status: ClassVar[int] = 403


class VersionConflictError(ConflictError):
    """A workflow version was registered before with another input or event schema.
    Versions are immutable: register the changed code as a new version."""

    code: ClassVar[str] = "version_conflict"


class UnavailableError(AikiError):
    """The server or its storage is temporarily unavailable. Retry later."""

    code: ClassVar[str] = "unavailable"
    http_status: ClassVar[int] = 503


@attrs.define(auto_exc=True)
class RateLimitedError(UnavailableError):
    """The API key made more requests than its quota allows (the server's
    ``--key-requests-per-second``): retry after ``retry_after_seconds``. Clients and
    workers that retry `aiki.UnavailableError` retry this too."""

    retry_after_seconds: float = 1.0
    """When a request of this key will be taken again."""

    code: ClassVar[str] = "rate_limited"
    http_status: ClassVar[int] = 429


class PushUnavailableError(AikiError):
    """Live updates cannot be had from this client as it is used (raised by the SDK:
    under trio, a `aiki.Client` outside ``async with`` has no WebSocket session)."""

    code: ClassVar[str] = "push_unavailable"
    http_status: ClassVar[int] = 400


@attrs.define(auto_exc=True)
class NonDeterminismError(NonRetryableError):
    """Replay found the workflow code no longer matches the run's recorded history.

    ``unconsumed`` names the recorded steps (``address#seq``) the code did not reach (or
    the step it gave up that the history had delivered).
    """

    unconsumed: tuple[str, ...] = ()

    code: ClassVar[str] = "non_determinism"


@attrs.define(auto_exc=True)
class TaskFailedError(AikiError):
    """A task failed for good (retries exhausted or non-retryable).

    Raised from the task call inside the workflow; ``cause`` describes the last failure.
    """

    task: str = ""
    attempts: int = 0
    cause: ErrorInfo | None = None

    code: ClassVar[str] = "task_failed"


@attrs.define(auto_exc=True)
class TaskTimeoutError(AikiError):
    """A task attempt ran past its ``timeout_seconds`` and was cancelled (a failed attempt)."""

    code: ClassVar[str] = "task_timeout"


@attrs.define(auto_exc=True)
class RunTimeoutError(AikiError):
    """A run did not end within its ``timeout_seconds``; the server failed it."""

    code: ClassVar[str] = "run_timeout"


@attrs.define(auto_exc=True)
class TaskOutputError(ValidationError):
    """A task returned a value that does not have its declared return type (a ``set`` for
    ``-> list[str]``, a ``bool`` for ``-> int``…); ``errors`` say where. Not retried."""

    code: ClassVar[str] = "task_output"
    non_retryable: ClassVar[bool] = True


@attrs.define(auto_exc=True)
class BlockingTaskError(AikiError):
    """An ``async def`` task body blocked its event loop past the worker's limit
    (``time.sleep``, synchronous I/O, a long computation): nothing else on that loop ran
    meanwhile. Not retried: make blocking code a plain ``def`` task (it runs in a thread)."""

    code: ClassVar[str] = "blocking_task"
    non_retryable: ClassVar[bool] = True


@attrs.define(auto_exc=True)
class UnawaitedStepError(AikiError):
    """A workflow handler made a durable step (``run.sleep(...)``, ``task.start(...)``…)
    and never awaited it, so it never happened; the message names the step and its line.
    Not retried: the code needs an ``await``."""

    code: ClassVar[str] = "unawaited_step"
    non_retryable: ClassVar[bool] = True


@attrs.define(auto_exc=True)
class ExecutionsLostError(AikiError):
    """A run's execution was lost too many times (its worker died or was declared dead
    while running it, ``aiki server --max-lost-executions`` times); the server failed it
    rather than queue it again."""

    code: ClassVar[str] = "executions_lost"


@attrs.frozen(kw_only=True)
class ErrorInfo:
    """Why a run or task failed: the exception type, its message, and more.

    Attributes:
        type: the exception's qualified class name, e.g. ``"payments.CardDeclined"``.
        message: ``str(exception)``.
        traceback: the formatted traceback from the worker, if any.
        non_retryable: whether the failure stopped retries by itself.
        code: the Aiki error code for Aiki's own errors (e.g. ``"non_determinism"``).
        cause: the underlying failure, e.g. the task failure that failed the run.
    """

    type: str
    message: str
    traceback: str | None = None
    non_retryable: bool = False
    code: str | None = None
    cause: ErrorInfo | None = None


ERRORS_BY_CODE: dict[str, type[AikiError]] = {
    cls.code: cls
    for cls in (
        AikiError,
        ValidationError,
        BadRequestError,
        PayloadTooLargeError,
        NotFoundError,
        WorkflowNotFoundError,
        RunNotFoundError,
        ScheduleNotFoundError,
        ConflictError,
        ReferenceConflictError,
        LimitReachedError,
        ScheduleConflictError,
        StaleRevisionError,
        InvalidTransitionError,
        VersionConflictError,
        UnauthenticatedError,
        ForbiddenError,
        UnavailableError,
        RateLimitedError,
    )
}
"""The exception class the client raises for each server error code."""


MAX_TRACEBACK_CHARS: Final = 16_000
MAX_MESSAGE_CHARS: Final = 8_000
MAX_CAUSES: Final = 8
"""How long a chain of causes is kept (the rest is cut)."""

_CONTROLS: Final = {code: "?" for code in (*range(32), 127) if chr(code) not in "\n\r\t"}


def error_info(error: BaseException, *, depth: int = 0) -> ErrorInfo:
    """Describe ``error`` for storage: type, message, traceback, retryability, cause.

    The message and traceback are cut to `MAX_MESSAGE_CHARS` and `MAX_TRACEBACK_CHARS`,
    control characters other than line breaks and tabs become ``?``, and at most
    `MAX_CAUSES` causes are kept: whatever an exception says, its record fits the bounds
    the server holds every request to.
    """
    cls = type(error)
    name = (
        cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    )
    trace = "".join(traceback.format_exception(error))[-MAX_TRACEBACK_CHARS:]
    cause: ErrorInfo | None = None
    if isinstance(error, TaskFailedError):
        cause = error.cause
    elif error.__cause__ is not None and depth < MAX_CAUSES:
        cause = error_info(error.__cause__, depth=depth + 1)
    return ErrorInfo(
        type=name[:1024],
        message=str(error)[:MAX_MESSAGE_CHARS].translate(_CONTROLS),
        traceback=trace.translate(_CONTROLS),
        non_retryable=not is_retryable(error),
        code=error.code if isinstance(error, AikiError) else None,
        cause=cause,
    )


def is_retryable(error: BaseException) -> bool:
    """False for `NonRetryableError`, exceptions flagged ``non_retryable``, and task failures
    whose cause was itself non-retryable."""
    if isinstance(error, NonRetryableError) or getattr(error, "non_retryable", False):
        return False
    if isinstance(error, TaskFailedError) and error.cause is not None:
        return not error.cause.non_retryable
    return True


def error_from_reply(
    code: str,
    message: str,
    *,
    errors: tuple[str, ...] = (),
    run_id: str | None = None,
    retry_after_seconds: float | None = None,
) -> AikiError:
    """The exception for a server error reply, by its code (unknown codes: `AikiError`)."""
    cls = ERRORS_BY_CODE.get(code, AikiError)
    if issubclass(cls, RateLimitedError):
        return cls(message, retry_after_seconds=retry_after_seconds or 1.0)
    if issubclass(cls, (ReferenceConflictError, LimitReachedError)):
        return cls(message, run_id=run_id or "")
    if issubclass(cls, ValidationError):
        return cls(message, errors=errors)
    return cls(message)
