"""Retry strategies for tasks and workflows.

    from aiki import retry

    retry.never()                                   # the default: one attempt
    retry.fixed(3, delay_seconds=1)                 # 3 attempts, 1 s apart
    retry.exponential(5, initial_delay_seconds=0.5, factor=2, max_delay_seconds=30)
    retry.jittered(5, initial_delay_seconds=0.5)    # exponential with full jitter

``max_attempts`` counts every attempt, the first included. A failure whose exception is
`aiki.NonRetryableError` (or has a truthy ``non_retryable`` attribute) is not retried.
"""

from __future__ import annotations

import random
from typing import Final, Literal

import attrs

from .errors import is_retryable as _is_retryable

RetryKind = Literal["never", "fixed", "exponential", "jittered"]


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """When a failed attempt is tried again, and after how long. Build with the functions below."""

    kind: RetryKind = "never"
    max_attempts: int = attrs.field(default=1, validator=attrs.validators.ge(1))
    delay_seconds: float = attrs.field(default=0.0, validator=attrs.validators.ge(0))
    """Fixed delay, or the first delay of the exponential kinds."""
    factor: float = attrs.field(default=2.0, validator=attrs.validators.ge(1))
    max_delay_seconds: float = attrs.field(default=300.0, validator=attrs.validators.ge(0))

    def delay_before(self, attempt: int, rng: random.Random | None = None) -> float | None:
        """Seconds to wait before attempt number ``attempt`` (2 = the first retry).

        Returns:
            None when ``attempt`` exceeds ``max_attempts``: stop retrying.
        """
        if attempt > self.max_attempts or self.kind == "never":
            return None
        if self.kind == "fixed":
            return self.delay_seconds
        exponential = min(self.max_delay_seconds, self.delay_seconds * self.factor ** (attempt - 2))
        if self.kind == "jittered":
            return (rng or random).uniform(0, exponential)  # "full jitter"
        return exponential


NEVER: Final = RetryPolicy()


def never() -> RetryPolicy:
    """One attempt, no retries (the default)."""
    return NEVER


def fixed(max_attempts: int, *, delay_seconds: float = 0.0) -> RetryPolicy:
    """Up to ``max_attempts`` attempts, ``delay_seconds`` apart."""
    return RetryPolicy(kind="fixed", max_attempts=max_attempts, delay_seconds=delay_seconds)


def exponential(
    max_attempts: int,
    *,
    initial_delay_seconds: float = 1.0,
    factor: float = 2.0,
    max_delay_seconds: float = 300.0,
) -> RetryPolicy:
    """Delays ``initial``, ``initial * factor``, … capped at ``max_delay_seconds``."""
    return RetryPolicy(
        kind="exponential",
        max_attempts=max_attempts,
        delay_seconds=initial_delay_seconds,
        factor=factor,
        max_delay_seconds=max_delay_seconds,
    )


def jittered(
    max_attempts: int,
    *,
    initial_delay_seconds: float = 1.0,
    factor: float = 2.0,
    max_delay_seconds: float = 300.0,
) -> RetryPolicy:
    """Like `exponential`, each delay drawn uniformly from 0 to that value (full jitter)."""
    return RetryPolicy(
        kind="jittered",
        max_attempts=max_attempts,
        delay_seconds=initial_delay_seconds,
        factor=factor,
        max_delay_seconds=max_delay_seconds,
    )


def is_retryable(error: BaseException) -> bool:
    """False for `aiki.NonRetryableError`, exceptions flagged ``non_retryable``, and task
    failures whose cause was non-retryable."""
    return _is_retryable(error)
