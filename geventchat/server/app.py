"""The chat server: listening socket, command line, signals, start and stop.

``python -m geventchat.server --help`` lists the flags. The lifecycle follows gevent's
BaseServer: ``start`` binds and accepts, ``stop`` stops accepting, tells every client,
waits (bounded) for their output to be flushed and their handlers to end, then closes.
SIGINT and SIGTERM both lead to that same clean stop.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, cast

import gevent
import gevent.event
import gevent.pool
from gevent import socket as gsocket
from gevent.server import StreamServer

from geventchat import __version__
from geventchat.chat.hub import Hub
from geventchat.core import limits
from geventchat.core.config import Settings
from geventchat.core.history import DEFAULT_KEEP, DEFAULT_REQUEST
from geventchat.doors import tls
from geventchat.doors.connection import line_connection, tune, tune_listener
from geventchat.doors.guard import PER_ADDRESS_REASON, REFUSAL_LINES, SERVER_FULL_REASON, AddressCounts, Sweeper
from geventchat.doors.pacer import LoopPacer
from geventchat.doors.reader import Reader
from geventchat.doors.session import describe_peer
from geventchat.server.accountsetup import open_accounts
from geventchat.server.binding import (
    LISTEN_BACKLOG,
    bind_listener,
    describe_bind_error,
    describe_metrics_bind_error,
    lifecycle,
    port_clash,
)
from geventchat.server.memory import MemoryTrimmer
from geventchat.stores.roommemory import DEFAULT_BUDGET_MIB, MIB
from geventchat.stores.sqlitedb import StoreError

if TYPE_CHECKING:
    from geventchat.server.metrics import MetricsServer

log = logging.getLogger("geventchat")
# Seconds the "server full" refusal may take to be written before the socket is closed.
REFUSAL_TIMEOUT = 1.0


def call_later(seconds: float, function: Callable[[], None]) -> None:
    """Run ``function`` once, ``seconds`` from now, as a callback of gevent's loop (no
    greenlet: it must not block)."""
    timer = gevent.get_hub().loop.timer(seconds)

    def fire() -> None:
        timer.close()
        function()

    timer.start(fire)


class ChatServer:
    def __init__(
        self,
        host: str = limits.DEFAULT_HOST,
        port: int = limits.DEFAULT_PORT,
        settings: Settings | None = None,
        *,
        hub: Hub | None = None,
        listener: socket.socket | None = None,
        tls_context: tls.gssl.SSLContext | None = None,
    ) -> None:
        self.settings = settings or Settings()
        self.tls_context = tls_context  # the chat port speaks TLS when set
        # A cluster.ClusterHub links this process to others; a listening socket may be given
        # ready-made (--workers: one SO_REUSEPORT socket per worker process).
        self.hub = hub or Hub(presence=self.settings.presence, log_messages=self.settings.log_messages)
        if self.hub.call_later is None:
            self.hub.call_later = call_later  # on this loop: a busy room's presence goes out in batches
        self.connections: set[Reader] = set()  # one per client, whatever its door
        self._handlers = gevent.pool.Group()  # one greenlet per connection (the reader)
        self._listener = StreamServer(  # type: ignore[call-overload]  # gevent's stubs want its own socket type
            listener or (host, port), self._handle, spawn=self._run_handler, backlog=None if listener else LISTEN_BACKLOG
        )
        # A plain connection whose start cannot wait (no TLS handshake; a hub of this process
        # alone, whose history, if any, is read without waiting: in memory) is admitted in
        # the accept callback itself, without a greenlet of its own: a new greenlet costs
        # about 20 us and a fresh 16 KiB Python data stack (an mmap and a munmap), most of
        # a connect storm.
        history = self.hub.history
        self._admit_inline = tls_context is None and type(self.hub) is Hub and (history is None or not history.reads_wait)
        # Chat lines from a plain connection are relayed in the loop's callback that finds
        # them, without waking a reader greenlet, where nothing the hub does for them waits:
        # a hub of this process alone (any history store only queues what it records).
        self.acts_in_loop = type(self.hub) is Hub
        # --turn-ms: while chat is relayed busily, a loop turn lasts at least that long, so
        # that each client gets one send per turn for many senders' lines (doors/pacer.py).
        if self.settings.busy_turn > 0 and self.hub.after_relay is None:
            self.hub.after_relay = LoopPacer(self.settings.busy_turn).relayed
        # What every line Reader is given, bound once: a bound method made per connection
        # would be 64 bytes of each one.
        self._reader_spawn = self._handlers.spawn
        self._reader_closed = self._forget
        self.accepted_tuned = False  # see tune_listener, once the listener is started
        self._stopping = False
        self.per_address = AddressCounts(self.settings.max_per_ip)  # --max-per-ip, for every port
        self.stats = self.hub.stats
        self._sweeper = Sweeper(
            lambda: self.connections, self.settings.idle_timeout, self.settings.line_timeout, on_timeout=self.stats.timed_out
        )
        self._trimmer = MemoryTrimmer()  # freed memory back to the system after bursts
        self._metrics: MetricsServer | None = None  # once start_metrics() is called
        self._handshaking: set[gevent.Greenlet] = set()

    @property
    def address(self) -> tuple[str, int]:
        """The address actually bound (the real port when asked for port 0)."""
        return self._listener.address

    def start_metrics(self, listener) -> None:
        """Serve Prometheus text at /metrics on ``listener``: ``(host, port)`` to bind, or a
        listening socket. Raises OSError when the address cannot be used."""
        from geventchat.server.metrics import MetricsServer, StatsCollector  # prometheus-client only when asked

        collector = StatsCollector(self.stats, self.hub, lambda: len(self.connections), self.connections_by_door)
        self._metrics = MetricsServer(listener, collector)
        self._metrics.start()

    def connections_by_door(self) -> dict[str, int]:
        """Clients connected now, by front door (for the metrics page)."""
        counts = dict.fromkeys(("line", "web", "irc"), 0)
        for connection in self.connections:
            door = connection.door
            counts[door] = counts.get(door, 0) + 1
        return counts

    @property
    def metrics_address(self) -> tuple[str, int]:
        """The address of the metrics page (the real port when asked for port 0)."""
        return self._metrics.address[:2]  # type: ignore[union-attr]

    @property
    def stopping(self) -> bool:
        """True once stop() began: new connections (on any port) are turned away."""
        return self._stopping

    def spawn_handler(self, func, *args):
        """Run a connection's handler in this server's group: stop() waits for it."""
        return self._handlers.spawn(func, *args)

    def start(self) -> None:
        """Bind and start accepting; raises OSError when the address cannot be used."""
        self._listener.start()
        self.accepted_tuned = tune_listener(self._listener.socket)
        self._sweeper.start()
        self._trimmer.start()
        host, port = self._listener.address[:2]
        lifecycle.info("Server listening on %s", describe_peer((host, port)))

    def stop(self, timeout: float | None = None) -> None:
        """Stop accepting, tell every client, flush (bounded by ``timeout``), close."""
        if timeout is None:
            timeout = self.settings.shutdown_timeout
        self._stopping = True
        self._listener.close()
        self._sweeper.stop()
        self._trimmer.stop()
        if self._metrics is not None:
            self._metrics.stop()
        self.hub.begin_stop()
        for connection in list(self.connections):
            connection.begin_shutdown()
        for greenlet in list(self._handshaking):
            greenlet.kill(block=False)
        self._handlers.join(timeout=timeout)
        self._handlers.kill(block=True, timeout=1)
        self.hub.close_history()  # nothing relayed is missing from the store after the next line
        lifecycle.info("Server stopped")

    def _run_handler(
        self, run: Callable[..., None], handle: Callable[..., bool], close: Callable[..., None], args: tuple
    ) -> None:
        """How the listener runs ``handle`` for an accepted connection: in a greenlet of the
        server's group, or, for a connection admitted at once and whose start cannot wait
        (``_admit_inline``), right here in the loop's accept callback. A refusal (it waits,
        bounded, for the refusal line to go out) always gets a greenlet.

        gevent hands over its wrapper ``run``, which closes the accepted socket once the
        handler returns; a plain connection goes on using that socket after its first
        greenlet (or this callback) is done, so ours closes it only when no connection
        took it (``_close_unless_taken``)."""
        if not self._admit_inline or self._stopping:
            self._handlers.spawn(_close_unless_taken, handle, close, args)
            return
        sock, address = args
        refusal = self.admission(address)
        if refusal is not None:
            self._handlers.spawn(run, self._refuse, close, (sock, address, REFUSAL_LINES[refusal], refusal))
            return
        _close_unless_taken(self._serve_admitted, close, args)

    def _handle(self, sock: socket.socket, address: tuple) -> bool:
        """Serve a connection of the chat port; True if a connection took ``sock``."""
        if self._stopping:
            sock.close()
            return False
        refusal = self.admission(address)
        if refusal is not None:
            self._refuse(sock, address, REFUSAL_LINES[refusal], refusal)
            return False
        return self._serve_admitted(sock, address)

    def admission(self, address: tuple) -> str | None:
        """None if a new connection from ``address``, on any port, has its place (its
        ``per_address`` count is taken), else why it is refused: ``SERVER_FULL_REASON`` or
        ``PER_ADDRESS_REASON`` (each door says it in its own words)."""
        if len(self.connections) >= self.settings.max_clients:
            return SERVER_FULL_REASON
        if not self.per_address.acquire(address[0]):
            return PER_ADDRESS_REASON
        return None

    def _serve_admitted(self, sock: socket.socket, address: tuple) -> bool:
        """Serve a connection of the chat port that has its place (``per_address``
        acquired); True if the connection took ``sock`` (a plain one: it closes it)."""
        admitted = self.admit(sock, address, keep=True, tuned=self.accepted_tuned)
        if admitted is None:
            return False
        taken = admitted is sock
        sock = admitted
        connection = line_connection(
            sock,
            address,
            self.hub,
            self.settings,
            spawn=self._reader_spawn,
            on_closed=self._reader_closed,
            acts_in_loop=self.acts_in_loop,
        )
        self.connections.add(connection)
        try:
            connection.serve()  # returns when the client is gone, or its reader parked
        except Exception:  # a bug: log it with its traceback, keep serving everyone else
            log.exception("Internal error while serving %s", connection.peer)
            sock.close()
            self._forget(connection)
        return taken

    def admit(self, sock: socket.socket, address: tuple, *, keep: bool = False, tuned: bool = False) -> socket.socket | None:
        """A connection that has its place (``per_address`` acquired), made ready to serve
        on any port: tuned, through its TLS handshake when the port speaks TLS, and counted
        as accepted. None if the handshake failed (its place is given back then).

        ``keep``: the caller's listener leaves a plain ``sock`` open when its handler
        returns (the chat port's, ``_close_unless_taken``), so it is served as it is.
        ``tuned``: it inherited ``tune`` from its listener (``tune_listener``)."""
        if not tuned:
            tune(sock)
        if self.tls_context is None:
            # A listener that closes the socket it handed us when its handler returns
            # (gevent's StreamServer does) would cut a plain connection whose reader parked:
            # it takes the descriptor into a socket object of its own (the old one's close
            # is then a no-op). TLS readers never park.
            ready: socket.socket | None = (
                sock if keep else gsocket.socket(sock.family, sock.type, sock.proto, fileno=sock.detach())
            )
        else:
            try:
                ready = self._handshake(sock, address)
            except BaseException:  # a stop killed the handshake
                self.per_address.release(address[0])
                raise
            if ready is None:
                self.per_address.release(address[0])
                return None
        self.stats.connections_accepted += 1
        return ready

    def _forget(self, connection: Reader) -> None:
        """A client has left, its place is free (called once by its connection, from
        whichever greenlet ended it, before a last wait for the client's own close)."""
        if connection in self.connections:
            self.connections.discard(connection)
            self.per_address.release(connection.address[0])

    def _handshake(self, sock: socket.socket, address: tuple) -> socket.socket | None:
        """TLS handshake in this handler greenlet, bounded; one console line if it fails."""
        current = cast(gevent.Greenlet, gevent.getcurrent())  # a handler runs in a pool's Greenlet
        assert self.tls_context is not None, "only TLS connections shake hands"
        self._handshaking.add(current)
        try:
            tls_sock, reason = tls.handshake(sock, self.tls_context, limits.TLS_HANDSHAKE_TIMEOUT)
        finally:
            self._handshaking.discard(current)
        if tls_sock is None:
            self.stats.tls_handshake_failures += 1
            log.info("TLS handshake failed from %s (%s)", describe_peer(address), reason)
        return tls_sock

    def _refuse(self, sock: socket.socket, address: tuple, line: bytes, reason: str) -> None:
        self.stats.connections_refused += 1
        log.info("Refused connection from %s (%s)", describe_peer(address), reason)
        if self.tls_context is not None:
            # Say it in the language the client speaks (or just close if it cannot).
            tls_sock, _ = tls.handshake(sock, self.tls_context, REFUSAL_TIMEOUT)
            if tls_sock is None:
                return
            sock = tls_sock
        with gevent.Timeout(REFUSAL_TIMEOUT, False):  # type: ignore[arg-type]  # False: end quietly (gevent's stubs miss it)
            try:
                sock.sendall(line)
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        sock.close()


def _close_unless_taken(handle: Callable[..., bool], close: Callable[..., None], args: tuple) -> None:
    """gevent's handler wrapper, but ``close`` (the accepted socket's) only if ``handle``
    did not say that a connection took the socket."""
    taken = False
    try:
        taken = handle(*args)
    finally:
        if not taken:
            close(*args)


# ---------------------------------------------------------------------- command line


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be 0 to 65535, not {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, not {text}")
    return value


# argparse names the failed type function in its message; these names read well there.
_positive_int.__name__ = "positive integer"
_port.__name__ = "port"
_positive_float.__name__ = "positive number"


def _turn_ms(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"must be 0 (off) to 100 milliseconds, not {text}")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be 0 (off) or more seconds, not {text}")
    return value


_seconds.__name__ = "number of seconds"
_turn_ms.__name__ = "number of milliseconds"


def _lines(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return value


_lines.__name__ = "number of lines"


def _mebibytes(text: str) -> float:
    value = float(text)
    if not 0 < value < 1024 * 1024:
        raise argparse.ArgumentTypeError(f"must be more than 0 MiB and less than 1 TiB, not {text}")
    return value


_mebibytes.__name__ = "number of MiB"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="geventchat-server",
        usage="%(prog)s [options]  (--help lists them)",
        description="A multi-user chat server: one line per message, nicknames, rooms, private messages.",
    )
    parser.add_argument("--host", default=limits.DEFAULT_HOST, help="address to listen on (default %(default)s)")
    parser.add_argument(
        "--port", type=_port, default=limits.DEFAULT_PORT, help="port to listen on; 0 picks a free one (default %(default)s)"
    )
    parser.add_argument(
        "--max-line",
        type=_positive_int,
        default=limits.MAX_LINE,
        metavar="BYTES",
        help="longest line accepted, without its line ending (default %(default)s)",
    )
    parser.add_argument(
        "--max-sendq",
        type=_positive_int,
        default=limits.MAX_SENDQ,
        metavar="BYTES",
        help="output waiting for one client before it is dropped (default %(default)s)",
    )
    parser.add_argument(
        "--turn-ms",
        type=_turn_ms,
        default=limits.BUSY_TURN * 1000,
        metavar="MS",
        help="while chat is relayed busily, a loop turn lasts at least this long, so that each client "
        "gets one send for what many senders sent meanwhile; 0: turn as fast as input comes (default %(default)s)",
    )
    parser.add_argument(
        "--max-clients",
        type=_positive_int,
        default=limits.MAX_CLIENTS,
        metavar="N",
        help="connections served at once (default %(default)s)",
    )
    parser.add_argument(
        "--rate",
        type=_positive_float,
        default=None,
        metavar="N",
        help="lines per second per connection before reading slows down (default: off)",
    )
    parser.add_argument(
        "--burst",
        type=_positive_int,
        default=None,
        metavar="N",
        help="lines a connection may send at once when --rate is on (default: the rate)",
    )
    parser.add_argument(
        "--max-per-ip",
        type=_positive_int,
        default=limits.MAX_PER_IP,
        metavar="N",
        help="connections from one address at once (default %(default)s)",
    )
    parser.add_argument(
        "--idle-timeout",
        type=_seconds,
        default=limits.IDLE_TIMEOUT,
        metavar="SECONDS",
        help="drop a client that sends nothing for this long; 0 = never (default: never)",
    )
    parser.add_argument(
        "--line-timeout",
        type=_seconds,
        default=limits.LINE_TIMEOUT,
        metavar="SECONDS",
        help="drop a client that keeps one line unfinished for this long (slowloris); 0 = never (default %(default)g)",
    )
    parser.add_argument(
        "--certfile", metavar="FILE", help="serve TLS on the chat port with this PEM certificate (chain); default: plain TCP"
    )
    parser.add_argument("--keyfile", metavar="FILE", help="the PEM private key for --certfile (default: inside --certfile)")
    parser.add_argument(
        "--metrics-port",
        type=_port,
        default=None,
        metavar="PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics; 0 picks a free port (default: off)",
    )
    parser.add_argument(
        "--presence",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="tell the others about joins, leaves, renames and quits (default: on; the last of the two flags wins)",
    )
    parser.add_argument("--quiet", action="store_true", help="no console line per chat message")
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"], help="console detail (default %(default)s)"
    )
    parser.add_argument(
        "--web-port",
        type=_port,
        default=None,
        metavar="PORT",
        help="also serve the browser client (page and WebSocket) on this port; 0 picks a free one (default: off)",
    )
    parser.add_argument(
        "--web-origins",
        default=None,
        metavar="ORIGIN[,ORIGIN...]",
        help="other pages allowed to open the WebSocket, as scheme://host[:port] (default: the page's own origin only)",
    )
    parser.add_argument(
        "--irc-port",
        type=_port,
        default=None,
        metavar="PORT",
        help="also serve the chat to IRC clients (irssi, WeeChat, HexChat) on this port; 0 picks a free one (default: off)",
    )
    parser.add_argument(
        "--irc-ping-interval",
        type=_positive_float,
        default=120.0,
        metavar="SECONDS",
        help="ping an IRC client silent this long, drop it if it does not answer as long again (default %(default)s)",
    )
    cluster = parser.add_argument_group("scale-out over Redis")
    cluster.add_argument(
        "--redis-url",
        metavar="URL",
        help="join the chat of every server behind this Redis, e.g. redis://127.0.0.1:6379/0 (default: off)",
    )
    cluster.add_argument(
        "--workers",
        type=_positive_int,
        default=None,
        metavar="N",
        help="N server processes share the port, joined over --redis-url (default: one process)",
    )
    kept = parser.add_argument_group("history (contract §10)")
    kept.add_argument(
        "--history",
        type=_lines,
        default=DEFAULT_KEEP,
        metavar="N",
        help="chat lines kept per room; 0 turns history off (default %(default)s)",
    )
    kept.add_argument(
        "--history-on-join",
        type=_lines,
        default=DEFAULT_REQUEST,
        metavar="K",
        help="recent lines a member gets on entering a room; 0 = none (default %(default)s)",
    )
    kept.add_argument(
        "--history-memory",
        type=_mebibytes,
        default=DEFAULT_BUDGET_MIB,
        metavar="MIB",
        help="memory all rooms' kept lines may take (the SQLite store: its cache); the least recently written rooms go first (default %(default)s)",
    )
    kept.add_argument(
        "--db",
        metavar="PATH",
        help="keep history and accounts in this SQLite database (created if missing; default: history in memory, or in Redis with --redis-url)",
    )
    cluster.add_argument(
        "--redis-expiry",
        type=_positive_float,
        default=None,
        metavar="SECONDS",
        help="a server silent for this long is taken for dead: its users quit (default 10)",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


class ConsoleHandler(logging.StreamHandler):
    """One line per record on stdout, flushed at the end of the event loop's turn, so the
    console stays live when stdout is a pipe or a file.

    StreamHandler flushes after each record: a write to the pipe or file per line. A
    connect storm logs a line per connection, and a turn of the loop accepts up to a
    hundred: their lines now go out in one write. A record from another thread is flushed
    at once as before, and so is everything at close; one logged before the loop runs
    (start-up) goes out at the loop's first turn.

    A console whose reader has gone (``geventchat-server | head -1``) is no error of the
    server's: its lines go to /dev/null from then on, instead of a "Logging error"
    traceback on stderr for every one of them (and another at exit).
    """

    def __init__(self, stream) -> None:
        super().__init__(stream)
        self._flush_pending = False
        self._loop_thread = threading.get_ident()

    def flush(self) -> None:
        if self._flush_pending:
            return
        if threading.get_ident() != self._loop_thread:
            self.flush_now()
            return
        self._flush_pending = True
        gevent.get_hub().loop.run_callback(self._flush_at_turn_end)

    def _flush_at_turn_end(self) -> None:
        self._flush_pending = False
        self.acquire()
        try:
            self.flush_now()
        except Exception:
            if not (isinstance(sys.exc_info()[1], BrokenPipeError) and _silence(self.stream)):
                raise
        finally:
            self.release()

    def flush_now(self) -> None:
        super().flush()

    def close(self) -> None:
        try:
            self.flush_now()
        except (OSError, ValueError):
            pass
        super().close()

    def handleError(self, record: logging.LogRecord) -> None:
        if isinstance(sys.exc_info()[1], BrokenPipeError) and _silence(self.stream):
            return
        super().handleError(record)


def _silence(stream) -> bool:
    """Point ``stream``'s descriptor at /dev/null (its buffered bytes go there too); True
    if that worked."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, stream.fileno())
        finally:
            os.close(devnull)
    except (OSError, ValueError, AttributeError):
        return False
    return True


def configure_logging(level: str) -> None:
    # A console line is its message alone: a record need not find its caller's frame nor
    # note its thread and process (the logging HOWTO's "Optimization" settings). A connect
    # storm logs a line per connection; this is about a third of what each line cost.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = ConsoleHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger("geventchat")
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level.upper()))
    root.propagate = False
    lifecycle.handlers[:] = [handler]
    lifecycle.setLevel(logging.INFO)
    lifecycle.propagate = False


def settings_from(args: argparse.Namespace) -> Settings:
    return Settings(
        max_line=args.max_line,
        max_sendq=args.max_sendq,
        max_clients=args.max_clients,
        rate=args.rate or 0.0,
        burst=args.burst or 0,
        presence=args.presence,
        log_messages=not args.quiet and args.log_level in ("debug", "info"),
        max_per_ip=args.max_per_ip,
        idle_timeout=args.idle_timeout,
        line_timeout=args.line_timeout,
        busy_turn=args.turn_ms / 1000,
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(arg == "--redis-url" or arg.startswith("--redis-url=") for arg in argv):
        # redis-py does blocking socket I/O: make it cooperative before it is imported.
        # Only a server that joins a cluster is patched; the plain server never is.
        from gevent import monkey

        monkey.patch_all()
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.db is not None and args.redis_url:
        print("Error: --db and --redis-url cannot be used together (with --redis-url, history lives in Redis)", file=sys.stderr)
        return 2
    if args.workers is not None and not args.redis_url:
        print("Error: --workers needs --redis-url (the worker processes share one chat through Redis)", file=sys.stderr)
        return 2
    if args.keyfile and not args.certfile:
        parser.error("--keyfile needs --certfile")
    clash = port_clash(args)
    if clash is not None:
        print(clash, file=sys.stderr)
        return 2
    if args.web_port is not None:
        from geventchat.core.webproto import parse_origins

        try:
            parse_origins(args.web_origins)
        except ValueError as exc:
            parser.error(f"argument --web-origins: {exc}")
    configure_logging(args.log_level)
    if args.certfile:
        try:  # checked once here, so that a bad file is one line even with --workers
            tls.server_context(args.certfile, args.keyfile)
        except tls.TLSConfigError as exc:
            print(exc, file=sys.stderr)
            return 1
    if args.workers is not None and args.workers > 1:
        from geventchat.server import workers

        return workers.run_workers(args, serve)
    return serve(args)


class _BindFailed(Exception):
    """A port could not be bound; the message is the one console line that says why."""


def _bind_ports(args, listener, web_listener, metrics_listener, irc_listener=None) -> tuple:
    """The chat, web, metrics and IRC listening sockets: those given (a --workers worker's
    shares), the others bound here, all or none (the ones bound are closed on failure)."""
    bound: list[socket.socket] = []
    try:
        if listener is None:
            listener = _bind_one(args.host, args.port, bound, describe_bind_error)
        if web_listener is None and args.web_port is not None:
            web_listener = _bind_one(args.host, args.web_port, bound, describe_bind_error)
        if irc_listener is None and args.irc_port is not None:
            irc_listener = _bind_one(args.host, args.irc_port, bound, describe_bind_error)
        if metrics_listener is None and args.metrics_port is not None:
            metrics_listener = _bind_one(args.host, args.metrics_port, bound, describe_metrics_bind_error)
    except _BindFailed:
        for sock in bound:
            sock.close()
        raise
    return listener, web_listener, metrics_listener, irc_listener


def _bind_one(host: str, port: int, bound: list, describe) -> socket.socket:
    try:
        sock = bind_listener(host, port)
    except OSError as exc:
        raise _BindFailed(describe(host, port, exc)) from None
    bound.append(sock)
    return sock


def serve(
    args: argparse.Namespace,
    listener: socket.socket | None = None,
    ready=None,
    web_listener: socket.socket | None = None,
    metrics_listener: socket.socket | None = None,
    irc_listener: socket.socket | None = None,
) -> int:
    """Run one server process until SIGINT or SIGTERM; the exit status. ``listener`` and
    ``web_listener``: listening sockets to serve (a --workers worker's, for the chat and
    the --web-port); ``ready()`` is called once it accepts. ``metrics_listener``: where a
    --workers worker serves its metrics for the parent, which alone serves --metrics-port
    (workermetrics.py)."""
    settings = settings_from(args)
    tls_context = None
    if args.certfile:
        try:
            tls_context = tls.server_context(args.certfile, args.keyfile)
        except tls.TLSConfigError as exc:
            print(exc, file=sys.stderr)
            return 1
    from geventchat.stores.history import open_history

    try:
        store = open_history(args.history, db=args.db, redis_url=args.redis_url, memory=int(args.history_memory * MIB))
    except StoreError as exc:
        print(exc, file=sys.stderr)
        return 1
    kept = {"history": store, "history_on_join": args.history_on_join}
    hub: Hub
    if args.redis_url:
        from geventchat.chat import bus, cluster

        try:
            hub = cluster.connect(
                args.redis_url, settings, expiry=args.redis_expiry, link_now=getattr(args, "redis_link_now", True), **kept
            )
        except bus.BusError as exc:
            print(f"Error: {exc}", file=sys.stderr)
            if store is not None:
                store.close()
            return 1
    else:
        hub = Hub(presence=settings.presence, log_messages=settings.log_messages, **kept)
    try:
        accounts = open_accounts(args)
    except StoreError as exc:
        print(exc, file=sys.stderr)
        if hub is not None:
            hub.close()
        return 1
    # Every port is bound before anything is said to listen: a port that cannot be used is
    # one line and exit 1, never "Server listening" followed by an error.
    metrics_here = metrics_listener is None and args.metrics_port is not None  # else a worker's, for the parent
    try:
        listeners = _bind_ports(args, listener, web_listener, metrics_listener, irc_listener)
    except _BindFailed as exc:
        print(exc, file=sys.stderr)
        if accounts is not None:
            accounts.close()
        if hub is not None:
            hub.close()
        return 1
    listener, web_listener, metrics_listener, irc_listener = listeners
    if irc_listener is not None:  # named to an IRC client that knocks at the chat port
        settings = replace(settings, irc_port=irc_listener.getsockname()[1])
    if web_listener is not None:  # named to a browser that knocks at the chat port (wrongdoor.py)
        settings = replace(settings, web_port=web_listener.getsockname()[1], web_scheme="https" if args.certfile else "http")
    server = ChatServer(args.host, args.port, settings, hub=hub, listener=listener, tls_context=tls_context)
    if accounts is not None:
        accounts.stats = server.stats
        server.hub.accounts = accounts
    if metrics_listener is not None:
        server.start_metrics(metrics_listener)
        if metrics_here:
            lifecycle.info("Metrics at http://%s/metrics", describe_peer(server.metrics_address))
    # Handlers first: a script may signal as soon as it reads the listening line.
    stop_requested = gevent.event.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        gevent.signal_handler(signum, stop_requested.set)
    server.start()
    web = None
    if web_listener is not None:
        from geventchat.core.webproto import parse_origins
        from geventchat.doors.web import WebServer

        web = WebServer(server, args.host, args.web_port, parse_origins(args.web_origins), listener=web_listener)
        web.start()
    irc_door = None
    if irc_listener is not None:
        from geventchat.doors.irc import IrcServer

        irc_door = IrcServer(server, irc_listener, ping_interval=args.irc_ping_interval)
        irc_door.start()
    if ready is not None:
        ready()
    stop_requested.wait()
    if web is not None:
        web.close()
    if irc_door is not None:
        irc_door.close()
    server.stop()
    if server.hub.accounts is not None:
        server.hub.accounts.close()
    if hub is not None:
        hub.close()
    return 0
