"""The performance targets the suite checks in every run, as ratios between systems
measured in the same rounds (absolute figures drift from machine to machine).

Each target reads the suite's rows; one whose peer was not measured (``--no-peers``, or a
peer not installed) is reported as not measured rather than met.
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from typing import Final

import attrs

if typing.TYPE_CHECKING:
    from .bench_suite import Row

Find = Callable[[str, str, "int | None"], "Row | None"]


@attrs.frozen
class Verdict:
    """One target: what it asks, what was measured, and whether it holds (None: not
    measured)."""

    target: str
    measured: str
    met: bool | None


def _cpu(row: Row) -> float:
    """CPU ms per workflow over every role the row measured."""
    return sum(value for key, value in row.cost.items() if key.startswith("cpu_ms_"))


def _ratio(
    target: str,
    mine: Row | None,
    theirs: Row | None,
    value: Callable[[Row], float],
    holds: Callable[[float], bool],
    unit: str = "x",
) -> Verdict:
    if mine is None or theirs is None or not value(theirs):
        return Verdict(target, "not measured", None)
    ratio = value(mine) / value(theirs)
    return Verdict(target, f"{ratio:.2f}{unit} ({value(mine):.1f} vs {value(theirs):.1f})",
                   holds(ratio))  # fmt: skip


def verdicts(find: Find, workers: int) -> list[Verdict]:
    """Every target, judged from the rows ``find`` looks up (``workers``: the default
    worker processes, for Aiki's rows and Celery's)."""
    w1 = find("aiki", "W1", workers)
    w5 = find("aiki", "W5", workers)
    w1_idle = find("aiki", "W1 unloaded", None)
    w5_idle = find("aiki", "W5 unloaded", None)
    dbos_w1, dbos_w5 = find("dbos", "W1", None), find("dbos", "W5", None)
    dbos_w1_idle, dbos_w5_idle = (
        find("dbos", "W1 unloaded", None),
        find("dbos", "W5 unloaded", None),
    )
    celery_w1 = find("celery", "W1", workers)
    celery_idle = find("celery", "W1 unloaded", None)
    p50: Callable[[Row], float] = lambda row: row.p50  # noqa: E731
    rate: Callable[[Row], float] = lambda row: row.throughput  # noqa: E731
    found = [
        _ratio("W1 unloaded p50 ≤ 0.5x DBOS's", w1_idle, dbos_w1_idle, p50, lambda r: r <= 0.5),
        _ratio("W1 unloaded p50 ≤ 2x Celery's", w1_idle, celery_idle, p50, lambda r: r <= 2),
        _ratio("W1 unloaded p99 ≤ DBOS's p50", w1_idle, dbos_w1_idle,
               lambda row: row.p99 if row is w1_idle else row.p50, lambda r: r <= 1),
        _ratio("W5 unloaded p50 ≤ DBOS's", w5_idle, dbos_w5_idle, p50, lambda r: r <= 1),
        _ratio("W1 throughput ≥ 1x Celery (2 workers each)", w1, celery_w1, rate, lambda r: r >= 1),
        _ratio("W1 throughput ≥ 3x DBOS", w1, dbos_w1, rate, lambda r: r >= 3),
        _ratio("W5 throughput ≥ 5x DBOS", w5, dbos_w5, rate, lambda r: r >= 5),
        _ratio("CPU per W1 workflow, all roles ≤ Celery's", w1, celery_w1, _cpu, lambda r: r <= 1),
    ]  # fmt: skip
    one, four = find("aiki", "W1 scaling", 1), find("aiki", "W1 scaling", 4)
    found.append(_ratio("W1 grows with worker processes (4 vs 1: ≥ 1.2x)", four, one, rate,
                        lambda r: r >= GROWTH))  # fmt: skip
    return found


GROWTH: Final = 1.2
"""How much more W1 four worker processes must carry than one to count as growing."""


def table(found: list[Verdict]) -> list[str]:
    """The verdicts as a markdown table."""
    marks = {True: "**met**", False: "missed", None: "not measured"}
    return [
        "| target (same run) | measured | |",
        "|---|---|---|",
        *(f"| {v.target} | {v.measured} | {marks[v.met]} |" for v in found),
    ]
