"""The browser client's protocol side, sans-IO: HTTP/1.1 (h11) for the page and the
WebSocket handshake, WebSocket framing (wsproto) for the chat, the static files and the
``--web-origins`` rules. Nothing here touches a socket (like ``protocol.py``): tests drive
``HttpGateway`` and ``WebSocketFramer`` bytes in, events and bytes out. ``web.py`` puts
them on sockets.

Origins: a browser sends ``Origin`` with every WebSocket handshake, and any page on the
web could otherwise open a socket to this server from its visitors' browsers. A handshake
is accepted only when ``Origin`` is the page's own origin (the scheme of this listener
and the ``Host`` the browser asked for) or one of ``--web-origins``. A handshake without
``Origin`` does not come from a browser page and is accepted (such a client could send any
``Origin`` it liked anyway). A refused handshake gets ``403``, never ``101``.
"""

from __future__ import annotations

import logging
import mimetypes
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib import resources

import h11
from wsproto import ConnectionType, WSConnection
from wsproto.connection import Connection as WsConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    TextMessage,
)
from wsproto.utilities import RemoteProtocolError as WsRemoteProtocolError

from geventchat.core import protocol

log = logging.getLogger("geventchat")

# Where the browser opens its WebSocket.
WS_PATH = "/ws"

# Seconds one HTTP request may take to arrive, counted from the end of the previous
# response (so an idle keep-alive connection is closed after this too). The page's few
# requests come at once; a client trickling its headers is cut off.
HTTP_REQUEST_TIMEOUT = 10.0

# Largest request head (request line and headers) accepted; browsers send about 1 KiB.
HTTP_MAX_HEAD = 16 * 1024

# Requests served on one keep-alive connection before it is closed.
HTTP_MAX_REQUESTS = 100

# Close codes (RFC 6455 section 7.4.1).
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_TRY_AGAIN_LATER = 1013

# Sent with every response: the page loads nothing from anywhere else, may not be framed,
# and runs no inline script, so even text that slipped into the page as markup could not
# run. ('self' in connect-src covers ws: and wss: to the same host and port.)
SECURITY_HEADERS = [
    (
        b"Content-Security-Policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        b"connect-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'none'; "
        b"frame-ancestors 'none'",
    ),
    (b"X-Content-Type-Options", b"nosniff"),
    (b"Referrer-Policy", b"no-referrer"),
    (b"X-Frame-Options", b"DENY"),
]

_CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".json": "application/json",
    ".webmanifest": "application/manifest+json",
}


# ------------------------------------------------------------------------ static files


@dataclass(frozen=True)
class StaticFile:
    body: bytes
    content_type: str


def load_static() -> dict[str, StaticFile]:
    """The page and its assets, by URL path, read once from the package."""
    files: dict[str, StaticFile] = {}
    folder = resources.files("geventchat") / "static"
    for entry in folder.iterdir():
        name = entry.name
        if not entry.is_file() or name.startswith("."):
            continue
        suffix = name[name.rfind(".") :] if "." in name else ""
        content_type = _CONTENT_TYPES.get(suffix) or mimetypes.guess_type(name)[0] or "application/octet-stream"
        files["/static/" + name] = StaticFile(entry.read_bytes(), content_type)
    if "/static/index.html" in files:
        files["/"] = files["/static/index.html"]
    return files


# --------------------------------------------------------------------------- origins


def normalise_origin(origin: str) -> str:
    """``HTTP://Example.com:8080/`` -> ``http://example.com:8080`` (what browsers send)."""
    origin = origin.strip().rstrip("/").lower()
    for scheme, port in (("http://", ":80"), ("https://", ":443")):
        if origin.startswith(scheme) and origin.endswith(port):
            origin = origin[: -len(port)]
    return origin


def parse_origins(text: str | None) -> frozenset[str]:
    """The ``--web-origins`` value: comma-separated origins; ValueError if one is not
    ``http://HOST[:PORT]`` or ``https://HOST[:PORT]``."""
    if not text:
        return frozenset()
    origins = set()
    for part in text.split(","):
        if not part.strip():
            continue
        origin = normalise_origin(part)
        scheme, sep, rest = origin.partition("://")
        if scheme not in ("http", "https") or not sep or not rest or "/" in rest:
            raise ValueError(f"not an origin (scheme://host[:port]): {part.strip()!r}")
        origins.add(origin)
    return frozenset(origins)


# ------------------------------------------------------------------------ HTTP, sans-IO


@dataclass
class Upgrade:
    """The handshake was accepted: the socket now speaks WebSocket."""

    ws: WsConnection
    trailing: bytes  # bytes received after the handshake request (frames already sent)
    origin: str


@dataclass
class HttpStep:
    """What to do after feeding received bytes to ``HttpGateway``."""

    send: bytes = b""  # to send, in order, before anything else
    close: bool = False  # then close the connection
    upgrade: Upgrade | None = None  # then serve the socket as a WebSocket
    log: list[str] = field(default_factory=list)  # lines for the console (info level)


class HttpGateway:
    """One HTTP connection's requests, sans-IO: bytes in, an ``HttpStep`` out.

    Serves ``files`` (URL path -> StaticFile) to GET and HEAD and hands a valid, allowed
    WebSocket handshake at ``/ws`` over as an ``Upgrade``. Anything else gets a plain
    error response; a request that is not valid HTTP gets ``400`` and the connection is
    closed, with one line for the log.
    """

    def __init__(
        self, files: dict[str, StaticFile], origins: frozenset[str] = frozenset(), scheme: str = "http", peer: str = "?"
    ) -> None:
        self.files = files
        self.origins = origins
        self.scheme = scheme
        self.peer = peer
        self.requests = 0
        self._h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=HTTP_MAX_HEAD)
        self._request: h11.Request | None = None

    @property
    def idle(self) -> bool:
        """True between requests (nothing of a request received yet)."""
        return self._h11.their_state is h11.IDLE and self._request is None

    def receive_data(self, data: bytes) -> HttpStep:
        """Feed received bytes (``b""`` for end of input)."""
        step = HttpStep()
        conn = self._h11
        try:
            conn.receive_data(data)
        except RuntimeError:  # bytes after the close: nothing more to do
            step.close = True
            return step
        while not step.close and step.upgrade is None:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                self._fail(step, exc.error_status_hint, f"bad HTTP request: {exc}")
                break
            if event is h11.NEED_DATA:
                break
            if event is h11.PAUSED:
                if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
                    conn.start_next_cycle()
                    continue
                break
            kind = type(event)
            if isinstance(event, h11.Request):
                if _head_size(event) > HTTP_MAX_HEAD:
                    # h11 enforces the limit only on a head still arriving; one recv can
                    # bring a whole larger one.
                    self._fail(step, 431, "bad HTTP request: request head too large")
                    break
                self._request = event
                self.requests += 1
            elif kind is h11.EndOfMessage:
                request, self._request = self._request, None
                if request is not None:
                    self._respond(step, request)
                if not step.close and step.upgrade is None:
                    if conn.our_state is h11.MUST_CLOSE or self.requests >= HTTP_MAX_REQUESTS:
                        step.close = True
                    elif conn.our_state is h11.DONE and conn.their_state is h11.DONE:
                        conn.start_next_cycle()
            elif kind is h11.ConnectionClosed:
                step.close = True
            # h11.Data: a request body; nothing here takes one, so it is skipped.
        return step

    # -- responses

    def _respond(self, step: HttpStep, request: h11.Request) -> None:
        target = request.target.decode("ascii", "replace")
        path = target.split("?", 1)[0]
        method = request.method
        if path == WS_PATH:
            self._websocket(step, request)
            return
        if method not in (b"GET", b"HEAD"):
            self._send(step, 405, b"Method not allowed\n", [(b"Allow", b"GET, HEAD")])
            return
        static = self.files.get(path)
        if static is None:
            self._send(step, 404, b"Not found\n")
            return
        log.debug("HTTP %s %s from %s", method.decode("ascii", "replace"), path, self.peer)
        self._send(step, 200, static.body, [(b"Cache-Control", b"no-cache")], static.content_type, head=method == b"HEAD")

    def _websocket(self, step: HttpStep, request: h11.Request) -> None:
        headers = {name.lower(): value for name, value in request.headers}
        origin_raw = headers.get(b"origin")
        origin = origin_raw.decode("latin-1") if origin_raw is not None else ""
        if origin_raw is not None and not self.origin_allowed(origin, headers.get(b"host", b"").decode("latin-1")):
            step.log.append(f"Refused WebSocket from {self.peer} (origin {origin!r} not allowed)")
            self._send(step, 403, b"Forbidden: this page's origin may not connect\n", close=True)
            return
        ws = WSConnection(ConnectionType.SERVER)
        try:
            if request.method != b"GET":
                raise WsRemoteProtocolError("Request method must be GET")
            ws.initiate_upgrade_connection(list(request.headers), request.target)
            list(ws.events())
        except WsRemoteProtocolError as exc:
            hint = getattr(exc, "event_hint", None)
            status = getattr(hint, "status_code", 400) or 400
            extra = list(getattr(hint, "headers", []) or [])
            step.log.append(f"Bad WebSocket handshake from {self.peer} ({exc})")
            self._send(step, status, b"Bad WebSocket handshake\n", extra, close=True)
            return
        step.send += ws.send(AcceptConnection())
        assert ws.connection is not None
        trailing = self._h11.trailing_data[0]
        step.upgrade = Upgrade(ws.connection, bytes(trailing), origin)

    def origin_allowed(self, origin: str, host: str) -> bool:
        wanted = normalise_origin(origin)
        own = normalise_origin(f"{self.scheme}://{host}") if host else None
        return wanted == own or wanted in self.origins

    def _send(
        self,
        step: HttpStep,
        status: int,
        body: bytes,
        headers: Iterable[tuple[bytes, bytes]] = (),
        content_type: str = "text/plain; charset=utf-8",
        head: bool = False,
        close: bool = False,
    ) -> None:
        conn = self._h11
        all_headers = [
            (b"Content-Type", content_type.encode("ascii")),
            (b"Content-Length", str(len(body)).encode("ascii")),
            *SECURITY_HEADERS,
            *headers,
        ]
        if close:
            all_headers.append((b"Connection", b"close"))
        try:
            step.send += conn.send(h11.Response(status_code=status, headers=all_headers)) or b""
            if not head:
                step.send += conn.send(h11.Data(data=body)) or b""
            step.send += conn.send(h11.EndOfMessage()) or b""
        except h11.LocalProtocolError:
            close = True  # a response is not possible in this state: just close
        if close:
            step.close = True

    def _fail(self, step: HttpStep, status: int, reason: str) -> None:
        step.log.append(f"Bad HTTP request from {self.peer} ({reason})")
        if self._h11.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            self._send(step, status or 400, b"Bad request\n", close=True)
        step.close = True


def _head_size(request: h11.Request) -> int:
    """About the bytes of a request's head as sent (request line, headers, line ends)."""
    line = len(request.method) + len(request.target) + len(b" HTTP/1.1\r\n") + 1
    return line + sum(len(name) + len(value) + 4 for name, value in request.headers) + 2


# -------------------------------------------------------------------- WebSocket, sans-IO


class WebSocketFramer:
    """A WebSocket connection's received bytes -> line events, like ``LineFramer``.

    Each complete message is one line: a trailing ``\\n`` or ``\\r\\n`` is dropped, the
    text is sanitised like a TCP line (bad UTF-8 in a binary message replaced, control
    characters removed). A message longer than ``max_line`` bytes is discarded as it
    arrives, whatever its framing, and reported as ``LineTooLong`` once it ends: memory for
    one unfinished message stays about ``max_line``.

    Frames the protocol answers by itself (pong) go to ``send_control(bytes)``. A close
    from the peer, or a frame that breaks the protocol, sets ``closed``; the connection
    then stops reading and answers with a close frame (``close_reply``).
    """

    def __init__(self, ws: WsConnection, max_line: int, send_control: Callable[[bytes], None]) -> None:
        self.ws = ws
        self.max_line = max_line
        self.send_control = send_control
        self.closed = False
        self.close_reply: tuple[int, str] | None = None  # code and reason to answer with
        self.error = ""  # why the protocol failed, when it did
        self._parts: list[str | bytes | bytearray] = []
        self._size = 0  # bytes of the message so far
        self._discarding = False

    @property
    def buffered(self) -> int:
        return 0 if self._discarding else self._size

    @property
    def in_line(self) -> bool:
        """True while a message (or any frame) has begun and not ended: what the line
        timeout (slowloris) watches, as for a TCP line."""
        if self._size > 0:
            return True
        # Bytes of a frame whose payload has not begun (a header trickled in) sit in
        # wsproto's frame decoder; look there, without failing if its insides change.
        decoder = getattr(getattr(self.ws, "_proto", None), "_frame_decoder", None)
        if decoder is None:
            return False
        try:
            return decoder.header is not None or len(decoder.buffer) > 0
        except (AttributeError, TypeError):
            return False

    def receive_data(self, data: bytes) -> list[protocol.FramerEvent]:
        events: list[protocol.FramerEvent] = []
        if self.closed:
            return events
        self.ws.receive_data(data)
        for event in self.ws.events():
            kind = type(event)
            if kind is TextMessage or kind is BytesMessage:
                self._message_part(event, events)  # type: ignore[arg-type]
            elif kind is Ping:
                self.send_control(self.ws.send(event.response()))  # type: ignore[attr-defined]
            elif kind is CloseConnection:
                self.closed = True
                if self.ws.state is ConnectionState.REMOTE_CLOSING:
                    self.close_reply = (event.code, "")  # type: ignore[attr-defined]
                else:  # a protocol error: wsproto reports it as a close it did not receive
                    self.error = str(event.reason or event.code)  # type: ignore[attr-defined]
                    self.close_reply = (event.code, event.reason or "")  # type: ignore[attr-defined]
                break
            # Pong: nothing to do.
        return events

    def _message_part(self, event: TextMessage | BytesMessage, events: list[protocol.FramerEvent]) -> None:
        data = event.data
        if not self._discarding:
            size = len(data.encode("utf-8")) if isinstance(data, str) else len(data)
            self._size += size
            if self._size > self.max_line + 2:  # room for a line ending that is not counted
                self._parts.clear()
                self._discarding = True
            elif data:
                self._parts.append(data)
        else:
            self._size += len(data.encode("utf-8")) if isinstance(data, str) else len(data)
        if not event.message_finished:
            return
        parts, self._parts = self._parts, []
        size, self._size = self._size, 0
        discarding, self._discarding = self._discarding, False
        if discarding:
            events.append(protocol.LineTooLong(size))
            return
        if parts and isinstance(parts[0], str):
            text = "".join(parts)  # type: ignore[arg-type]
            raw = None
        else:
            raw = b"".join(parts)  # type: ignore[arg-type]
            text = None
        if text is not None:
            if text.endswith("\n"):
                text = text[:-2] if text.endswith("\r\n") else text[:-1]
            length = len(text.encode("utf-8"))
            if length > self.max_line:
                events.append(protocol.LineTooLong(length))
            else:
                events.append(protocol.strip_controls(text))
        else:
            assert raw is not None
            if raw.endswith(b"\n"):
                raw = raw[:-2] if raw.endswith(b"\r\n") else raw[:-1]
            if len(raw) > self.max_line:
                events.append(protocol.LineTooLong(len(raw)))
            else:
                events.append(protocol.decode_line(raw))


def text_frame(payload: bytes) -> bytes:
    """An unmasked, final text frame (what a server sends) carrying ``payload``."""
    size = len(payload)
    if size < 126:
        return bytes((0x81, size)) + payload
    if size < 65536:
        return bytes((0x81, 126)) + size.to_bytes(2, "big") + payload
    return bytes((0x81, 127)) + size.to_bytes(8, "big") + payload


def encode_lines(chunks: list[bytes]) -> bytes:
    """Queued output as frames: every line (a piece of the outbox may hold several, each
    ending in newline) becomes one text frame; a ``ControlFrame`` passes as it is."""
    out = []
    for chunk in chunks:
        if type(chunk) is ControlFrame:
            out.append(bytes(chunk))
            continue
        lines = chunk.split(b"\n")
        if lines[-1] == b"":
            lines.pop()
        out.extend(text_frame(line) for line in lines)
    return b"".join(out)


class ControlFrame(bytes):
    """Bytes for the outbox that are already a WebSocket frame (pong, close)."""
