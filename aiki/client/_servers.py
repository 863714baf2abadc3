"""Several server addresses, and moving on to the next when one goes away.

``AIKI_SERVER_URL`` (and every ``url`` a client or worker takes) may list several
servers of one deployment, comma-separated: ``http://a:8470,http://b:8470``. Every
server serves every request (they share PostgreSQL and Redis), so a client or worker
talks to one at a time and moves on to the next in the list when it cannot connect or
its connection drops. Each process starts at a random place in the list, so clients and
workers spread over the servers. Behind a TCP or HTTP load balancer, one URL does the
same.
"""

from __future__ import annotations

import random
import urllib.parse
from typing import TYPE_CHECKING, TypeVar

from ..errors import UnavailableError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

T = TypeVar("T")


def parse_server_urls(urls: str | Sequence[str]) -> tuple[str, ...]:
    """The base URLs in ``urls`` (comma-separated, or a sequence), without trailing ``/``.

    Raises:
        ValueError: none given, or one is not an ``http://`` or ``https://`` URL with a
            host (the message names it).
    """
    items = urls.split(",") if isinstance(urls, str) else list(urls)
    found = tuple(item.strip().rstrip("/") for item in items if item.strip())
    if not found:
        raise ValueError("server URL: give at least one (http://host:port)")
    for url in found:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"server URL {url!r}: must be http://host:port or https://...")
    return found


class Servers:
    """The servers a client or worker may talk to, and which one it uses now.

    Args:
        urls: one base URL, several comma-separated, or a sequence of them.
        rng: picks the first server (default: a random place in the list).

    Raises:
        ValueError: see `parse_server_urls`.
    """

    def __init__(self, urls: str | Sequence[str], rng: random.Random | None = None) -> None:
        self.urls = parse_server_urls(urls)
        self._current = (rng or random.Random()).randrange(len(self.urls))

    def __str__(self) -> str:
        return ",".join(self.urls)

    @property
    def current(self) -> str:
        """The server in use."""
        return self.urls[self._current]

    def failed(self, url: str) -> None:
        """``url`` could not be reached, or its connection dropped: move on to the next
        server (once, however many callers report the same failure)."""
        if url == self.current:
            self._current = (self._current + 1) % len(self.urls)

    async def first_reachable(self, connect: Callable[[str], Awaitable[T]]) -> T:
        """``connect`` to the server in use; while one is unreachable
        (`aiki.UnavailableError`), to each next one in turn, once around the list.

        Raises:
            aiki.UnavailableError: none could be reached (the last one's error).
            aiki.AikiError: a server refused (e.g. the key): not retried elsewhere.
        """
        error: UnavailableError | None = None
        for _ in self.urls:
            url = self.current
            try:
                return await connect(url)
            except UnavailableError as exc:
                error = exc
                self.failed(url)
        assert error is not None
        raise error
