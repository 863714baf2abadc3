"""How the suite drives a peer process: the peer prints ``ready``, then for each line
``<workload> <count>`` on stdin runs that load and prints one JSON line with its result.
The suite reads the meters between ``ready`` and the command, and after the result."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable


def serve(run: Callable[[str, int], dict[str, object]]) -> None:
    """Answer the suite's commands until stdin closes."""
    print("ready", flush=True)
    for line in sys.stdin:
        workload, count = line.split()
        began = time.perf_counter()
        result = run(workload, int(count))
        result.setdefault("seconds", time.perf_counter() - began)
        print(json.dumps(result), flush=True)
