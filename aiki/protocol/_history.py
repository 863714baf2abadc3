"""What the server records of a run's steps, as workers receive it when they claim the run.

Each step has a replay *address* and an occurrence number ``seq`` (see `aiki.sdk` for
how addresses are formed and matched on replay). Pure data: the replay log that consumes
these records lives with the SDK.
"""

from __future__ import annotations

from typing import Literal, Protocol

import attrs
import orjson

from ..errors import ErrorInfo


def canonical_json(value: object) -> bytes:
    """Serialize ``value`` (JSON-compatible data) with sorted keys and no whitespace."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def wait_address(kind: str, key: str) -> str:
    """A wait: ``sleep:<name>``, ``event:<name>`` or ``wait:<child run ID>``."""
    return f"{'wait' if kind == 'child' else kind}:{key}"


class Step(Protocol):
    """A recorded step: where it is (address) and which occurrence (seq)."""

    @property
    def address(self) -> str:
        """The step's replay address."""
        ...

    @property
    def seq(self) -> int:
        """Its occurrence among steps with the same address."""
        ...


@attrs.frozen(kw_only=True)
class RecordedTask:
    """A task call's final outcome, as stored by the server."""

    address: str
    seq: int
    name: str
    state: Literal["completed", "failed"]
    output: object = None
    """The JSON output (for ``completed``)."""
    error: object = None
    """The JSON error details (for ``failed``)."""
    attempts: int = 1


@attrs.frozen(kw_only=True)
class RecordedWait:
    """A wait the run reached, and its state (``pending`` until the server resolves it)."""

    kind: Literal["sleep", "event", "child"]
    key: str
    seq: int
    state: Literal["pending", "completed", "cut_short", "timed_out", "withdrawn"]
    """``withdrawn``: the handler gave the wait up (the branch waiting was cancelled);
    it takes no event and wakes nothing."""
    result: object = None

    @property
    def address(self) -> str:
        """``sleep:<name>``, ``event:<name>`` or ``wait:<child run ID>``."""
        return wait_address(self.kind, self.key)


@attrs.frozen(kw_only=True)
class RecordedChild:
    """A child run this run started."""

    address: str
    seq: int
    run_id: str


@attrs.frozen(kw_only=True)
class Settled:
    """When a step settled in an execution: its outcome reached the handler, or the handler
    gave the step up (``withdrawn``), as the ``position``-th step of the run to settle.

    Replay delivers recorded outcomes in this order, one at a time, so that concurrent
    branches make the same decisions in every execution.
    """

    address: str
    seq: int
    position: int
    withdrawn: bool = False
    error: ErrorInfo | None = None
    """The step failed without a record of its own (a child start the server refused):
    the error its branch received."""
