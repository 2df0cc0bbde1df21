"""The browser client's gateway: the chat page over HTTP and the chat over WebSocket.

``--web-port P`` starts a second listener (``WebServer``) next to the chat port. It speaks
HTTP/1.1 with h11 and serves the page (``GET /``) and its assets (``GET /static/NAME``),
all shipped in ``geventchat/static``; ``GET /ws`` is the WebSocket handshake (wsproto).
The protocol state lives in ``webproto.py`` (sans-IO); this module puts it on sockets.

After the handshake the socket becomes a ``WebSocketConnection``: a ``Connection`` whose
transport extension points speak WebSocket. Each text frame the browser sends is one line
of the wire protocol and each line the server sends is one text frame (without its
newline); everything else (nicknames, rooms, presence, --max-line, --max-sendq, --rate)
is the very same code as for a TCP client.
"""

from __future__ import annotations

import logging
import socket
import time

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
from geventchat.doors.connection import Connection, describe_peer

log = logging.getLogger("geventchat")

# ------------------------------------------------------------------------ the connection


class WebSocketConnection(Connection):
    """A chat client over WebSocket: the same Connection, another transport."""

    __slots__ = ("_ws", "_framer", "_initial", "_going_away")

    # Never park: WebServer._handle owns the socket (its StreamServer closes it when the
    # handler returns) and holds the connection's place (connections, --max-per-ip) until
    # serve() returns, so a parked reader would end the connection after 2 s of silence.
    PARKS = False
    DOOR = "web"
    # A browser that opened the WebSocket is at the right door, whatever it types first.
    CHECKS_DOOR = False

    def __init__(self, sock, address, hub, settings, ws: WsConnection, trailing: bytes = b"") -> None:
        super().__init__(sock, address, hub, settings)
        self._ws = ws
        self._framer: WebSocketFramer | None = None
        self._initial = trailing
        self._going_away = False

    def _new_framer(self) -> WebSocketFramer:
        self._framer = WebSocketFramer(self._ws, self.settings.max_line, self._send_control)
        return self._framer

    def _send_control(self, frame: bytes) -> None:
        self.deliver(ControlFrame(frame))

    def _encode(self, lines: list[bytes]) -> bytes:
        data = encode_lines(lines)
        # The outbox counts the lines' bytes; what goes out is the frames. Account for the
        # difference here (every caller subtracts what it sends) so that --max-sendq keeps
        # measuring exactly the bytes waiting in the server.
        self._pending += len(data) - sum(map(len, lines))
        return data

    def _receive(self) -> bytes:
        framer = self._framer
        if framer is not None and framer.closed:
            if framer.error and not self._drop_reason:
                self._drop_reason = f"bad WebSocket data: {framer.error}"
            return b""  # the peer closed the WebSocket (or broke it): end as on EOF
        if self._initial:
            data, self._initial = self._initial, b""
            return data
        return super()._receive()

    def begin_shutdown(self) -> None:
        self._going_away = True
        super().begin_shutdown()

    def _flush_and_close(self, timeout: float) -> None:
        # End the WebSocket with a close frame after the last lines: an answer to the
        # peer's close, or the server's own (1001 when the server stops).
        ws = self._ws
        if not self._closed and ws.state in (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING):
            framer = self._framer
            if framer is not None and framer.close_reply is not None:
                code, reason = framer.close_reply
            else:
                code, reason = (CLOSE_GOING_AWAY if self._going_away else CLOSE_NORMAL), ""
            try:
                frame = ws.send(CloseConnection(code=code, reason=reason))
            except Exception:  # wsproto refused the state: close without the frame
                frame = b""
            if frame:
                self._outbox.append(ControlFrame(frame))
                self._pending += len(frame)
        super()._flush_and_close(timeout)


# ---------------------------------------------------------------------------- listener


class _HttpGone(Exception):
    """Thrown into an HTTP-phase greenlet when the web listener closes."""


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
        return self._listener.address

    @property
    def url(self) -> str:
        host, port = self._listener.address[:2]
        return f"{self.scheme}://{describe_peer((host, port))}/"

    def start(self) -> None:
        self._listener.start()
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
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        except OSError:
            pass
        me = gevent.getcurrent()
        self._http_phase.add(me)
        try:
            if self.tls_context is not None:
                from geventchat.doors import tls

                # Bounded, in this greenlet; one line if it fails (as on the chat port).
                sock, reason = tls.handshake(sock, self.tls_context, limits.TLS_HANDSHAKE_TIMEOUT)
                if sock is None:
                    chat.stats.tls_handshake_failures += 1
                    log.info("TLS handshake failed from %s (%s)", peer, reason)
                    return
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
        if len(chat.connections) >= chat.settings.max_clients:
            chat.stats.connections_refused += 1
            log.info("Refused connection from %s (server full)", peer)
            self._refuse(sock, upgrade, protocol.SERVER_FULL, "server full", CLOSE_TRY_AGAIN_LATER)
            return
        per_address = chat.per_address  # --max-per-ip, shared with TCP
        if not per_address.acquire(address[0]):
            chat.stats.connections_refused += 1
            log.info("Refused connection from %s (too many connections from this address)", peer)
            self._refuse(sock, upgrade, protocol.TOO_MANY_FROM_ADDRESS, "too many connections", CLOSE_TRY_AGAIN_LATER)
            return
        try:
            chat.stats.connections_accepted += 1
            connection = WebSocketConnection(sock, address, chat.hub, chat.settings, upgrade.ws, upgrade.trailing)
            chat.connections.add(connection)
            try:
                connection.serve()
            except Exception:  # a bug: log it with its traceback, keep serving everyone else
                log.exception("Internal error while serving %s", connection.peer)
                sock.close()
            finally:
                chat.connections.discard(connection)
        finally:
            per_address.release(address[0])

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
            with gevent.Timeout(remaining, False):
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
                    with gevent.Timeout(HTTP_REQUEST_TIMEOUT, False):
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
        with gevent.Timeout(1.0, False):
            try:
                sock.sendall(text_frame(line.rstrip(b"\n")) + upgrade.ws.send(CloseConnection(code=code, reason=reason)))
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        sock.close()
