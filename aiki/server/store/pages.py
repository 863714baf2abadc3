"""Pages of listings (runs, schedules): bounded in items and in bytes, and the cursors
that name where the next page starts (listings are ordered by ``created_at DESC, id
DESC``)."""

from __future__ import annotations

import base64
import datetime as dt
import uuid
from typing import Final

import orjson

from ...errors import BadRequestError

PAGE_BYTES: Final = 4 * 1024 * 1024
"""A page of a listing holds at most this much of its items' payloads (inputs, outputs,
errors), and always at least one item: a page's size is bounded in bytes, not only in
items (500 runs of 2 MiB inputs would be a 1 GB reply)."""


class PageBudget:
    """Decides, item by item, what fits one page: at most ``limit`` items and `PAGE_BYTES`
    of their payloads (the first item always fits)."""

    def __init__(self, limit: int, max_bytes: int = PAGE_BYTES) -> None:
        self.limit = limit
        self.max_bytes = max_bytes
        self.items = 0
        self.bytes = 0

    def take(self, *payloads: object) -> bool:
        """Whether an item with these payloads fits the page (and count it if it does)."""
        size = sum(len(orjson.dumps(payload)) for payload in payloads)
        if self.items >= self.limit or (self.items and self.bytes + size > self.max_bytes):
            return False
        self.items += 1
        self.bytes += size
        return True


def encode_cursor(created_at: dt.datetime, row_id: str) -> str:
    """A page cursor: the position after the row created at ``created_at`` with ``row_id``
    (listings are ordered by ``created_at DESC, id DESC``)."""
    raw = f"{created_at.isoformat()}|{row_id}".encode()
    return base64.urlsafe_b64encode(raw).decode()


def decode_cursor(cursor: str) -> tuple[dt.datetime, uuid.UUID]:
    """The position an `encode_cursor` cursor names.

    Raises:
        BadRequestError: it is not such a cursor.
    """
    try:
        created, run_id = base64.urlsafe_b64decode(cursor.encode()).decode().split("|")
        return dt.datetime.fromisoformat(created), uuid.UUID(run_id)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequestError(f"invalid cursor {cursor!r}", errors=("invalid @ $.cursor",)) from exc
