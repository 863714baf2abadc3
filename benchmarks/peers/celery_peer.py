"""Celery's client side: send W1 tasks and wait for every result.

    AIKI_BENCH_CELERY_REDIS=redis://... python -m benchmarks.peers.celery_peer

The workers are separate ``celery worker`` processes started by the suite. Latency is
send → the task finished (its own clock; same machine), unloaded latency send → result.
"""

from __future__ import annotations

import time

from ._protocol import serve
from .celery_app import work


def main() -> None:
    """Serve the suite's commands (workloads ``w1`` and ``unloaded-w1``)."""
    for x in range(20):
        work.delay(x).get(timeout=30)  # warm up

    def run(workload: str, count: int) -> dict[str, object]:
        if workload == "unloaded-w1":
            samples = []
            for x in range(count):
                began = time.perf_counter()
                work.delay(x).get(timeout=30)
                samples.append((time.perf_counter() - began) * 1000)
            return {"latencies_ms": sorted(samples)}
        assert workload == "w1", workload
        began = time.perf_counter()
        sent = []
        for x in range(count):
            sent.append((time.time(), work.delay(x)))
        latencies = []
        for sent_at, result in sent:
            _, finished_at = result.get(timeout=120)
            latencies.append((finished_at - sent_at) * 1000)
        return {"seconds": time.perf_counter() - began, "latencies_ms": sorted(latencies)}

    serve(run)


if __name__ == "__main__":
    main()
