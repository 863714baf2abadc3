"""Wire types of flow control: concurrency limits as a workflow version declares them,
and the key a run takes from its input.

A version names the limits its runs need (`ConcurrencyLimit`). Each limit has a name
(several workflows may share one, e.g. one per downstream API) and a key: a path into the
run's input (``customer_id``, ``order.account.id``), or none for one limit over all runs.
The server evaluates the key when a run starts (`limit_key`), however it starts (the SDK,
plain HTTP, a parent, a schedule, a retry), so every run is limited the same way.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import TYPE_CHECKING, Final, Literal

import attrs

from ._operation import ADMINS, READERS, Request, declare

if TYPE_CHECKING:
    from collections.abc import Sequence

OnLimit = Literal["wait", "refuse", "cancel_running"]
"""What a start over the limit does: wait for a slot (first come, first served within a
key), be refused (the start answers with the run that holds the slot), or cancel the
running run of the key in favour of the new one (the latest wins)."""

Holds = Literal["executing", "open"]
"""What holds a slot: the run while a worker executes it (a sleeping or waiting run frees
it), or for the run's whole open life (one open run per key: a mutex)."""

MAX_KEY_DEPTH: Final = 8
"""Parts a key path may have."""
MAX_KEY_LENGTH: Final = 256
"""Characters a key may have (a longer value is refused at start)."""
_PART: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,63}|\d{1,6}")
_NAME: Final = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")


@attrs.frozen(kw_only=True)
class ConcurrencyLimit:
    """A concurrency limit a workflow version's runs take a slot of."""

    name: str
    """Shared by every version that names it, in the namespace. Its numbers are those of
    the latest registration that declared other numbers (or an operator's change since)."""
    key: str | None = None
    """A path into the input, parts joined by dots (``customer_id``, ``items.0.sku``);
    None: one key for every run."""
    per_key: int
    """Runs of one key holding a slot at once, at most."""
    total: int | None = None
    """Runs holding a slot at once over all keys, at most (None: no bound)."""
    on_limit: OnLimit = "wait"
    holds: Holds = "executing"


def limit_name_problem(name: str) -> str | None:
    """What is wrong with ``name`` as a limit's name (None: nothing)."""
    if not _NAME.fullmatch(name):
        return ("a limit's name is 1 to 64 of a-z, 0-9, '_', '.', '-', starting with a "
                "letter or digit")  # fmt: skip
    return None


def key_path_problem(path: str) -> str | None:
    """What is wrong with ``path`` as a limit's key path (None: nothing)."""
    parts = path.split(".")
    if len(parts) > MAX_KEY_DEPTH:
        return f"a key path has at most {MAX_KEY_DEPTH} parts"
    for part in parts:
        if not _PART.fullmatch(part):
            return f"{part!r} is not a field name or a list index"
    return None


class LimitKeyError(ValueError):
    """The run's input has no usable key for a limit: the start is refused."""

    def __init__(self, message: str, path: str) -> None:
        super().__init__(message)
        self.path = path
        """Where in the input the key was looked for (``$.customer.id``)."""


def limit_key(limit: ConcurrencyLimit, payload: object) -> str:
    """The key of ``limit`` for a run whose input is ``payload`` (JSON data).

    The value at the key path must be a string, an integer or a boolean (a key names one
    customer, account or tenant); it is the key as text (``true``, ``42``, ``acct-7``).

    Raises:
        LimitKeyError: the path does not lead to such a value (the message names the path).
    """
    if limit.key is None:
        return ""
    node = payload
    walked = "$"
    for part in limit.key.split("."):
        walked += f".{part}" if not part.isdigit() else f"[{part}]"
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise LimitKeyError(f"limit {limit.name!r} takes its key from {walked}, which the "
                                "input does not have", walked)  # fmt: skip
    if isinstance(node, bool):
        text = "true" if node else "false"
    elif isinstance(node, (int, str)):
        text = str(node)
    else:
        raise LimitKeyError(f"limit {limit.name!r} takes its key from {walked}: a string, an "
                            f"integer or a boolean, not {type(node).__name__}", walked)  # fmt: skip
    if len(text) > MAX_KEY_LENGTH:
        raise LimitKeyError(f"limit {limit.name!r}: the key at {walked} is longer than "
                            f"{MAX_KEY_LENGTH} characters", walked)  # fmt: skip
    return text


def limits_problems(versions: Sequence[tuple[str, Sequence[ConcurrencyLimit]]]) -> list[str]:
    """What is wrong with the limits some versions declare, as ``problem @ path``: a
    name or key path not allowed, a name twice in one version, a limit declared with
    other numbers by another of the versions. ``versions`` gives each version's path
    (``$.versions[0]``) and limits."""
    problems: list[str] = []
    numbers: dict[str, tuple[int, int | None]] = {}
    for where, limits in versions:
        seen: set[str] = set()
        for index, limit in enumerate(limits):
            path = f"{where}.limits[{index}]"
            if problem := limit_name_problem(limit.name):
                problems.append(f"{problem} @ {path}.name")
            if limit.key is not None and (problem := key_path_problem(limit.key)):
                problems.append(f"{problem} @ {path}.key")
            if limit.name in seen:
                problems.append(f"limit {limit.name!r} is named twice @ {path}.name")
            seen.add(limit.name)
            if limit.total is not None and limit.total < limit.per_key:
                problems.append(f"total is below per_key @ {path}.total")
            declared = numbers.setdefault(limit.name, (limit.per_key, limit.total))
            if declared != (limit.per_key, limit.total):
                problems.append(f"limit {limit.name!r} is declared with other numbers by "
                                f"another version @ {path}")  # fmt: skip
    return problems


# -- operations: reading and changing limits -----------------------------------------------


@attrs.frozen(kw_only=True)
class LimitChange:
    """One change of a limit's numbers."""

    per_key: int
    total: int | None = None
    changed_by: str
    """The key's name that changed it, or ``registration`` (a worker declared new ones)."""
    at: dt.datetime


@attrs.frozen(kw_only=True)
class LimitInfo:
    """A concurrency limit of the namespace: its numbers in force, as declared, and how
    many runs hold and wait for its slots now."""

    name: str
    per_key: int
    total: int | None = None
    declared_per_key: int
    """As the latest registration that changed them declared (an operator's change holds
    until a registration declares other numbers)."""
    declared_total: int | None = None
    holding: int = 0
    """Runs holding a slot now, over all keys."""
    waiting: int = 0
    """Runs waiting at the gate for a slot of it now."""
    changes: tuple[LimitChange, ...] = ()
    """Its latest changes, newest first (`ListLimits` naming it; `SetLimit`)."""


@attrs.frozen(kw_only=True)
class LimitList:
    """Reply to `ListLimits`."""

    limits: tuple[LimitInfo, ...] = ()


@attrs.frozen(kw_only=True)
class ListLimits(Request[LimitList]):
    """The namespace's concurrency limits, by name; with ``name``, that one alone, with
    its latest changes."""

    name: str | None = None


@attrs.frozen(kw_only=True)
class SetLimit(Request[LimitInfo]):
    """Change a limit's numbers now (kept in its changes, with who changed them). They hold
    until a registration declares other numbers than those last declared."""

    name: str
    per_key: int
    total: int | None = None


LIST_LIMITS: Final = declare("list_limits", ListLimits, callers=READERS)
SET_LIMIT: Final = declare("set_limit", SetLimit, callers=ADMINS)

OPERATIONS: Final = (LIST_LIMITS, SET_LIMIT)
"""Reading and changing concurrency limits."""
