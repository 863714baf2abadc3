"""Wire types of flow control: concurrency limits as a workflow version declares them,
and the key a run takes from its input.

A version names the limits its runs need (`ConcurrencyLimit`). Each limit has a name
(several workflows may share one, e.g. one per downstream API) and a key: a path into the
run's input (``customer_id``, ``order.account.id``), or none for one limit over all runs.
The server evaluates the key when a run starts (`limit_key`), however it starts (the SDK,
plain HTTP, a parent, a schedule, a retry), so every run is limited the same way.
"""

from __future__ import annotations

import re
from typing import Final, Literal

import attrs

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


@attrs.frozen(kw_only=True)
class ConcurrencyLimit:
    """A concurrency limit a workflow version's runs take a slot of."""

    name: str
    """Shared by every version that names it (their ``per_key`` and ``total`` must agree)."""
    key: str | None = None
    """A path into the input, parts joined by dots (``customer_id``, ``items.0.sku``);
    None: one key for every run."""
    per_key: int
    """Runs of one key holding a slot at once, at most."""
    total: int | None = None
    """Runs holding a slot at once over all keys, at most (None: no bound)."""
    on_limit: OnLimit = "wait"
    holds: Holds = "executing"


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
                            "input does not have")  # fmt: skip
    if isinstance(node, bool):
        text = "true" if node else "false"
    elif isinstance(node, (int, str)):
        text = str(node)
    else:
        raise LimitKeyError(f"limit {limit.name!r} takes its key from {walked}: a string, an "
                        f"integer or a boolean, not {type(node).__name__}")  # fmt: skip
    if len(text) > MAX_KEY_LENGTH:
        raise LimitKeyError(f"limit {limit.name!r}: the key at {walked} is longer than "
                        f"{MAX_KEY_LENGTH} characters")  # fmt: skip
    return text
