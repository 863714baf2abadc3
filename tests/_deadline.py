"""A hard cap for tests: ``@deadline(seconds)`` fails a trio test that runs too long."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, ParamSpec, TypeVar

import trio

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

P = ParamSpec("P")
T = TypeVar("T")


def deadline(seconds: float) -> Callable[[Callable[P, Awaitable[T]]], Callable[P, Awaitable[T]]]:
    """Fail the decorated async test with `trio.TooSlowError` after ``seconds``.

    Under the autojump clock this is virtual time, so it also catches deadlocks.
    """

    def decorate(test: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
        @functools.wraps(test)
        async def capped(*args: P.args, **kwargs: P.kwargs) -> T:
            with trio.fail_after(seconds):
                return await test(*args, **kwargs)

        return capped

    return decorate
