"""What a browser could be tricked into sending is refused before the application sees it.

- An operation (``POST /api/v1/...``) must say ``content-type: application/json``: a page
  on another site can make a browser POST ``text/plain`` (or a form) without asking the
  user, but not JSON. Otherwise: 415.
- A WebSocket upgrade or a ``POST`` from a browser carries an ``Origin``; it must be the
  server's own (the scheme and ``Host`` the request came to) or one of
  ``allowed_origins``. Otherwise it is refused (403): a page on another site can neither
  sign a browser in nor act with its cookie. Clients that are not browsers send no
  ``Origin``.
- A server bound to a loopback address answers only requests addressed to a loopback
  name (``localhost``, ``127.0.0.1``, ``[::1]``): a web page whose DNS name is made to
  point at 127.0.0.1 (DNS rebinding) reaches nothing. Otherwise: 421.
"""

from __future__ import annotations

import ipaddress
import math
from typing import TYPE_CHECKING, Any, Final

import attrs
import orjson

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, MutableMapping

    Scope = MutableMapping[str, Any]
    Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
    Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
    App = Callable[[Scope, Receive, Send], Awaitable[None]]

LOOPBACK_NAMES: Final = frozenset({"localhost", "127.0.0.1", "::1"})
CODES: Final = {403: "forbidden", 415: "unsupported_media_type", 421: "misdirected_request"}


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address, no port) is this machine's loopback."""
    if host.lower() in LOOPBACK_NAMES or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _host_name(host_header: str) -> str:
    """The name in a ``Host`` header, without its port (``[::1]:8470`` → ``::1``)."""
    if host_header.startswith("["):
        return host_header[1 : host_header.find("]")]
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


@attrs.frozen
class BrowserGuard:
    """ASGI middleware: the checks in the module docstring, around ``app``.

    Args:
        loopback_only: the server listens on a loopback address (check ``Host``).
        allowed_origins: browser origins that may open a WebSocket besides the server's own
            (``https://ops.example.com``).
    """

    app: App
    loopback_only: bool
    allowed_origins: frozenset[str] = frozenset()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind in ("http", "websocket"):
            host = _header(scope, b"host") or ""
            if self.loopback_only and not is_loopback(_host_name(host)):
                await refuse(scope, send, 421, CODES[421], f"this server answers only on "
                             f"a loopback address, not {host!r}")  # fmt: skip
                return
            if kind == "http" and scope.get("method") == "POST":
                content_type = (_header(scope, b"content-type") or "").split(";")[0].strip()
                if content_type.lower() != "application/json":
                    await refuse(scope, send, 415, CODES[415], "operations take "
                                 "content-type application/json")  # fmt: skip
                    return
            if kind == "websocket" or scope.get("method") == "POST":
                origin = _header(scope, b"origin")
                if origin is not None and not self._origin_allowed(origin, scope, host):
                    what = "open a session" if kind == "websocket" else "send requests"
                    await refuse(scope, send, 403, CODES[403], f"origin {origin!r} may "
                                 f"not {what} here")  # fmt: skip
                    return
        await self.app(scope, receive, send)

    def _origin_allowed(self, origin: str, scope: Scope, host: str) -> bool:
        own = {f"{scheme}://{host}" for scheme in ("http", "https")}
        return origin in own or origin in self.allowed_origins


async def refuse(
    scope: Scope,
    send: Send,
    status: int,
    code: str,
    message: str,
    *,
    retry_after: float | None = None,
) -> None:
    """Answer ``status`` with an error body before the application sees the request (a
    WebSocket upgrade gets the same HTTP answer where the server can send one, so no
    session is opened). With ``retry_after`` (seconds), the answer says when to come
    back: ``Retry-After`` (whole seconds, rounded up) and ``retry_after_seconds``."""
    error: dict[str, object] = {"code": code, "message": message}
    headers = [(b"content-type", b"application/json")]
    if retry_after is not None:
        error["retry_after_seconds"] = retry_after
        headers.append((b"retry-after", str(max(1, math.ceil(retry_after))).encode()))
    body = orjson.dumps({"error": error})
    if status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="aiki"'))
    if scope["type"] == "websocket":
        if "websocket.http.response" in scope.get("extensions", {}):
            await send({"type": "websocket.http.response.start", "status": status,
                        "headers": headers})  # fmt: skip
            await send({"type": "websocket.http.response.body", "body": body})
        else:  # closing before accepting answers 403
            await send({"type": "websocket.close", "code": 1008})
        return
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
