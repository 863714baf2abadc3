"""Bounds on every request field: what a peer may send, checked right after decoding.

The codec makes sure each field has its declared type (no coercion); these rules make
sure its value makes sense, the same for every operation, before any handler or the
database sees it:

- text: at most `MAX_TEXT` characters (a few fields more), no control characters (no
  NUL, which PostgreSQL cannot store, and no line breaks, which would forge log lines)
  except in an error's message and traceback;
- numbers: finite, not negative; integers at most `MAX_INT`; durations, delays and other
  seconds at most `MAX_SECONDS` (ten years);
- times: between 2000 and 2100;
- lists: at most `MAX_ITEMS` entries;
- user payloads (inputs, outputs, event payloads): nested at most `MAX_PAYLOAD_DEPTH`
  deep, and no NUL in any string or key;
- some fields a narrower range (`RANGES`): a page's size, a long-poll's timeout, the
  run IDs one subscription names.

Each problem names the field by its path (``$.options.timeout_seconds``).
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Final

import attrs

MAX_TEXT: Final = 1024
MAX_INT: Final = 2**31 - 1
MAX_SECONDS: Final = 10 * 365 * 86400.0
MAX_ITEMS: Final = 10_000
MAX_PAYLOAD_DEPTH: Final = 64
MAX_PROBLEMS: Final = 20
"""Problems reported at most (a hostile request may have millions)."""
MAX_PAGE: Final = 500
"""Items one page of a listing holds at most (runs, schedules, a schedule's recent runs)."""
MAX_UPCOMING: Final = 100
"""Fire times `GetSchedule` computes at most."""
WAIT_RUN_MAX_SECONDS: Final = 60.0
"""How long one `WaitRun` long-poll may wait (the client waits longer in slices)."""
MAX_CLAIM_NEXT: Final = 1000
"""Runs one `ClaimNext` (the pull path) claims at most."""
MAX_OFFER_SECONDS: Final = 60.0
"""How long one `OfferSlot` holds a worker's slot open at most."""
MAX_OFFER_QUEUES: Final = 1000
"""Queues one `OfferSlot` may name."""
SUBSCRIBE_RUNS: Final = 1000
"""Run IDs one `Subscribe` may name."""
MAX_LIMITS: Final = 8
"""Concurrency limits one workflow version may name."""
MAX_SLOTS: Final = 1_000_000
"""A concurrency limit's bound, at most."""
EARLIEST: Final = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
LATEST: Final = dt.datetime(2100, 1, 1, tzinfo=dt.UTC)

LONG_TEXT: Final[dict[tuple[str, str], int]] = {
    ("ErrorInfo", "message"): 16_000,
    ("ErrorInfo", "traceback"): 32_000,
    ("ScheduleInfo", "description"): 4096,
}
"""Fields that may be longer than `MAX_TEXT`, by (class, field)."""

RANGES: Final[dict[tuple[str, str], tuple[float, float]]] = {
    ("ListRuns", "limit"): (1, MAX_PAGE),
    ("ListSchedules", "limit"): (1, MAX_PAGE),
    ("RetryRuns", "limit"): (1, MAX_PAGE),
    ("GetSchedule", "upcoming"): (0, MAX_UPCOMING),
    ("GetSchedule", "recent_runs"): (0, MAX_PAGE),
    ("WaitRun", "timeout_seconds"): (0, WAIT_RUN_MAX_SECONDS),
    ("ClaimNext", "limit"): (1, MAX_CLAIM_NEXT),
    ("OfferSlot", "wait_seconds"): (0.001, MAX_OFFER_SECONDS),
    ("OfferSlot", "queues"): (1, MAX_OFFER_QUEUES),
    ("Subscribe", "run_ids"): (0, SUBSCRIBE_RUNS),
    ("StartOptions", "priority"): (0, 4),
    ("StartOptions", "fairness_weight"): (1, 1000),
    ("VersionSpec", "limits"): (0, MAX_LIMITS),
    ("ConcurrencyLimit", "per_key"): (1, MAX_SLOTS),
    ("ConcurrencyLimit", "total"): (1, MAX_SLOTS),
    ("SetLimit", "per_key"): (1, MAX_SLOTS),
    ("SetLimit", "total"): (1, MAX_SLOTS),
}
"""Fields with a narrower range than their type's, by (class, field): a number's value,
a list's length (inclusive)."""

MULTILINE: Final = frozenset({("ErrorInfo", "message"), ("ErrorInfo", "traceback")})
"""Fields where line breaks and tabs are text, not an attack on the logs."""

_ALLOWED_CONTROLS: Final = frozenset("\n\r\t")


def request_problems(request: object) -> list[str]:
    """Everything out of bounds in ``request`` (an attrs message), as ``problem @ path``."""
    problems: list[str] = []
    _message(request, "$", problems)
    return problems


def payload_problems(value: object, path: str = "$") -> list[str]:
    """What keeps ``value`` (a user payload as JSON data) out of the protocol's bounds:
    nesting deeper than `MAX_PAYLOAD_DEPTH`, NUL characters."""
    problems: list[str] = []
    _payload(value, path, 0, problems)
    return problems


def _message(message: object, path: str, problems: list[str]) -> None:
    if len(problems) >= MAX_PROBLEMS or not attrs.has(type(message)):
        return
    owner = type(message).__name__
    for field in attrs.fields(type(message)):  # type: ignore[arg-type]
        value = getattr(message, field.name)
        where = f"{path}.{field.name}"
        span = RANGES.get((owner, field.name))
        if span is not None and (problem := _outside(value, span)):
            problems.append(f"{problem} @ {where}")
        elif field.type in (object, "object"):
            _payload(value, where, 0, problems)
        else:
            _value(value, where, (owner, field.name), problems)


def _value(value: object, path: str, field: tuple[str, str], problems: list[str]) -> None:
    if value is None or isinstance(value, bool) or len(problems) >= MAX_PROBLEMS:
        return
    if isinstance(value, str):
        _text(value, path, field, problems)
    elif isinstance(value, int):
        if not 0 <= value <= MAX_INT:
            problems.append(f"must be within 0 and {MAX_INT} @ {path}")
    elif isinstance(value, float):
        if not math.isfinite(value) or not 0 <= value <= MAX_SECONDS:
            problems.append(f"must be within 0 and {MAX_SECONDS:.0f} (ten years) @ {path}")
    elif isinstance(value, dt.datetime):
        if value.tzinfo is None or not EARLIEST <= value < LATEST:
            problems.append(f"must be a time with a timezone, in 2000-2099 @ {path}")
    elif isinstance(value, tuple | list):
        if len(value) > MAX_ITEMS:
            problems.append(f"at most {MAX_ITEMS} items @ {path}")
            return
        for index, item in enumerate(value):
            _value(item, f"{path}[{index}]", field, problems)
    elif isinstance(value, dict):  # names to payloads (a version's event schemas)
        for key, item in value.items():
            _text(str(key), f"{path}.{key}", field, problems)
            _payload(item, f"{path}.{key}", 0, problems)
    elif attrs.has(type(value)):
        _message(value, path, problems)


def _outside(value: object, span: tuple[float, float]) -> str | None:
    """Why ``value`` is outside ``span`` (a number's value, a list's length), if it is."""
    low, high = span
    if isinstance(value, tuple | list):
        return None if low <= len(value) <= high else f"must have {low:g} to {high:g} items"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if math.isfinite(value) and low <= value <= high:
        return None
    return f"must be within {low:g} and {high:g}"


def _text(value: str, path: str, field: tuple[str, str], problems: list[str]) -> None:
    limit = LONG_TEXT.get(field, MAX_TEXT)
    if len(value) > limit:
        problems.append(f"at most {limit} characters @ {path}")
    allowed = _ALLOWED_CONTROLS if field in MULTILINE else frozenset()
    if any((ord(ch) < 32 or ord(ch) == 127) and ch not in allowed for ch in value):
        problems.append(f"control characters are not allowed @ {path}")


def _payload(value: object, path: str, depth: int, problems: list[str]) -> None:
    if len(problems) >= MAX_PROBLEMS:
        return
    if depth > MAX_PAYLOAD_DEPTH:
        problems.append(f"nested more than {MAX_PAYLOAD_DEPTH} deep @ {path}")
        return
    if isinstance(value, str):
        if "\x00" in value:
            problems.append(f"NUL characters are not allowed @ {path}")
    elif isinstance(value, dict):
        for key, item in value.items():
            if "\x00" in key:
                problems.append(f"NUL characters are not allowed in keys @ {path}")
            _payload(item, f"{path}.{key}", depth + 1, problems)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _payload(item, f"{path}[{index}]", depth + 1, problems)
