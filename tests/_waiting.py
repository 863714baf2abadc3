"""Waiting for a condition on a real service (which cannot notify us) under a deadline."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio


async def wait_until(condition: Callable[[], Awaitable[bool]], *, interval: float = 0.005) -> None:
    """Re-check ``condition`` until it holds. Callers bound it with ``trio.fail_after``.

    For state that lives in Redis or PostgreSQL (a client blocked, a query running), where
    no event exists to wait on; in-process state should use trio events instead.
    """
    while not await condition():  # noqa: ASYNC110 - external state, nothing to wait on
        await trio.sleep(interval)
