"""``python -m benchmarks <name> [options]``: run one benchmark of the suite."""

from __future__ import annotations

import sys

from . import (
    bench_flow,
    bench_foundations,
    bench_live,
    bench_path,
    bench_scaling,
    bench_schedules,
    bench_sleepers,
    bench_suite,
    bench_workflows,
    soak,
)

SUITES = {
    "foundations": bench_foundations.main,
    "workflows": bench_workflows.main,
    "sleepers": bench_sleepers.main,
    "soak": soak.main,
    "suite": bench_suite.main,
    "live": bench_live.main,
    "path": bench_path.main,
    "scaling": bench_scaling.main,
    "schedules": bench_schedules.main,
    "flow": bench_flow.main,
}


def main() -> None:
    """Dispatch to the named benchmark."""
    if len(sys.argv) < 2 or sys.argv[1] not in SUITES:
        print(f"usage: python -m benchmarks {{{','.join(SUITES)}}} [--runs N] [--json PATH]")
        raise SystemExit(2)
    SUITES[sys.argv[1]](sys.argv[2:])


main()
