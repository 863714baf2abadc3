"""The event loops task bodies run on, and the watchdog that notices a blocked one.

A worker runs workflow handlers on trio. Task bodies run where they were written for:
``@aiki.task`` (``loop="asyncio"``, the default) on an asyncio event loop the worker keeps
in a thread of its own, so asyncio libraries (aiohttp, asyncpg, ``redis.asyncio``…) work
unchanged; ``loop="trio"`` on the worker's trio loop itself (a little cheaper; trio
libraries); plain ``def`` tasks in a worker thread. anyio-based libraries (httpx) work on
either loop.

An ``async def`` body must not block its loop (``time.sleep``, a synchronous HTTP call, a
long computation): nothing else on that loop runs meanwhile. Each loop has a
`LoopWatchdog`, a thread that pings the loop and, when the ping goes unanswered, logs which
task attempt holds the loop and where; an attempt that held it past the limit fails with
`aiki.BlockingTaskError` (blocking code belongs in a plain ``def`` task).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import sys
import threading
import time
import typing
from typing import Any, Final, Literal, TypeVar

import attrs
import trio

if typing.TYPE_CHECKING:
    import types
    from collections.abc import Callable, Coroutine

T = TypeVar("T")
Loop = Literal["asyncio", "trio"]
"""Where an ``async def`` task body runs."""

logger = logging.getLogger(__name__)

CANCEL_GRACE_SECONDS: Final = 5.0
"""How long a cancelled asyncio body may take to unwind before it is abandoned."""
WARN_AFTER_SECONDS: Final = 1.0
"""A loop blocked this long is logged (and every `LOG_EVERY_SECONDS` after)."""
LOG_EVERY_SECONDS: Final = 5.0
CHECK_EVERY_SECONDS: Final = 0.25


@attrs.define
class Attempt:
    """One attempt of a task body, as the loop watchdog sees it (it writes the block)."""

    task: str
    run_id: str
    blocked_seconds: float = 0.0
    """How long this attempt blocked its loop, once past the watchdog's limit."""
    blocked_at: str = ""
    """Where the body was while it blocked (``file:line in function``)."""


async def marked(attempt: Attempt, body: Coroutine[Any, Any, T]) -> T:
    """Await ``body`` under a frame the watchdog recognises (it reads ``attempt`` from it)."""
    return await body


_MARK: Final = marked.__code__


def _culprit(thread_id: int) -> tuple[Attempt, str] | None:
    """The task attempt running on ``thread_id`` now, and where its body is."""
    frame: types.FrameType | None = sys._current_frames().get(thread_id)
    inner: types.FrameType | None = None
    while frame is not None:
        if frame.f_code is _MARK:
            attempt = frame.f_locals.get("attempt")
            if not isinstance(attempt, Attempt):
                return None
            where = frame if inner is None else inner
            code = where.f_code
            return attempt, f"{code.co_filename}:{where.f_lineno} in {code.co_name}"
        inner, frame = frame, frame.f_back
    return None


class LoopWatchdog:
    """A thread that pings an event loop and reports (and marks) the task attempt that
    keeps it from answering.

    Args:
        name: the loop's name in logs (``trio``, ``asyncio``).
        call_soon: schedules a callable on the loop from another thread.
        thread_id: the loop's thread (`threading.get_ident`).
        limit_seconds: an attempt blocking the loop this long is marked (it then fails).
    """

    def __init__(
        self,
        name: str,
        call_soon: Callable[[Callable[[], object]], object],
        thread_id: int,
        limit_seconds: float,
    ) -> None:
        self.name = name
        self._call_soon = call_soon
        self._thread_id = thread_id
        self._limit = limit_seconds
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._watch, name=f"aiki-{name}-watchdog",
                                        daemon=True)  # fmt: skip

    def start(self) -> None:
        """Start watching."""
        self._thread.start()

    def stop(self) -> None:
        """Stop watching (the thread ends within one check)."""
        self._stopped.set()

    def _watch(self) -> None:
        while not self._stopped.wait(CHECK_EVERY_SECONDS):
            answered = threading.Event()
            try:
                self._call_soon(answered.set)
            except (RuntimeError, trio.RunFinishedError):
                return  # the loop is gone
            if not answered.wait(WARN_AFTER_SECONDS):
                self._blocked(answered, time.monotonic() - WARN_AFTER_SECONDS)

    def _blocked(self, answered: threading.Event, since: float) -> None:
        log_at = WARN_AFTER_SECONDS
        culprit: tuple[Attempt, str] | None = None
        while True:
            seconds = time.monotonic() - since
            culprit = _culprit(self._thread_id) or culprit
            if culprit is not None and seconds >= self._limit:
                attempt, where = culprit
                attempt.blocked_seconds, attempt.blocked_at = seconds, where
            if seconds >= log_at:
                log_at += LOG_EVERY_SECONDS
                if culprit is None:
                    logger.warning("the %s event loop has been blocked for %.1f s", self.name,
                                   seconds)  # fmt: skip
                else:
                    attempt, where = culprit
                    logger.warning(
                        "the %s event loop has been blocked for %.1f s by task %r of run %s "
                        "(at %s): an async def task must not block; make blocking code a "
                        "plain def task (it runs in a thread)", self.name, seconds,
                        attempt.task, attempt.run_id, where, extra={"run_id": attempt.run_id},
                    )  # fmt: skip
            if answered.wait(CHECK_EVERY_SECONDS) or self._stopped.is_set():
                break
        logger.warning("the %s event loop answers again after %.1f s blocked", self.name,
                       time.monotonic() - since)  # fmt: skip


class AsyncioLoop:
    """An asyncio event loop in a thread of its own, watched by a `LoopWatchdog`: where
    ``loop="asyncio"`` task bodies run.

    Use `open_asyncio_loop`.
    """

    def __init__(self, limit_seconds: float) -> None:
        self._limit = limit_seconds
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="aiki-asyncio", daemon=True)
        self._watchdog: LoopWatchdog | None = None

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.call_soon(self._ready.set)
        try:
            self._loop.run_forever()
        finally:
            with contextlib.suppress(RuntimeError):
                pending = asyncio.all_tasks(self._loop)
                for task in pending:
                    task.cancel()
                self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            self._loop.close()

    def start(self) -> None:
        """Start the loop's thread and its watchdog."""
        self._thread.start()
        self._ready.wait()
        assert self._thread.ident is not None
        self._watchdog = LoopWatchdog("asyncio", self._loop.call_soon_threadsafe,
                                      self._thread.ident, self._limit)  # fmt: skip
        self._watchdog.start()

    def stop(self) -> None:
        """Stop the loop (bodies still running there are cancelled) and its watchdog."""
        if self._watchdog is not None:
            self._watchdog.stop()
        with contextlib.suppress(RuntimeError):  # already closed
            self._loop.call_soon_threadsafe(self._loop.stop)

    async def run(self, body: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Run ``body()`` on the asyncio loop with the caller's context variables, and
        return (or raise) what it does.

        Cancellation reaches the body: it is cancelled (``asyncio.CancelledError``) and
        given `CANCEL_GRACE_SECONDS` to unwind before it is abandoned.
        """
        token = trio.lowlevel.current_trio_token()
        done = trio.Event()
        started: list[asyncio.Task[T]] = []
        context = contextvars.copy_context()

        def finished(_task: object) -> None:
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(done.set)

        def start() -> None:
            task = self._loop.create_task(body(), context=context)
            started.append(task)
            task.add_done_callback(finished)

        def cancel() -> None:
            started[0].cancel()

        self._loop.call_soon_threadsafe(start)
        try:
            await done.wait()
        finally:
            if not done.is_set():
                self._loop.call_soon_threadsafe(cancel)
                with trio.move_on_after(CANCEL_GRACE_SECONDS, shield=True):
                    await done.wait()
        task = started[0]
        if task.cancelled():
            raise RuntimeError("the task body was cancelled on its asyncio loop")
        return task.result()


@contextlib.asynccontextmanager
async def open_asyncio_loop(limit_seconds: float) -> typing.AsyncIterator[AsyncioLoop]:
    """An `AsyncioLoop` for the block: started on entry, stopped on exit."""
    loop = AsyncioLoop(limit_seconds)
    await trio.to_thread.run_sync(loop.start)
    try:
        yield loop
    finally:
        loop.stop()


@contextlib.contextmanager
def watching_trio(limit_seconds: float) -> typing.Iterator[LoopWatchdog]:
    """A `LoopWatchdog` on the current trio loop for the block."""
    token = trio.lowlevel.current_trio_token()
    watchdog = LoopWatchdog("trio", token.run_sync_soon, threading.get_ident(), limit_seconds)
    watchdog.start()
    try:
        yield watchdog
    finally:
        watchdog.stop()
