"""Aiki's benchmark suite: ``python -m benchmarks <name>`` (see benchmarks/README.md)."""
