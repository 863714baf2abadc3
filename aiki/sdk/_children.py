"""Child runs, as their parent's handler sees them: start with
``version.start_as_child(run, input)``, then ``await child.wait_for_status("completed")``."""

from __future__ import annotations

import typing
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar

import attrs

from ..errors import ErrorInfo
from ..protocol import TERMINAL, RunStatus, is_status
from ..wire import make_wire_converter
from ._event import TimedOut
from ._steps import Seconds, Step, seconds_of

if TYPE_CHECKING:
    from ._run_context import Run
    from ._workflow import WorkflowVersion

O = TypeVar("O")

_CONVERT: Final = make_wire_converter()


@attrs.frozen(kw_only=True)
class ChildResult(Generic[O]):
    """How a child run ended, as seen by its parent.

    Attributes:
        success: the child reached the status waited for.
        status: the child's terminal status.
        output: its output (declared type), if it completed.
        error: why it failed, if it did.
    """

    success: bool
    status: RunStatus
    output: O | None = None
    error: ErrorInfo | None = None


class ChildRun(Generic[O]):
    """A child run started by a workflow. Wait for it with `wait_for_status`."""

    def __init__(self, parent: Run[Any], run_id: str, version: WorkflowVersion[Any, O]) -> None:
        self._parent = parent
        self.run_id = run_id
        self.version = version

    def __repr__(self) -> str:
        return f"<aiki child run {self.run_id} of {self.version.workflow}@{self.version.version}>"

    @typing.overload
    def wait_for_status(self, status: RunStatus) -> Step[ChildResult[O]]: ...
    @typing.overload
    def wait_for_status(
        self, status: RunStatus, *, timeout: Seconds
    ) -> Step[ChildResult[O] | TimedOut]: ...

    def wait_for_status(
        self, status: RunStatus, *, timeout: Seconds | None = None
    ) -> Step[ChildResult[O]] | Step[ChildResult[O] | TimedOut]:
        """Suspend the parent until the child ends; report whether it ended in ``status``
        (await it).

        Args:
            status: a terminal status (completed, failed, cancelled).
            timeout: give up after this long (durably) and return `aiki.TimedOut`.

        Raises:
            ValueError: ``status`` is not terminal.
        """
        if status not in TERMINAL:
            raise ValueError(f"a parent can wait for a terminal status, not {status!r}")
        label = f"child.wait_for_status({status!r})"
        return Step(self._wait_for(status, timeout), label, self._parent._unawaited, 1)

    async def _wait_for(
        self, status: RunStatus, limit: Seconds | None
    ) -> ChildResult[O] | TimedOut:
        record = await self._parent._wait("child", self.run_id, seconds_of(limit))
        if record.state == "timed_out":
            return TimedOut()
        outcome = record.result if isinstance(record.result, dict) else {}
        ended = outcome.get("status")
        if not isinstance(ended, str) or not is_status(ended):
            raise TypeError(f"a child's recorded outcome has no status: {outcome!r}")
        output = None
        if ended == "completed":
            output = self.version.output_type.from_json(outcome.get("output"))
        error = outcome.get("error")
        return ChildResult(
            success=ended == status,
            status=ended,
            output=output,
            error=None if error is None else _CONVERT.structure(error, ErrorInfo),
        )
