"""Log formats for the ``aiki`` processes: readable lines, or one JSON object per line.

Records that concern a run or a worker carry ``run_id`` / ``worker_id`` (passed as
``extra=``); both formats show them. Choose with ``AIKI_LOG_FORMAT=json`` (default: text).
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Final

import orjson

CONTEXT_FIELDS: Final = ("run_id", "worker_id")


class TextFormatter(logging.Formatter):
    """``time level logger: message run=… worker=…``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        context = [f"{name.removesuffix('_id')}={value}" for name in CONTEXT_FIELDS
                   if (value := getattr(record, name, None)) is not None]  # fmt: skip
        if not context:
            return line
        head, newline, rest = line.partition("\n")  # context before any traceback
        return f"{head} {' '.join(context)}{newline}{rest}"


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``at``, ``level``, ``logger``, ``message``, the context
    fields present, and ``exception`` (the formatted traceback) if any."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "at": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def formatter(kind: str | None) -> logging.Formatter:
    """The formatter for ``AIKI_LOG_FORMAT`` (``json`` or ``text``).

    Raises:
        ValueError: another value.
    """
    if kind in (None, "", "text"):
        return TextFormatter()
    if kind == "json":
        return JsonFormatter()
    raise ValueError(f"AIKI_LOG_FORMAT must be 'text' or 'json', not {kind!r}")
