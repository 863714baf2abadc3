"""The narrower ranges some request fields have (`aiki.protocol.RANGES`), checked where
every request is decoded: each names a field of a request type, takes its bounds and
refuses a value just outside them, naming the field."""

from __future__ import annotations

import attrs
import pytest

from aiki.protocol import (
    OPERATIONS,
    RANGES,
    ClaimNext,
    ConcurrencyLimit,
    GetSchedule,
    ListRuns,
    ListSchedules,
    OfferSlot,
    RegisterWorker,
    RetryRuns,
    ServedQueue,
    SetLimit,
    StartOptions,
    StartRun,
    Subscribe,
    VersionSpec,
    WaitRun,
    request_problems,
)

QUEUE = ServedQueue(workflow="a", version="1")

SAMPLES = {
    "ListRuns": ListRuns(),
    "ListSchedules": ListSchedules(),
    "RetryRuns": RetryRuns(workflow="orders"),
    "GetSchedule": GetSchedule(schedule_id="0190a3e4-0000-7000-8000-000000000000"),
    "WaitRun": WaitRun(run_id="0190a3e4-0000-7000-8000-000000000000", statuses=()),
    "ClaimNext": ClaimNext(worker_id="w1"),
    "OfferSlot": OfferSlot(worker_id="w1", queues=(QUEUE,), wait_seconds=1.0),
    "Subscribe": Subscribe(),
    "StartOptions": StartOptions(),
    "VersionSpec": VersionSpec(workflow="a", version="1"),
    "ConcurrencyLimit": ConcurrencyLimit(name="x", per_key=1),
    "SetLimit": SetLimit(name="x", per_key=1),
}
"""A valid request (or part of one) of each type with a ranged field."""

LIMIT = ConcurrencyLimit(name="x", per_key=1)


def _register(spec: object) -> RegisterWorker:
    return RegisterWorker(worker_id="w1", versions=(spec,))  # type: ignore[arg-type]


NESTED = {
    "StartOptions": (lambda part: StartRun(workflow="a", version="1", options=part), ".options"),
    "VersionSpec": (_register, ".versions[0]"),
    "ConcurrencyLimit": (
        lambda part: _register(VersionSpec(workflow="a", version="1", limits=(part,))),
        ".versions[0].limits[0]",
    ),
}
"""Types that are part of a request: the request holding a sample, and where."""


def _request(owner: str, part: object) -> tuple[object, str]:
    wrap, where = NESTED.get(owner, (lambda whole: whole, ""))
    return wrap(part), where


def _with(sample: object, field: str, value: float) -> object:
    """``sample`` with ``field`` set to ``value`` (a list's length, for a list field)."""
    current = getattr(sample, field)
    if isinstance(current, tuple):
        item = {"queues": QUEUE, "limits": LIMIT}.get(field, "0190a3e4-0000-7000-8000-000000000000")
        return attrs.evolve(sample, **{field: (item,) * int(value)})  # type: ignore[misc]
    as_type = int if current is None else type(current)
    return attrs.evolve(sample, **{field: as_type(value)})  # type: ignore[misc]


def test_every_range_names_a_field_of_a_request_type() -> None:
    requests = {operation.request_type.__name__ for operation in OPERATIONS}
    for owner, field in RANGES:
        assert owner in requests or owner in NESTED, owner
        assert field in attrs.fields_dict(type(SAMPLES[owner])), (owner, field)


@pytest.mark.parametrize(("owner", "field"), sorted(RANGES))
def test_a_ranged_field_takes_its_bounds_and_refuses_just_outside(owner: str, field: str) -> None:
    low, high = RANGES[(owner, field)]
    sample = SAMPLES[owner]
    integral = not isinstance(getattr(sample, field), float)
    step = 1 if integral else 0.001
    for inside in (low, high):
        assert request_problems(_request(owner, _with(sample, field, inside))[0]) == []
    outside = [high + step] + ([low - step] if low - step >= 0 else [])
    for value in outside:
        request, where = _request(owner, _with(sample, field, value))
        problems = request_problems(request)
        assert len(problems) == 1
        assert problems[0].endswith(f" @ ${where}.{field}"), problems
