"""Prometheus metrics of one server process, served at ``/metrics``.

Counters move where the server commits the change they count; gauges that describe
shared state (queue depth) are read from PostgreSQL at scrape time, so every instance
reports the same truth. Each server has its own registry (several may share a process
in tests).

What belongs to a namespace carries a ``namespace`` label (runs started, completed and
failed; task durations; queue depths). A key of one namespace reads those series of its
namespace only; the server's own (connections, sessions, restarts, recoveries, all
namespaces' totals) are for keys of every namespace and the metrics listener.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import prometheus_client
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from transport.asgi import ServerStatistics

from ..protocol import stream_for
from .store import gate, limits, views

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from actors import SupervisorStatistics
    from transport.postgres import PostgresStore, Transaction

TASK_BUCKETS: Final = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60,
                       300)  # fmt: skip


class _ActorRestarts(Collector):
    """Restarts of each supervised actor, read from the supervision tree at scrape time."""

    def __init__(self) -> None:
        self.read: Callable[[], SupervisorStatistics] | None = None
        """Set once the tree runs: reads its statistics."""

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "aiki_actor_restarts", "Restarts of each supervised actor", labels=["actor"]
        )
        if self.read is not None:
            root = self.read()
            stack = [(root.name, root)]
            while stack:
                path, tree = stack.pop()
                for child in tree.children:
                    family.add_metric([f"{path}/{child.name}"], child.restarts)
                    if child.supervisor is not None:
                        stack.append((f"{path}/{child.name}", child.supervisor))
        yield family


class _Connections(Collector):
    """The listener's connection counters, read at scrape time."""

    def __init__(self, statistics: ServerStatistics) -> None:
        self.statistics = statistics

    def collect(self) -> Iterator[Metric]:
        stats = self.statistics
        yield GaugeMetricFamily("aiki_connections_open", "Open HTTP and WebSocket connections",
                                value=stats.open)  # fmt: skip
        yield CounterMetricFamily("aiki_connections_refused",
                                  "Connections refused over --max-connections",
                                  value=stats.refused)  # fmt: skip
        yield GaugeMetricFamily("aiki_connections_unauthenticated",
                                "Open connections that have not presented a valid key yet",
                                value=stats.unadmitted)  # fmt: skip
        yield CounterMetricFamily("aiki_connections_made_room",
                                  "Connections without a valid key closed to make room for a "
                                  "newer one (--max-unauthenticated-connections, per address "
                                  "--max-unauthenticated-per-address, --max-connections)",
                                  value=stats.made_room)  # fmt: skip
        yield CounterMetricFamily("aiki_connections_head_timeouts",
                                  "Connections without a valid key closed after --head-timeout "
                                  "without a request head", value=stats.head_timeouts)  # fmt: skip
        yield CounterMetricFamily("aiki_connections_failed",
                                  "Connections closed because their protocol code failed",
                                  value=stats.failed)  # fmt: skip


class _OfNamespace(Collector):
    """The series of ``registry`` labelled with ``namespace``, and nothing else."""

    def __init__(self, registry: CollectorRegistry, namespace: str) -> None:
        self.registry = registry
        self.namespace = namespace

    def collect(self) -> Iterator[Metric]:
        for family in self.registry.collect():
            samples = [sample for sample in family.samples
                       if sample.labels.get("namespace") == self.namespace]  # fmt: skip
            if samples:
                kept = Metric(family.name, family.documentation, family.type, family.unit)
                kept.samples = samples
                yield kept


MAX_LABEL_VALUES: Final = 256
"""Distinct values a label (a workflow's name, a task's) takes at most; later ones are
counted under ``other``: names come from peers, and the scrape must stay small."""


class BoundedLabel:
    """The values one label may take: the first `MAX_LABEL_VALUES` seen, then ``other``."""

    def __init__(self, limit: int = MAX_LABEL_VALUES) -> None:
        self._seen: set[str] = set()
        self._limit = limit

    def __call__(self, value: str) -> str:
        """``value`` if it is (or may become) one of the label's values, else ``other``."""
        if value in self._seen:
            return value
        if len(self._seen) < self._limit:
            self._seen.add(value)
            return value
        return "other"


class ServerMetrics:
    """The server's metrics (see the module docstring)."""

    def __init__(self) -> None:
        self.registry = prometheus_client.CollectorRegistry()
        registry = self.registry
        self.workflow = BoundedLabel()
        """The ``workflow`` label of a run's workflow name (bounded)."""
        self.task = BoundedLabel()
        """The ``task`` label of a task's name (bounded)."""
        self.runs_started = prometheus_client.Counter(
            "aiki_runs_started", "Runs created (children included)", ["namespace", "workflow"],
            registry=registry,
        )  # fmt: skip
        self.runs_completed = prometheus_client.Counter(
            "aiki_runs_completed",
            "Runs that completed",
            ["namespace", "workflow"],
            registry=registry,
        )
        self.runs_failed = prometheus_client.Counter(
            "aiki_runs_failed", "Runs that failed (their last attempt)", ["namespace", "workflow"],
            registry=registry,
        )  # fmt: skip
        self.runs_cancelled = prometheus_client.Counter(
            "aiki_runs_cancelled", "Runs cancelled (descendants included)", registry=registry
        )
        self.runs_timed_out = prometheus_client.Counter(
            "aiki_runs_timed_out", "Runs failed by their deadline", registry=registry
        )
        self.runs_executions_lost = prometheus_client.Counter(
            "aiki_runs_executions_lost",
            "Runs failed because their execution was lost too many times",
            registry=registry,
        )
        self.task_seconds = prometheus_client.Histogram(
            "aiki_task_duration_seconds", "Task attempt durations, as reported by workers",
            ["namespace", "task"], buckets=TASK_BUCKETS, registry=registry,
        )  # fmt: skip
        self.claim_recoveries = prometheus_client.Counter(
            "aiki_claim_recoveries",
            "Runs queued again because their worker died or its claim went stale",
            registry=registry,
        )
        self.websocket_sessions = prometheus_client.Gauge(
            "aiki_websocket_sessions", "Open WebSocket sessions (workers and clients)",
            registry=registry,
        )  # fmt: skip
        self.queue_depth = prometheus_client.Gauge(
            "aiki_queue_depth", "Runs queued and not yet taken, per stream",
            ["namespace", "stream"],
            registry=registry,
        )  # fmt: skip
        self.unserved_runs = prometheus_client.Gauge(
            "aiki_unserved_open_runs",
            "Open runs of a workflow version that no live worker serves (start a worker "
            "that registers the version: runs stay on the version they started on)",
            ["namespace", "workflow", "version"], registry=registry,
        )  # fmt: skip
        self.limit_holding = prometheus_client.Gauge(
            "aiki_limit_holding",
            "Runs holding a slot of a concurrency limit now, over all its keys (by limit "
            "name: keys are not labels)",
            ["namespace", "limit"], registry=registry,
        )  # fmt: skip
        self.limit_waiting = prometheus_client.Gauge(
            "aiki_limit_waiting",
            "Runs waiting at the gate for a slot of a concurrency limit now",
            ["namespace", "limit"], registry=registry,
        )  # fmt: skip
        self.gate_waiting = prometheus_client.Gauge(
            "aiki_gate_waiting",
            "Queued runs waiting at the gate now (for limits, or for their turn while their "
            "workers are saturated), by priority",
            ["namespace", "priority"], registry=registry,
        )  # fmt: skip
        self.schedule_occurrences = prometheus_client.Counter(
            "aiki_schedule_occurrences",
            "Schedule occurrences handled, by outcome: started, or skipped (overlap, missed)",
            ["outcome"], registry=registry,
        )  # fmt: skip
        self.offers_open = prometheus_client.Gauge(
            "aiki_offers_open",
            "Free worker slots offered to this server's starts (eager dispatch), open now",
            registry=registry,
        )
        self.requests_over_quota = prometheus_client.Counter(
            "aiki_requests_over_quota",
            "Requests refused because their key was over --key-requests-per-second, by the "
            "key's namespace (* for keys of every namespace)",
            ["namespace"], registry=registry,
        )  # fmt: skip
        self.actor_restarts = _ActorRestarts()
        registry.register(self.actor_restarts)
        self.connections = ServerStatistics()
        """Kept by the listener: open connections, and those refused or failed."""
        registry.register(_Connections(self.connections))

    async def render(self, store: PostgresStore, namespace: str | None = None) -> bytes:
        """Refresh the gauges read from PostgreSQL, then the text exposition format: of
        ``namespace``'s series only, if one is given (see the module docstring)."""
        depths, unserved, counts, waiting = await store.transact(
            lambda tx: (_queue_depths(tx), views.unserved_versions(tx), limits.limit_counts(tx),
                        gate.waiting_by_priority(tx))
        )  # fmt: skip
        for gauge in (self.limit_holding, self.limit_waiting, self.gate_waiting):
            gauge.clear()
        for of, name, holding, waits in counts:
            self.limit_holding.labels(of, name).set(holding)
            self.limit_waiting.labels(of, name).set(waits)
        for of, priority, count in waiting:
            self.gate_waiting.labels(of, str(priority)).set(count)
        self.queue_depth.clear()
        for of, stream, depth in depths:
            self.queue_depth.labels(of, stream).set(depth)
        self.unserved_runs.clear()
        for version in unserved:
            self.unserved_runs.labels(version.namespace, version.workflow, version.version).set(
                sum(version.open_runs.values()))  # fmt: skip
        return self.exposition(namespace)

    def exposition(self, namespace: str | None = None) -> bytes:
        """The text exposition format as the series are now: of ``namespace``'s series
        only, if one is given."""
        if namespace is None:
            return prometheus_client.generate_latest(self.registry)
        view = CollectorRegistry(auto_describe=False)
        view.register(_OfNamespace(self.registry, namespace))
        return prometheus_client.generate_latest(view)


def _queue_depths(tx: Transaction) -> list[tuple[str, str, int]]:
    rows = tx.fetch_all(
        "SELECT namespace, workflow, version, pool, count(*) FROM aiki_runs"
        " WHERE status = 'queued' GROUP BY namespace, workflow, version, pool"
    )
    return [(str(namespace), stream_for(str(namespace), str(workflow), str(version),
                                        None if pool is None else str(pool)), int(str(count)))
            for namespace, workflow, version, pool, count in rows]  # fmt: skip


CONTENT_TYPE: Final = prometheus_client.CONTENT_TYPE_LATEST
