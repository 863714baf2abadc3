"""Peers measured beside Aiki in the same run: DBOS Transact and Celery (``pip install
-e '.[peers]'``). Each runs in processes of its own, driven by `benchmarks.bench_suite`."""
