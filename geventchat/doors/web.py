"""The browser client's gateway: the chat page over HTTP and the chat over WebSocket.

``--web-port P`` starts a second listener (``WebServer``) next to the chat port. It speaks
HTTP/1.1 with h11 and serves the page (``GET /``) and its assets (``GET /static/NAME``),
all shipped in ``geventchat/static``; ``GET /ws`` is the WebSocket handshake (wsproto).
The protocol state lives in ``webproto.py`` (sans-IO); this module puts it on sockets.

After the handshake the socket becomes a ``Session`` read by a ``Reader``, as for a line
client, with this door's codec (``WebSocketCodec``): each text frame the browser sends is
one line of the wire protocol and each line the server sends is one text frame (without
its newline); everything else (nicknames, rooms, presence, --max-line, --max-sendq,
--rate, parking aside) is the very same code as for a TCP client.
"""

from __future__ import annotations

import logging
import socket
import time
from typing import cast

import gevent
from gevent.server import StreamServer
from wsproto.connection import Connection as WsConnection
from wsproto.connection import ConnectionState
from wsproto.events import CloseConnection

from geventchat.core import limits, protocol
from geventchat.core.webproto import (
    CLOSE_GOING_AWAY,
    CLOSE_NORMAL,
    CLOSE_TRY_AGAIN_LATER,
    HTTP_REQUEST_TIMEOUT,
    ControlFrame,
    HttpGateway,
    Upgrade,
    WebSocketFramer,
    encode_lines,
    load_static,
    text_frame,
)
from geventchat.doors import guard
from geventchat.doors.codec import LineCodec
from geventchat.doors.connection import tune, tune_listener
from geventchat.doors.reader import Reader
from geventchat.doors.session import Session, describe_peer

log = logging.getLogger("geventchat")

# ----------------------------------------------------------------------------- the codec


class _WebSocketFramer(WebSocketFramer):
    """The sans-IO framer, telling the reader when the WebSocket has ended: a close from
    the peer (or a frame that broke the protocol) ends its events with a ``Quit``, as EOF
    ends a line client's input."""

    def __init__(self, session: Session, ws: WsConnection) -> None:
        super().__init__(ws, session.settings.max_line, self._send_control)
        self._session = session

    def _send_control(self, frame: bytes) -> None:
        self._session.deliver(ControlFrame(frame))

    def receive_data(self, data: bytes) -> list[protocol.FramerEvent]:
        events = super().receive_data(data)
        if self.closed:
            session = self._session
            if self.error and not session.drop_reason:
                session.drop_reason = f"bad WebSocket data: {self.error}"
            events.append(protocol.Quit())  # type: ignore[arg-type]
        return events


class WebSocketCodec(LineCodec):
    """The line protocol over WebSocket: each text frame the browser sends is one line,
    each line the server sends is one text frame (without its newline); a close frame
    ends the connection (1001 when the server stops)."""

    __slots__ = ("_ws", "_framer")

    door = "web"
    reframes = True  # frames are larger than the lines they carry

    def __init__(self, ws: WsConnection) -> None:
        self._ws = ws
        self._framer: _WebSocketFramer | None = None

    def new_framer(self, session: Session) -> _WebSocketFramer:
        self._framer = _WebSocketFramer(session, self._ws)
        return self._framer

    def encode(self, lines: list[bytes]) -> bytes:
        return encode_lines(lines)

    def farewell(self, session: Session, stopping: bool) -> bytes:
        # End the WebSocket with a close frame after the last lines: an answer to the
        # peer's close, or the server's own.
        ws = self._ws
        if ws.state not in (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING):
            return b""
        framer = self._framer
        if framer is not None and framer.close_reply is not None:
            code, reason = framer.close_reply
        else:
            code, reason = (CLOSE_GOING_AWAY if stopping else CLOSE_NORMAL), ""
        try:
            return ws.send(CloseConnection(code=code, reason=reason))
        except Exception:  # wsproto refused the state: close without the frame
            return b""


# ---------------------------------------------------------------------------- listener


class _HttpGone(Exception):
    """Thrown into an HTTP-phase greenlet when the web listener closes."""


# A refusal (guard's reasons) as the reason of the WebSocket close frame.
WEB_CLOSE_REASONS = {guard.SERVER_FULL_REASON: "server full", guard.PER_ADDRESS_REASON: "too many connections"}


class WebServer:
    """The ``--web-port`` listener, serving for a ``ChatServer``."""

    def __init__(self, chat, host: str, port: int, origins: frozenset[str] = frozenset(), listener=None) -> None:
        self.chat = chat  # the ChatServer: its hub, settings, connections, limits and handler group
        self.origins = origins
        # With --certfile/--keyfile the chat port speaks TLS, and so does this one: the
        # page is served over https and the socket is wss.
        self.tls_context = chat.tls_context
        self.scheme = "https" if self.tls_context is not None else "http"
        self.files = load_static()
        self._http_phase: set[gevent.Greenlet] = set()
        self._accepted_tuned = False  # see tune_listener, once the listener is started
        # Handlers run in the chat server's group, so its stop waits for WebSocket
        # clients exactly as for TCP clients.
        # ``listener``: a listening socket made elsewhere (a --workers worker's share).
        self._listener = StreamServer(
            listener if listener is not None else (host, port),
            self._handle,
            spawn=chat.spawn_handler,
            backlog=None if listener is not None else 1024,
        )

    @property
    def address(self) -> tuple[str, int]:
        return cast("tuple[str, int]", self._listener.address)  # an IP listener's

    @property
    def url(self) -> str:
        host, port = self.address[:2]
        return f"{self.scheme}://{describe_peer((host, port))}/"

    def start(self) -> None:
        self._listener.start()
        self._accepted_tuned = tune_listener(self._listener.socket)
        # Like "Server listening on": shown at every --log-level, scripts wait for it.
        logging.getLogger("geventchat.lifecycle").info("Web client on %s", self.url)

    def close(self) -> None:
        """Stop accepting; end connections still speaking HTTP (WebSocket ones are the
        chat server's to stop)."""
        self._listener.close()
        for greenlet in list(self._http_phase):
            greenlet.kill(_HttpGone, block=False)

    def _handle(self, sock: socket.socket, address: tuple) -> None:
        peer = describe_peer(address)
        chat = self.chat
        if chat.stopping:
            sock.close()
            return
        if not self._accepted_tuned:
            tune(sock)
        me = cast(gevent.Greenlet, gevent.getcurrent())  # a handler runs in a pool's Greenlet
        self._http_phase.add(me)
        try:
            if self.tls_context is not None:
                from geventchat.doors import tls

                # Bounded, in this greenlet; one line if it fails (as on the chat port).
                tls_sock, reason = tls.handshake(sock, self.tls_context, limits.TLS_HANDSHAKE_TIMEOUT)
                if tls_sock is None:
                    chat.stats.tls_handshake_failures += 1
                    log.info("TLS handshake failed from %s (%s)", peer, reason)
                    return
                sock = tls_sock
            upgrade = self._serve_http(sock, peer)
        except _HttpGone:
            upgrade = None
        except Exception:  # a bug: log it with its traceback, keep serving everyone else
            log.exception("Internal error while serving HTTP to %s", peer)
            upgrade = None
        finally:
            self._http_phase.discard(me)
        if upgrade is None:
            sock.close()
            return
        if chat.stopping:
            self._refuse(sock, upgrade, protocol.SHUTTING_DOWN, "server stopping", CLOSE_GOING_AWAY)
            return
        refusal = chat.admission(address)  # --max-clients and --max-per-ip, shared with TCP
        if refusal is not None:
            chat.stats.connections_refused += 1
            log.info("Refused connection from %s (%s)", peer, refusal)
            self._refuse(sock, upgrade, guard.REFUSAL_LINES[refusal], WEB_CLOSE_REASONS[refusal], CLOSE_TRY_AGAIN_LATER)
            return
        try:
            chat.stats.connections_accepted += 1
            # Never parks: this handler owns the socket (its StreamServer closes it when the
            # handler returns) and holds the connection's place (connections, --max-per-ip)
            # until serve() returns, so a parked reader would end the connection after 2 s
            # of silence.
            session = Session(sock, address, chat.hub, chat.settings, WebSocketCodec(upgrade.ws))
            connection = Reader(session, parks=False)
            chat.connections.add(connection)
            try:
                connection.serve(upgrade.trailing)
            except Exception:  # a bug: log it with its traceback, keep serving everyone else
                log.exception("Internal error while serving %s", connection.peer)
                sock.close()
            finally:
                chat.connections.discard(connection)
        finally:
            chat.per_address.release(address[0])  # --max-per-ip, shared with TCP

    def _serve_http(self, sock: socket.socket, peer: str) -> Upgrade | None:
        """Answer HTTP requests until the connection closes or becomes a WebSocket."""
        gateway = HttpGateway(self.files, self.origins, self.scheme, peer)
        deadline = time.monotonic() + HTTP_REQUEST_TIMEOUT
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                if not gateway.idle:
                    log.info("Bad HTTP request from %s (timed out)", peer)
                return None
            data = b""
            with gevent.Timeout(remaining, False):  # type: ignore[arg-type]  # False: end quietly (gevent's stubs miss it)
                try:
                    data = sock.recv(limits.RECV_SIZE) or b""
                except OSError:
                    return None
                if not data:
                    return None  # the browser closed its connection
            if not data:
                continue  # timed out: the check above ends it
            step = gateway.receive_data(data)
            for line in step.log:
                log.info("%s", line)
            if step.send:
                try:
                    with gevent.Timeout(HTTP_REQUEST_TIMEOUT, False):  # type: ignore[arg-type]  # False: end quietly (gevent's stubs miss it)
                        sock.sendall(step.send)
                except OSError:
                    return None
            if step.upgrade is not None:
                return step.upgrade
            if step.close:
                try:
                    sock.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                return None
            if gateway.idle:
                deadline = time.monotonic() + HTTP_REQUEST_TIMEOUT

    def _refuse(self, sock: socket.socket, upgrade: Upgrade, line: bytes, reason: str, code: int) -> None:
        """Accepted as a WebSocket, but no place: one line, a close frame, closed."""
        with gevent.Timeout(1.0, False):  # type: ignore[arg-type]  # False: end quietly (gevent's stubs miss it)
            try:
                sock.sendall(text_frame(line.rstrip(b"\n")) + upgrade.ws.send(CloseConnection(code=code, reason=reason)))
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        sock.close()
