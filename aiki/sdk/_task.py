"""Tasks: the units of work a workflow calls, each run at most until it succeeds once.

::

    @aiki.task(retry=aiki.retry.fixed(3, delay_seconds=1))
    async def charge(order: Order) -> str: ...

    # inside a workflow handler:
    charge_id = await charge.start(run, order)

A task takes at most one input (its first parameter) and returns one output; both are
typed by annotations and travel as JSON. ``async def`` bodies run on an asyncio event loop
(``loop="asyncio"``, the default: asyncio libraries work) or on the worker's trio loop
(``loop="trio"``); plain ``def`` bodies run in a worker thread (see `aiki.sdk._loops`). A
task's
*name* (default: the function's name) is part of its replay address: keep it stable
while runs that called it are in flight.
"""

from __future__ import annotations

import asyncio
import inspect
import typing
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

import trio

from ..retry import NEVER, RetryPolicy
from ._loops import AsyncioLoop, Attempt, Loop, marked
from ._payload import PayloadType, declared_output
from ._steps import Step

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Coroutine

    from ._run_context import Run

I = TypeVar("I")
O = TypeVar("O")


def _io_types(fn: Callable[..., object], what: str) -> tuple[object, object]:
    """The declared input (first parameter) and output types of ``fn``."""
    hints = typing.get_type_hints(fn)
    parameters = list(inspect.signature(fn).parameters.values())
    if len(parameters) > 1:
        raise TypeError(f"{what} takes at most one input parameter, got {len(parameters)}")
    input_type: object = None
    if parameters:
        name = parameters[0].name
        if name not in hints:
            raise TypeError(f"{what}: annotate the input parameter {name!r} with its type")
        input_type = hints[name]
    return input_type, declared_output(hints, what)


class Task(Generic[I, O]):
    """A task definition. Call it from a workflow with ``await task.start(run, input)``."""

    def __init__(
        self,
        fn: Callable[..., object],
        *,
        name: str,
        retry: RetryPolicy,
        timeout_seconds: float | None = None,
        loop: Loop = "asyncio",
    ) -> None:
        if timeout_seconds is not None and timeout_seconds <= 0:
            raise ValueError(f"timeout_seconds must be positive, got {timeout_seconds}")
        if loop not in ("asyncio", "trio"):
            raise ValueError(f"loop must be 'asyncio' or 'trio', got {loop!r}")
        self.fn = fn
        self.loop = loop
        self.name = name
        self.retry = retry
        self.timeout_seconds = timeout_seconds
        self.is_async = inspect.iscoroutinefunction(fn)
        input_type, output_type = _io_types(fn, f"task {name!r}")
        self.takes_input = bool(inspect.signature(fn).parameters)
        self.input_type: PayloadType[I] = PayloadType(input_type, f"input of task {name!r}")
        self.output_type: PayloadType[O] = PayloadType(output_type, f"output of task {name!r}")

    def start(self, run: Run[Any], input: I = None) -> Step[O]:  # type: ignore[assignment]
        """Run this task as part of ``run``, or return its recorded result on replay
        (await it: a step not awaited never runs, and fails the run).

        Raises:
            aiki.TaskFailedError: the task failed for good (retries exhausted or
                non-retryable); ``cause`` describes the failure.
            aiki.NonDeterminismError: the call does not match the run's history.
            aiki.ValidationError: ``input`` does not fit the task's input type.
        """
        return Step(run._call_task(self, input), f"{self.name}.start(run, ...)",
                    run._unawaited, 1)  # fmt: skip

    async def invoke(
        self,
        input_value: I,
        *,
        attempt: Attempt | None = None,
        asyncio_loop: AsyncioLoop | None = None,
    ) -> O:
        """Run the function once (no replay, no retries): an async body on its loop
        (``asyncio_loop``, or a fresh asyncio loop in a thread if None), a sync body in a
        thread. ``attempt`` is what the loop watchdog marks if the body blocks its loop.

        Cancellation: an async body is cancelled; a sync body's thread is left to finish
        on its own (its result is dropped).
        """
        args = (input_value,) if self.takes_input else ()
        if self.is_async:
            attempt = attempt or Attempt(self.name, run_id="")
            fn = typing.cast("Callable[..., Coroutine[Any, Any, O]]", self.fn)
            if self.loop == "trio":
                return await marked(attempt, fn(*args))
            if asyncio_loop is not None:
                return await asyncio_loop.run(lambda: marked(attempt, fn(*args)))
            return await trio.to_thread.run_sync(
                asyncio.run, marked(attempt, fn(*args)), abandon_on_cancel=True
            )
        # Abandoned on cancel: a blocked sync body must not hold up a cancel or a shutdown.
        # The run is given back and may run this task again (tasks are at-least-once).
        return await trio.to_thread.run_sync(
            lambda: typing.cast("O", self.fn(*args)), abandon_on_cancel=True
        )

    def __repr__(self) -> str:
        return f"<aiki task {self.name!r}>"


@overload
def task(fn: Callable[[I], Awaitable[O]], /) -> Task[I, O]: ...
@overload
def task(fn: Callable[[I], O], /) -> Task[I, O]: ...
@overload
def task(fn: Callable[[], Awaitable[O]], /) -> Task[None, O]: ...
@overload
def task(
    *,
    name: str | None = None,
    retry: RetryPolicy = NEVER,
    timeout_seconds: float | None = None,
    loop: Loop = "asyncio",
) -> Callable[[Callable[..., object]], Task[typing.Any, typing.Any]]: ...


def task(
    fn: Callable[..., object] | None = None,
    /,
    *,
    name: str | None = None,
    retry: RetryPolicy = NEVER,
    timeout_seconds: float | None = None,
    loop: Loop = "asyncio",
) -> Task[typing.Any, typing.Any] | Callable[[Callable[..., object]], Task[typing.Any, typing.Any]]:
    """Declare a task: ``@aiki.task`` or ``@aiki.task(name="charge", retry=...)``.

    Args:
        name: the stable name used in replay addresses (default: the function's name).
        retry: how failed attempts are retried (default: never).
        timeout_seconds: cancel an attempt running longer; it counts as a failed attempt
            (`aiki.TaskTimeoutError`), retried per ``retry``. Each attempt gets the full time.
        loop: where an ``async def`` body runs: ``"asyncio"`` (default; asyncio libraries
            such as aiohttp, asyncpg, ``redis.asyncio`` work) or ``"trio"`` (the worker's
            own loop; trio libraries, and a little less overhead). anyio-based libraries
            (httpx) work on both. Ignored for plain ``def`` bodies (they run in a thread).

    Raises:
        TypeError: the function takes more than one parameter, lacks annotations (its
            input's, or its return type: ``-> None`` if it returns nothing), or declares a
            type that cannot travel as JSON.
        ValueError: ``loop`` is neither ``"asyncio"`` nor ``"trio"``.
    """

    def decorate(function: Callable[..., object]) -> Task[typing.Any, typing.Any]:
        return Task(function, name=name or function.__name__, retry=retry,
                    timeout_seconds=timeout_seconds, loop=loop)  # fmt: skip

    return decorate(fn) if fn is not None else decorate
