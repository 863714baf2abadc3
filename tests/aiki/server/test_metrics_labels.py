"""Metric labels taken from peers' names are bounded, so /metrics stays small; a
namespace's reader sees its namespace's series only."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

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
        metrics.task_seconds.labels("default", metrics.task(f"task-{index}")).observe(0.01)
    series = {sample.labels["task"] for metric in metrics.task_seconds.collect()
              for sample in metric.samples}  # fmt: skip
    assert len(series) == MAX_LABEL_VALUES + 1  # and "other"


def _series(text: bytes) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
    return {(sample.name, tuple(sorted(sample.labels.items())))
            for family in text_string_to_metric_families(text.decode())
            for sample in family.samples}  # fmt: skip


def test_a_namespaces_exposition_holds_its_series_only() -> None:
    """Runs, tasks and queues of namespaces a and b, and the server's own series: b's
    reader gets b's series and nothing else; a reader of every namespace gets all."""
    metrics = ServerMetrics()
    for namespace in ("a", "b"):
        metrics.runs_started.labels(namespace, f"flow-of-{namespace}").inc()
        metrics.runs_completed.labels(namespace, f"flow-of-{namespace}").inc()
        metrics.task_seconds.labels(namespace, f"task-of-{namespace}").observe(0.1)
        metrics.queue_depth.labels(namespace, f"stream-of-{namespace}").set(3)
    metrics.runs_cancelled.inc()
    metrics.websocket_sessions.set(2)
    of_b = _series(metrics.exposition("b"))
    assert of_b
    assert {dict(labels).get("namespace") for _, labels in of_b} == {"b"}
    assert not any("of-a" in value for _, labels in of_b for _, value in labels)
    names = {name.removesuffix("_total") for name, _ in of_b}
    assert {"aiki_runs_started", "aiki_runs_completed", "aiki_queue_depth",
            "aiki_task_duration_seconds_count"} <= names  # fmt: skip
    everything = _series(metrics.exposition())
    assert of_b < everything
    assert ("aiki_websocket_sessions", ()) in everything
    assert ("aiki_runs_cancelled_total", ()) in everything
    assert _series(metrics.exposition("nobody")) == set()
