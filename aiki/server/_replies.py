"""Replies to requests, on both carriers: an operation's reply, or its error.

An `aiki.AikiError` is a clear 4xx (or a retryable 503) naming what was wrong; anything
else is a bug: it is logged with its traceback and the caller gets a 500 that says so
(and nothing else about it).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..errors import AikiError
from ..protocol import InternalError, encode_error

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

logger = logging.getLogger(__name__)


async def guarded(call: Callable[[], Awaitable[bytes]]) -> tuple[int, bytes]:
    """Run ``call``; an error becomes ``(status, {"error": {...}})``. Cancellation passes."""
    try:
        return 200, await call()
    except AikiError as exc:
        return exc.http_status, encode_error(exc)
    except Exception:
        logger.exception("unexpected error while serving a request")
        return 500, encode_error(InternalError("internal server error; see the server log"))
