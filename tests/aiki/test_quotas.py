"""Request quotas by property: no key gets more than its burst plus its rate over any
span, a key within its rate is never refused, a refusal says truly when to come back,
and one key's requests never use another's quota."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from aiki.server._quotas import Quotas

gaps = st.lists(st.floats(0, 2, allow_nan=False), min_size=1, max_size=200)
rates = st.floats(0.5, 50, allow_nan=False)
bursts = st.integers(1, 20)


def _times(gaps: list[float]) -> list[float]:
    return list(itertools.accumulate(gaps, initial=1000.0))[1:]


@given(gaps=gaps, rate=rates, burst=bursts)
@settings(max_examples=300, deadline=None)
def test_no_span_lets_more_through_than_burst_plus_rate(
    gaps: list[float], rate: float, burst: int
) -> None:
    quotas = Quotas(rate, burst)
    times = _times(gaps)
    allowed = [at for at in times if quotas.take("k", at) == 0.0]
    for first, start in enumerate(allowed):
        for last in range(first, len(allowed)):
            span = allowed[last] - start
            assert last - first + 1 <= burst + span * rate + 1e-6


@given(gaps=gaps, rate=rates, burst=bursts)
@settings(max_examples=300, deadline=None)
def test_a_refusal_says_when_the_next_request_goes_through(
    gaps: list[float], rate: float, burst: int
) -> None:
    quotas = Quotas(rate, burst)
    for at in _times(gaps):
        wait = quotas.take("k", at)
        if wait > 0:
            assert quotas.take("k", at + wait * 0.999) > 0  # not sooner
            assert quotas.take("k", at + wait + 1e-9) == 0.0  # then, yes
            return


@given(rate=rates, burst=bursts, count=st.integers(1, 300))
def test_requests_within_the_rate_are_never_refused(rate: float, burst: int, count: int) -> None:
    quotas = Quotas(rate, burst)
    assert all(quotas.take("k", 1000.0 + n / rate) == 0.0 for n in range(count))


@given(rate=rates, burst=bursts)
def test_one_keys_flood_leaves_another_keys_quota_whole(rate: float, burst: int) -> None:
    quotas = Quotas(rate, burst)
    while quotas.take("flooder", 1000.0) == 0.0:
        pass
    assert all(quotas.take("bystander", 1000.0) == 0.0 for _ in range(burst))


def test_rate_zero_is_no_quota() -> None:
    quotas = Quotas(0, 1)
    assert all(quotas.take("k", 1000.0) == 0.0 for _ in range(10_000))


@given(gaps=gaps, rate=rates, burst=bursts)
@settings(max_examples=200, deadline=None)
def test_waiting_says_what_taking_would_do_and_takes_nothing(
    gaps: list[float], rate: float, burst: int
) -> None:
    quotas = Quotas(rate, burst)
    for at in _times(gaps):
        before = quotas.wait("k", at)
        assert quotas.wait("k", at) == before  # (nothing taken)
        assert quotas.take("k", at) == before
