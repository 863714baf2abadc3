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

_ESCAPES: Final = (
    {code: f"\\x{code:02x}" for code in (*range(32), *range(127, 160))}
    | {ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t"}
    # Line separators and the bidirectional controls (a name could reverse what follows it).
    | {code: f"\\u{code:04x}" for code in (0x200E, 0x200F, *range(0x2028, 0x202F),
                                           *range(0x2066, 0x206A))}
)  # fmt: skip


def escaped(text: str) -> str:
    """``text`` on one line: control characters (C0, C1), line separators and bidirectional
    controls written as escapes (``\\n``, ``\\x1b``, ``\\u202e``), so nothing a peer sent
    can start a line of its own in the log or change how the rest of a line reads."""
    return text.translate(_ESCAPES)


class TextFormatter(logging.Formatter):
    """``time level logger: message run=… worker=…``: one line per record (a traceback
    follows on lines of its own), with the message and the context `escaped`."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escaped(record.message)
        return super().formatMessage(record)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        context = [f"{name.removesuffix('_id')}={escaped(str(value))}" for name in CONTEXT_FIELDS
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
