"""Metric labels taken from peers' names are bounded, so /metrics stays small."""

from __future__ import annotations

from aiki.server._metrics import MAX_LABEL_VALUES, BoundedLabel, ServerMetrics


def test_a_label_takes_at_most_its_bound_of_values_then_other() -> None:
    """The first values pass (again and again); past the bound, everything is "other"."""
    label = BoundedLabel(limit=3)
    assert [label(name) for name in ("a", "b", "a", "c", "d", "b", "e")] == [
        "a", "b", "a", "c", "other", "b", "other"]  # fmt: skip


def test_thousands_of_task_names_do_not_grow_the_scrape() -> None:
    """3,000 task names (sent through record_task by a peer) add at most the bound's worth
    of series."""
    metrics = ServerMetrics()
    for index in range(3000):
        metrics.task_seconds.labels(metrics.task(f"task-{index}")).observe(0.01)
    series = {sample.labels["task"] for metric in metrics.task_seconds.collect()
              for sample in metric.samples}  # fmt: skip
    assert len(series) == MAX_LABEL_VALUES + 1  # and "other"
