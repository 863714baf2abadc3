"""Error replies: how an `aiki.AikiError` travels from the server to a client and back.

The body is ``{"error": {"code", "message", "errors", "run_id", "retry_after_seconds"}}``
on both carriers (HTTP
with the error's status, a session reply with the request's ``id``); ``code`` names the
`aiki.errors` class the client raises again.
"""

from __future__ import annotations

from typing import Final

import attrs
import orjson

from ..errors import (
    AikiError,
    LimitReachedError,
    RateLimitedError,
    ReferenceConflictError,
    ValidationError,
    error_from_reply,
)
from ..wire import CodecError, WireCodec


@attrs.frozen(kw_only=True)
class ErrorBody:
    """An error reply: ``code`` names an `aiki.errors` class."""

    code: str
    message: str
    errors: tuple[str, ...] = ()
    run_id: str | None = None
    retry_after_seconds: float | None = None
    """When to try again (`aiki.RateLimitedError`)."""


ERROR_BODY: Final = WireCodec[ErrorBody](ErrorBody)


class InternalError(AikiError):
    """An unexpected server failure (the details go to the server's log)."""


def encode_error(exc: AikiError) -> bytes:
    """The JSON error object of ``exc``: ``{"error": {...}}``."""
    body = ErrorBody(
        code=exc.code,
        message=str(exc),
        errors=exc.errors if isinstance(exc, ValidationError) else (),
        run_id=exc.run_id if isinstance(exc, (ReferenceConflictError, LimitReachedError)) else None,
        retry_after_seconds=exc.retry_after_seconds if isinstance(exc, RateLimitedError) else None,
    )
    return orjson.dumps({"error": ERROR_BODY.unstructure(body)})


def decode_error(error: object) -> AikiError:
    """The exception an error object (the value under ``"error"``) stands for; a body that
    does not parse is an `aiki.AikiError` quoting it."""
    try:
        body = ERROR_BODY.structure(error)
    except CodecError:
        return AikiError(f"the server answered with a malformed error: {str(error)[:200]}")
    return error_from_reply(body.code, body.message, errors=body.errors, run_id=body.run_id,
                            retry_after_seconds=body.retry_after_seconds)  # fmt: skip
