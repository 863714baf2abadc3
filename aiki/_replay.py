"""Replay with content-addressed memoization. Pure: no I/O, no trio, no clock.

On every resumption a workflow handler runs again from the top. Each task call is
identified by its *address*, ``name:sha256(canonical JSON of the input)``, and each
address holds an ordered queue of recorded outcomes (by occurrence, ``seq`` 0, 1, …).

- A call whose address has a recorded outcome consumes it: the task is not run again.
- A call with nothing recorded may run only if *no* recorded entries remain unconsumed;
  otherwise the code no longer matches the history and the run fails with
  `NonDeterminismError` naming the unconsumed entries, before any new side effect.

So reordering calls and removing calls are safe; inserting a call before recorded ones,
or changing a recorded call's input, is caught.
"""

from __future__ import annotations

import hashlib
from collections import deque
from typing import TYPE_CHECKING, Literal

import attrs
import orjson

from .errors import NonDeterminismError

if TYPE_CHECKING:
    from collections.abc import Iterable


def canonical_json(value: object) -> bytes:
    """Serialize ``value`` (JSON-compatible data) with sorted keys and no whitespace."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def task_address(name: str, input_json: object) -> str:
    """The content address of a task call: its name and the hash of its input."""
    return f"{name}:{hashlib.sha256(canonical_json(input_json)).hexdigest()}"


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
class NewCall:
    """A call with no recorded outcome: run the task, then record it under ``seq``."""

    address: str
    seq: int


class ReplayLog:
    """Matches one execution's task calls against the recorded history of the run."""

    def __init__(self, recorded: Iterable[RecordedTask]) -> None:
        self._queues: dict[str, deque[RecordedTask]] = {}
        self._next_seq: dict[str, int] = {}
        for task in sorted(recorded, key=lambda task: (task.address, task.seq)):
            self._queues.setdefault(task.address, deque()).append(task)
            self._next_seq[task.address] = max(self._next_seq.get(task.address, 0), task.seq + 1)

    def call(self, address: str) -> RecordedTask | NewCall:
        """Resolve the next call of ``address``.

        Returns:
            The recorded outcome to return without running the task, or a `NewCall`.

        Raises:
            NonDeterminismError: nothing is recorded for this call but other recorded
                calls were never consumed: the code diverged from the history.
        """
        queue = self._queues.get(address)
        if queue:
            return queue.popleft()
        if pending := self.unconsumed():
            raise NonDeterminismError(
                f"task call {address} has no recorded result, but recorded calls were not "
                f"replayed: {', '.join(f'{t.address}#{t.seq}' for t in pending)}. The workflow "
                "code changed in a way its history cannot replay (a call inserted before "
                "recorded ones, or a recorded call's input changed)",
                unconsumed=tuple(f"{t.address}#{t.seq}" for t in pending),
            )
        seq = self._next_seq.get(address, 0)
        self._next_seq[address] = seq + 1
        return NewCall(address=address, seq=seq)

    def unconsumed(self) -> list[RecordedTask]:
        """Recorded outcomes this execution has not (yet) asked for, in address order."""
        return [task for queue in self._queues.values() for task in queue]
