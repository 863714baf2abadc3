"""Raw sockets for the edge tests: a WebSocket session spoken frame by frame (wsproto over a
blocking socket, so a test can send what no client library would) and a few helpers."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator

import orjson
import wsproto
import wsproto.events
import wsproto.frame_protocol

from .conftest import Cluster

SESSION_PATH = "/api/v1/session"


def address(cluster: Cluster) -> tuple[str, int]:
    """The server's host and port."""
    host, port = cluster.url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


def authorization(cluster: Cluster, role: str) -> list[tuple[bytes, bytes]]:
    """The header that presents the cluster's key of ``role``."""
    return [(b"authorization", f"Bearer {cluster.keys[role]}".encode())]


def read_all(sock: socket.socket) -> bytes:
    """Everything the peer sends until it closes (or the socket's timeout passes)."""
    received = b""
    with contextlib.suppress(OSError):
        while chunk := sock.recv(65536):
            received += chunk
    return received


def client_frame(opcode: int, payload: bytes, *, announced: int | None = None) -> bytes:
    """A masked client frame (its length as announced, if given: more than is sent)."""
    length = len(payload) if announced is None else announced
    if length < 126:
        header = bytes([0x80 | opcode, 0x80 | length])
    elif length < 65536:
        header = bytes([0x80 | opcode, 0x80 | 126]) + length.to_bytes(2, "big")
    else:
        header = bytes([0x80 | opcode, 0x80 | 127]) + length.to_bytes(8, "big")
    mask = os.urandom(4)
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


class Closed(Exception):
    """The server closed the session; ``code`` is its close code (1006: no close frame)."""

    def __init__(self, code: int) -> None:
        super().__init__(f"session closed with code {code}")
        self.code = code


class RawSession:
    """A WebSocket session over a blocking socket.

    ``receive_buffer`` shrinks the socket's receive buffer (a session that stops reading
    then blocks the server's sends to it after a few kilobytes). The session acts with the
    cluster's key of ``role``."""

    def __init__(
        self,
        cluster: Cluster,
        *,
        timeout: float = 10.0,
        receive_buffer: int | None = None,
        role: str = "worker",
    ) -> None:
        host, port = address(cluster)
        self.sock = socket.socket()
        if receive_buffer is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        self.sock.settimeout(timeout)
        self.sock.connect((host, port))
        self.ws = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
        upgrade = wsproto.events.Request(host=host, target=SESSION_PATH,
                                         extra_headers=authorization(cluster, role))  # fmt: skip
        self.sock.sendall(self.ws.send(upgrade))
        self.ids = 0
        for event in self._events():
            if isinstance(event, wsproto.events.AcceptConnection):
                break
            if isinstance(event, wsproto.events.RejectConnection):
                raise Closed(event.status_code)

    def _events(self) -> Iterator[wsproto.events.Event]:
        """The server's events in order, reading as needed; a close raises `Closed`."""
        while True:
            for event in self.ws.events():
                if isinstance(event, wsproto.events.CloseConnection):
                    raise Closed(event.code)
                yield event
            data = self.sock.recv(65536)
            if not data:
                raise Closed(wsproto.frame_protocol.CloseReason.ABNORMAL_CLOSURE)
            self.ws.receive_data(data)

    def send_text(self, text: str) -> None:
        """Send one text frame."""
        self.sock.sendall(self.ws.send(wsproto.events.TextMessage(data=text)))

    def send(self, operation: str, body: object) -> None:
        """Send one request frame (its ID is the next number)."""
        self.ids += 1
        self.send_text(orjson.dumps({"id": self.ids, "op": operation, "body": body}).decode())

    def reply(self) -> dict[str, object]:
        """The next reply frame (``ok`` or ``error``), skipping pushes and subscription frames.

        Raises:
            Closed: the server closed the session first.
            TimeoutError: nothing came within the socket's timeout.
        """
        text = ""
        for event in self._events():
            if isinstance(event, wsproto.events.TextMessage):
                text += event.data  # (a message may come in parts)
                if not event.message_finished:
                    continue
                frame = orjson.loads(text)
                text = ""
                if "ok" in frame or "error" in frame:
                    return frame  # type: ignore[no-any-return]
        raise AssertionError("unreachable")

    def call(self, operation: str, body: object) -> dict[str, object]:
        """Send a request and return its reply frame."""
        self.send(operation, body)
        return self.reply()

    def close(self) -> None:
        """Drop the connection (no closing handshake)."""
        self.sock.close()
