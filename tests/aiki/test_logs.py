"""Log lines carry run and worker IDs, as text or as JSON (AIKI_LOG_FORMAT=json)."""

from __future__ import annotations

import logging
import sys

import orjson
import pytest

from aiki.cli._logs import JsonFormatter, TextFormatter, formatter


def _record(**extra: object) -> logging.LogRecord:
    record = logging.LogRecord("aiki.worker", logging.WARNING, __file__, 1, "run %s stopped",
                               ("r-1",), None)  # fmt: skip
    record.__dict__.update(extra)
    return record


def test_json_lines_carry_the_context_and_the_traceback() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        record = _record(run_id="r-1", worker_id="w-9")
        record.exc_info = sys.exc_info()
    entry = orjson.loads(JsonFormatter().format(record))
    assert {key: entry[key] for key in ("level", "logger", "message", "run_id", "worker_id")} == {
        "level": "warning", "logger": "aiki.worker", "message": "run r-1 stopped",
        "run_id": "r-1", "worker_id": "w-9",
    }  # fmt: skip
    assert "RuntimeError: boom" in entry["exception"]
    assert entry["at"].endswith("+00:00")


def test_text_lines_show_the_context_and_plain_records_stay_plain() -> None:
    text = TextFormatter()
    assert text.format(_record(run_id="r-1")).endswith("aiki.worker: run r-1 stopped run=r-1")
    assert text.format(_record()).endswith("aiki.worker: run r-1 stopped")


def test_an_unknown_format_is_refused_clearly() -> None:
    assert isinstance(formatter("json"), JsonFormatter)
    assert isinstance(formatter(None), TextFormatter)
    with pytest.raises(ValueError, match="'text' or 'json'"):
        formatter("xml")


def test_a_peers_line_breaks_cannot_forge_log_lines() -> None:
    """A worker ID or message argument with a line break stays on its record's line."""
    record = logging.makeLogRecord({
        "name": "aiki.server", "levelno": logging.WARNING, "levelname": "WARNING",
        "msg": "worker %s missed its heartbeats", "args": ("w1\n2026-01-01 ERROR forged",),
        "worker_id": "w1\rX",
    })  # fmt: skip
    line = TextFormatter().format(record)
    assert "\n" not in line
    assert "\r" not in line
    assert line.endswith("worker w1\\n2026-01-01 ERROR forged missed its heartbeats worker=w1\\rX")


def test_bidirectional_controls_and_c1_codes_are_escaped_too() -> None:
    """A worker ID that would reverse the rest of the line (U+202E), a C1 CSI (0x9b) or a
    Unicode line separator is written as its escape."""
    record = logging.makeLogRecord({
        "name": "aiki.server", "levelno": logging.WARNING, "levelname": "WARNING",
        "msg": "worker %s missed its heartbeats", "args": ("\u202edlrow\u2028x\x9b2J",),
        "worker_id": "\u2066w\u2069",
    })  # fmt: skip
    line = TextFormatter().format(record)
    assert line.endswith("worker \\u202edlrow\\u2028x\\x9b2J missed its heartbeats "
                         "worker=\\u2066w\\u2069")  # fmt: skip
