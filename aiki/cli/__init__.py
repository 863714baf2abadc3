"""The ``aiki`` command line: `main` is the console script's entry point.

- `_main`: ``aiki dev|server|worker|services`` (processes) and the command group;
- `_runs`: ``aiki runs ...``, ``aiki events send``, ``aiki workers list``;
- `_schedules`: ``aiki schedules ...``;
- `_logs`: the processes' log formats (``AIKI_LOG_FORMAT``).
"""

from ._main import main as main

__all__ = ["main"]
