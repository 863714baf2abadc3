"""Retry strategies: delays per attempt, limits, and what stops retries."""

from __future__ import annotations

import random

import pytest

from aiki import retry
from aiki.errors import NonRetryableError


def test_never_allows_one_attempt_only() -> None:
    """The default policy never retries."""
    assert retry.never().delay_before(2) is None


def test_fixed_waits_the_same_delay_until_the_limit() -> None:
    """fixed(3) allows attempts 2 and 3, each after the same delay."""
    policy = retry.fixed(3, delay_seconds=1.5)
    assert [policy.delay_before(attempt) for attempt in (2, 3, 4)] == [1.5, 1.5, None]


def test_exponential_grows_by_factor_and_is_capped() -> None:
    """exponential: initial, initial*factor, ... up to max_delay_seconds."""
    policy = retry.exponential(6, initial_delay_seconds=1, factor=3, max_delay_seconds=20)
    assert [policy.delay_before(attempt) for attempt in range(2, 8)] == [1, 3, 9, 20, 20, None]


def test_jittered_draws_below_the_exponential_bound() -> None:
    """jittered: each delay is uniform in [0, exponential bound], and varies."""
    policy = retry.jittered(10, initial_delay_seconds=1, factor=2, max_delay_seconds=8)
    rng = random.Random(1)
    delays = [policy.delay_before(attempt, rng) for attempt in range(2, 11)]
    bounds = [1, 2, 4, 8, 8, 8, 8, 8, 8]
    assert all(0 <= d <= bound for d, bound in zip(delays, bounds, strict=True))
    assert len(set(delays)) == len(delays)


def test_invalid_policies_are_refused() -> None:
    """Zero attempts or negative delays are rejected when the policy is built."""
    with pytest.raises(ValueError, match="max_attempts"):
        retry.fixed(0)
    with pytest.raises(ValueError, match="delay_seconds"):
        retry.fixed(2, delay_seconds=-1)


def test_non_retryable_errors_are_recognised() -> None:
    """NonRetryableError and any exception flagged non_retryable stop retries."""

    class Declined(Exception):
        non_retryable = True

    assert not retry.is_retryable(NonRetryableError("stop"))
    assert not retry.is_retryable(Declined())
    assert retry.is_retryable(TimeoutError())
