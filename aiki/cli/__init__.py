"""The ``aiki`` command line: `main` is the console script's entry point.

- `_main`: the command group, which imports each command's module when it is invoked;
- `_serve`: ``aiki dev|server|worker|services`` (processes), with `_processes` for
  ``aiki server --processes`` and `_settings` for the options made from the configs;
- `_runs`: ``aiki runs ...``, ``aiki events send``, ``aiki workers list``;
- `_schedules`: ``aiki schedules ...``; `_keys`: ``aiki keys ...``;
- `_logs`: the processes' log formats (``AIKI_LOG_FORMAT``).
"""

from ._main import main as main

__all__ = ["main"]
