"""The Celery side of the dispatch baseline: one task, Redis as broker and result store.

Not durable (a task acknowledged early is lost with its worker; results expire), so it
is a baseline for raw dispatch, not a like-for-like durable engine. The broker URL comes
from ``AIKI_BENCH_CELERY_REDIS``.
"""

from __future__ import annotations

import os
import time

from celery import Celery

app = Celery(
    "aiki-bench",
    broker=os.environ.get("AIKI_BENCH_CELERY_REDIS", "redis://127.0.0.1/1"),
    backend=os.environ.get("AIKI_BENCH_CELERY_REDIS", "redis://127.0.0.1/1"),
)
app.conf.update(
    task_default_queue="aiki-bench",
    worker_prefetch_multiplier=16,
    result_expires=600,
    broker_connection_retry_on_startup=True,
)


@app.task(name="bench.work")
def work(x: int) -> tuple[int, float]:
    """W1's task; returns its result and when it finished (for latency)."""
    return x + 1, time.time()
