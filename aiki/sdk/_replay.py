"""Replay with content-addressed memoization. Pure: no I/O, no trio, no clock.

On every resumption a workflow handler runs again from the top. Each *step* it takes
(a task call, a child start, a sleep, an event wait, a wait for a child) is identified
by its *address*, and each address holds an ordered queue of recorded outcomes (by
occurrence, ``seq`` 0, 1, …). Addresses:

- task call: ``task:<name>:<sha256 of the canonical JSON input>``;
- child start: ``child:<workflow>@<version>:<reference ID, or sha256 of the input>``;
- sleep: ``sleep:<name>``; event wait: ``event:<name>``; wait for a child: ``wait:<run ID>``.

- A step whose address has a recorded outcome consumes it: a task is not run again, a
  child is not started again, a wait resumes where it was.
- A step with nothing recorded may run only if *no* recorded entries remain unconsumed;
  otherwise the code no longer matches the history and the run fails with
  `NonDeterminismError` naming the unconsumed entries, before any new side effect.

So reordering calls and removing calls are safe; inserting a call before recorded ones,
or changing a recorded call's input, is caught.
"""

from __future__ import annotations

import hashlib
from collections import deque
from typing import TYPE_CHECKING, TypeVar

import attrs

from ..errors import NonDeterminismError
from ..protocol import Step, canonical_json

if TYPE_CHECKING:
    from collections.abc import Iterable

S = TypeVar("S", bound=Step)


def _digest(value: object) -> str:
    return hashlib.sha256(canonical_json(value)).hexdigest()


def task_address(name: str, input_json: object) -> str:
    """The content address of a task call: its name and the hash of its input."""
    return f"task:{name}:{_digest(input_json)}"


def child_address(workflow: str, version: str, reference_id: str | None, input_json: object) -> str:
    """A child start: by its reference ID if it has one, else by its input."""
    key = f"ref:{reference_id}" if reference_id is not None else _digest(input_json)
    return f"child:{workflow}@{version}:{key}"


@attrs.frozen(kw_only=True)
class NewCall:
    """A call with no recorded outcome: run the task, then record it under ``seq``."""

    address: str
    seq: int


class ReplayLog:
    """Matches one execution's steps against the recorded history of the run."""

    def __init__(self, recorded: Iterable[Step]) -> None:
        self._queues: dict[str, deque[Step]] = {}
        self._next_seq: dict[str, int] = {}
        for task in sorted(recorded, key=lambda task: (task.address, task.seq)):
            self._queues.setdefault(task.address, deque()).append(task)
            self._next_seq[task.address] = max(self._next_seq.get(task.address, 0), task.seq + 1)

    def call(self, address: str, kind: type[S]) -> S | NewCall:
        """Resolve the next step at ``address``, recorded as a ``kind``.

        Returns:
            The recorded step, or a `NewCall`.

        Raises:
            NonDeterminismError: nothing is recorded for this call but other recorded
                calls were never consumed: the code diverged from the history (or what
                is recorded at the address is not a ``kind``).
        """
        queue = self._queues.get(address)
        if queue:
            step = queue.popleft()
            if not isinstance(step, kind):
                raise NonDeterminismError(
                    f"step {address}#{step.seq} was recorded as {type(step).__name__}, "
                    f"not {kind.__name__}",
                    unconsumed=(f"{address}#{step.seq}",),
                )
            return step
        if pending := self.unconsumed():
            raise NonDeterminismError(
                f"step {address} has no recorded result, but recorded steps were not "
                f"replayed: {', '.join(f'{t.address}#{t.seq}' for t in pending)}. The workflow "
                "code changed in a way its history cannot replay (a step inserted before "
                "recorded ones, or a recorded call's input changed)",
                unconsumed=tuple(f"{t.address}#{t.seq}" for t in pending),
            )
        seq = self._next_seq.get(address, 0)
        self._next_seq[address] = seq + 1
        return NewCall(address=address, seq=seq)

    def unconsumed(self) -> list[Step]:
        """Recorded steps this execution has not (yet) reached, in address order."""
        return [task for queue in self._queues.values() for task in queue]
