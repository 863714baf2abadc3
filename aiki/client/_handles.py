"""Handles on runs and schedules started or looked up through a `Client`."""

from __future__ import annotations

import typing
from typing import TYPE_CHECKING, Final, Generic, TypeVar

import attrs

from ..errors import ErrorInfo, UnavailableError
from ..protocol import (
    TERMINAL,
    DeactivateSchedule,
    EventSent,
    GetRun,
    GetSchedule,
    PauseSchedule,
    ResumeSchedule,
    RunInfo,
    RunsStopped,
    RunStatus,
    RunTransitioned,
    RunUpdate,
    ScheduleDetails,
    ScheduleInfo,
    WaitRun,
    WokenUp,
)

if TYPE_CHECKING:
    from ..protocol import Request
    from ..sdk import WorkflowVersion
    from ._client import Client

O = TypeVar("O")

WAIT_SLICE_SECONDS: Final = 30.0
"""How long one long-poll request asks the server to hold it."""


@attrs.frozen(kw_only=True)
class RunResult(Generic[O]):
    """The outcome of `RunHandle.wait_for_status`.

    Attributes:
        success: the run reached the status waited for.
        status: the run's status now (a terminal one if ``success`` is False).
        run: everything the server knows about the run.
        output: the run's output as the declared type, once completed.
        error: why the run failed (type, message, traceback, cause), if it did.
    """

    success: bool
    status: RunStatus
    run: RunInfo
    output: O | None = None
    error: ErrorInfo | None = None


class RunHandle(Generic[O]):
    """A run started (or looked up) through a client."""

    def __init__(
        self,
        client: Client,
        run_id: str,
        version: WorkflowVersion[typing.Any, O] | None,
        *,
        info: RunInfo | None = None,
    ) -> None:
        self.client = client
        self.run_id = run_id
        self.version = version
        self.info = info
        """The run as last seen (after `refresh` or a wait)."""

    def __repr__(self) -> str:
        status = self.info.status if self.info else "?"
        return f"<aiki run {self.run_id} ({status})>"

    @property
    def events(self) -> HandleEvents:
        """The run's declared events: ``await handle.events.<name>.send(data)``."""
        return HandleEvents(self)

    async def cancel(self, *, reason: str = "cancelled") -> RunsStopped:
        """Cancel this run and its unfinished descendants."""
        return await self.client.cancel(self.run_id, reason=reason)

    async def pause(self, *, reason: str = "paused") -> RunsStopped:
        """Pause this run."""
        return await self.client.pause(self.run_id, reason=reason)

    async def resume(self) -> RunTransitioned:
        """Resume this paused run."""
        return await self.client.resume(self.run_id)

    async def wakeup(self) -> WokenUp:
        """Cut this run's pending sleeps short."""
        return await self.client.wakeup(self.run_id)

    async def refresh(self) -> RunInfo:
        """Fetch the run's current state."""
        self.info = await self.client.get_run(GetRun(run_id=self.run_id))
        return self.info

    async def wait_for_status(self, status: RunStatus) -> RunResult[O]:
        """Wait until the run reaches ``status``, or a terminal status that rules it out.

        The server pushes the run's changes over a WebSocket (`Client.watch`); nothing
        polls. Only if no WebSocket can be had does it fall back to long-polling (each
        request held by the server until the run changes). There is no timeout
        parameter: wrap the call in your own deadline.

        Raises:
            aiki.RunNotFoundError: the run does not exist.
            aiki.UnavailableError: the server could not be reached.
        """
        if self.client.can_push:
            try:
                return await self._wait_pushed(status)
            except UnavailableError:
                pass  # no WebSocket: long-poll instead
        return await self._wait_polled(status)

    async def _wait_pushed(self, status: RunStatus) -> RunResult[O]:
        async with self.client.watch(self.run_id) as updates:
            info = updates.runs[self.run_id]
            reached = info.status
            while not (reached == status or reached in TERMINAL):
                update = await updates.__anext__()
                assert isinstance(update, RunUpdate)  # no progress asked; resyncs itself
                reached = update.status
                if update.run is not None:
                    info = update.run  # the run as it ended
        if info.status != reached:  # reached a status on the way: read the run once
            info = await self.client.get_run(GetRun(run_id=self.run_id))
        self.info = info
        return self._result(info, success=reached == status)

    async def _wait_polled(self, status: RunStatus) -> RunResult[O]:
        while True:
            request = WaitRun(
                run_id=self.run_id, statuses=(status,), timeout_seconds=WAIT_SLICE_SECONDS
            )
            info = await self.client.call(request)
            self.info = info
            if info.status == status or info.status in TERMINAL:
                return self._result(info, success=info.status == status)

    def _result(self, info: RunInfo, *, success: bool) -> RunResult[O]:
        output: O | None = None
        if info.status == "completed":
            output = (
                self.version.output_type.from_json(info.output)
                if self.version
                else typing.cast("O", info.output)
            )
        return RunResult(
            success=success, status=info.status, run=info, output=output, error=info.error
        )


class HandleEvent:
    """One declared event of a run, seen from outside: `send` it."""

    def __init__(self, handle: RunHandle[typing.Any], name: str, definition: object) -> None:
        self._handle = handle
        self._name = name
        self._definition = definition

    async def send(self, data: object = None, *, reference_id: str | None = None) -> EventSent:
        """Send the event; a repeated ``reference_id`` is ignored (``duplicate`` is True).

        Raises:
            aiki.ValidationError: ``data`` does not fit the event's payload type.
            aiki.InvalidTransitionError: the run has ended.
        """
        payload = data
        if self._definition is not None:
            payload = self._definition.payload.to_json(data)  # type: ignore[attr-defined]
        return await self._handle.client.send_event(
            self._handle.run_id, self._name, payload, reference_id=reference_id
        )


class HandleEvents:
    """``handle.events.<name>``: typed with the handle's workflow version, raw otherwise."""

    def __init__(self, handle: RunHandle[typing.Any]) -> None:
        self._handle = handle

    def __getattr__(self, name: str) -> HandleEvent:
        version = self._handle.version
        if version is None:
            return HandleEvent(self._handle, name, None)
        definition = version.events.get(name)
        if definition is None:
            declared = ", ".join(sorted(version.events)) or "none"
            raise AttributeError(f"{version.workflow}@{version.version} declares no event "
                                 f"{name!r} (declared: {declared})")  # fmt: skip
        return HandleEvent(self._handle, name, definition)


class ScheduleHandle:
    """An activated schedule: inspect, pause, resume or deactivate it."""

    def __init__(
        self,
        client: Client,
        schedule_id: str,
        *,
        info: ScheduleInfo | None = None,
        created: bool = False,
    ) -> None:
        self.client = client
        self.id = schedule_id
        self.info = info
        """The schedule as last seen."""
        self.created = created
        """True if the activation that made this handle created the schedule."""

    def __repr__(self) -> str:
        status = self.info.status if self.info else "?"
        return f"<aiki schedule {self.id} ({status})>"

    async def describe(self, *, upcoming: int = 5, recent_runs: int = 10) -> ScheduleDetails:
        """The schedule with its next fire times and latest runs.

        Raises:
            aiki.ScheduleNotFoundError: there is no such schedule.
        """
        request = GetSchedule(schedule_id=self.id, upcoming=upcoming, recent_runs=recent_runs)
        details = await self.client.call(request)
        self.info = details.schedule
        return details

    async def refresh(self) -> ScheduleInfo:
        """Fetch the schedule's current state."""
        return (await self.describe(upcoming=0, recent_runs=0)).schedule

    async def pause(self) -> ScheduleInfo:
        """Stop firing until `resume` (occurrences meanwhile are not caught up)."""
        return await self._set(PauseSchedule(schedule_id=self.id))

    async def resume(self) -> ScheduleInfo:
        """Fire again, from the next occurrence after now."""
        return await self._set(ResumeSchedule(schedule_id=self.id))

    async def deactivate(self) -> ScheduleInfo:
        """Stop firing for good (its runs are not touched)."""
        return await self._set(DeactivateSchedule(schedule_id=self.id))

    async def _set(self, request: Request[ScheduleInfo]) -> ScheduleInfo:
        self.info = await self.client.call(request)
        return self.info
