"""Helpers for the browser-client tests: the server's web port and a small blocking
WebSocket client (wsproto over a plain socket) that behaves like a browser's."""

from __future__ import annotations

import re
import socket
import time

from conftest import HOST, WAIT, WELCOME_RE, ServerProcess
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)

WEB_RE = re.compile(r"Web client on https?://127\.0\.0\.1:(\d+)/$")


def web_port(server: ServerProcess) -> int:
    """The port of the page, from the console line ``Web client on http://HOST:PORT/``."""
    line = server.wait_for(lambda l: WEB_RE.search(l) is not None)
    return int(WEB_RE.search(line).group(1))  # type: ignore[union-attr]


class Refused(Exception):
    def __init__(self, status: int, raw: bytes) -> None:
        super().__init__(f"handshake refused with {status}")
        self.status = status
        self.raw = raw


class WsClient:
    """Open ``ws://127.0.0.1:PORT/ws`` (with ``origin``); lines are text frames."""

    def __init__(self, port: int, origin: str | None = "same", welcome: bool = True, timeout: float = WAIT, tls=None) -> None:
        """``tls``: an ssl.SSLContext to speak wss (then the page's origin is https)."""
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        if tls is not None:
            self.sock = tls.wrap_socket(self.sock, server_hostname=HOST)
        self.port = self.sock.getsockname()[1]
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.raw_received = b""
        self.pending: list[str] = []
        self._partial = ""  # the part of a text frame received so far
        self.closed: CloseConnection | None = None
        self.timeout = timeout
        headers = []
        if origin == "same":
            origin = f"{'https' if tls is not None else 'http'}://{HOST}:{port}"
        if origin is not None:
            headers.append((b"Origin", origin.encode()))
        self.sock.sendall(self.ws.send(Request(host=f"{HOST}:{port}", target="/ws", extra_headers=headers)))
        deadline = time.monotonic() + timeout
        while True:
            data = self._recv(deadline)
            self.raw_received += data
            if not data:
                raise Refused(0, self.raw_received)
            self.ws.receive_data(data)
            for event in self.ws.events():
                if isinstance(event, AcceptConnection):
                    self._events_after_accept()
                    break
                if isinstance(event, RejectConnection):
                    raise Refused(event.status_code, self.raw_received)
                if isinstance(event, RejectData):
                    continue
            else:
                continue
            break
        self.nick = str(self.port)
        if welcome:
            first = self.line()
            match = WELCOME_RE.match(first)
            assert match, f"first line is not the welcome: {first!r}"
            self.nick = match.group(1)

    def _recv(self, deadline: float) -> bytes:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError("nothing received in time")
        self.sock.settimeout(remaining)
        try:
            return self.sock.recv(65536)
        except TimeoutError:
            raise AssertionError("nothing received in time") from None
        except ConnectionResetError:
            return b""

    def _events_after_accept(self) -> None:
        for event in self.ws.events():
            self._take(event)

    def _take(self, event) -> None:
        if isinstance(event, TextMessage):
            # A frame that arrives in pieces comes as several events; one that ends
            # without ending its message would be a line split over frames.
            assert event.message_finished or not event.frame_finished, "the server sends one frame per line"
            self._partial += event.data
            if event.message_finished:
                self.pending.append(self._partial)
                self._partial = ""
        elif isinstance(event, BytesMessage):
            raise AssertionError("the server sent a binary frame")
        elif isinstance(event, Ping):
            self.sock.sendall(self.ws.send(event.response()))
        elif isinstance(event, CloseConnection):
            self.closed = event
            try:
                self.sock.sendall(self.ws.send(event.response()))
            except Exception:
                pass

    def send(self, *lines: str) -> None:
        self.sock.sendall(b"".join(self.ws.send(TextMessage(data=line)) for line in lines))

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self, timeout: float | None = None) -> str:
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while not self.pending:
            if self.closed is not None:
                raise EOFError(f"closed with {self.closed.code}")
            data = self._recv(deadline)
            if not data:
                raise EOFError("connection closed without a close frame")
            self.ws.receive_data(data)
            for event in self.ws.events():
                self._take(event)
        return self.pending.pop(0)

    def expect(self, *expected: str) -> None:
        got = [self.line() for _ in expected]
        assert got == list(expected), f"expected {list(expected)!r}, got {got!r}"

    def until_closed(self, timeout: float | None = None) -> list[str]:
        """Every line until the server's close frame; returns them."""
        got = []
        while True:
            try:
                got.append(self.line(timeout))
            except EOFError:
                return got

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass
