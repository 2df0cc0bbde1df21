"""One client connection: a reader greenlet, a bounded outbox, and a writer.

Reading: the greenlet that serves the connection reads, frames (``protocol.LineFramer``)
and acts on each line, in order. It is the only code that acts for this client.

Writing: ``deliver`` never touches the socket; it appends the (already encoded, shared)
bytes to the outbox and, if no flush is pending, schedules one as a loop callback. The
flush runs once the current loop turn has handled everything that was ready to read, so
one ``send`` carries every line that arrived for this client in that turn. Only when the
kernel's buffer is full does a writer greenlet exist, waiting for the socket to become
writable; it ends once the outbox is empty. An idle connection therefore holds no writer
greenlet at all, and no sender ever waits for a slow reader.

A client whose waiting output passes ``max_sendq`` bytes is dropped ("send queue
exceeded"): its socket is closed, which wakes its own greenlets with an error, and
nobody else is delayed by it.
"""

from __future__ import annotations

import _socket
import contextlib
import ipaddress
import logging
import socket
import sys
import time
from collections.abc import Callable

import gevent
from gevent import socket as gsocket
from gevent.hub import Waiter

from geventchat.chat import commands
from geventchat.chat.hub import Hub, Room
from geventchat.core import limits, protocol, wrongdoor
from geventchat.core.config import Settings
from geventchat.core.ratelimit import TokenBucket

log = logging.getLogger("geventchat")


class _Stop(Exception):
    """Thrown into a reader greenlet to make it finish: the server is stopping."""


# What gevent's SSLSocket raises, instead of an OSError, when another greenlet closed it
# (drop(): the sweeper, a send queue drop, the writer meeting a reset) in the loop turn
# that wakes a greenlet waiting on it for input or for room to write: ValueError ("Read on
# closed or unwrapped SSL socket") from a read, AttributeError (its _sslobj is then None)
# from a send. Once _closed says that we closed it, that is the same end as a plain
# socket's EBADF; otherwise it is a bug and stays an error.
_CLOSED_TLS = (ValueError, AttributeError)


def describe_peer(address: tuple) -> str:
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _is_loopback(host: str) -> bool:
    try:
        ip = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return True  # not an IP address (a Unix socket's path): local, say nothing
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


class Connection:
    __slots__ = (
        "sock",
        "address",
        "peer",
        "hub",
        "settings",
        "nick",
        "room",
        "account",
        "exposed",
        "_outbox",
        "_pending",
        "_max_sendq",
        "_flush_scheduled",
        "_writer",
        "_try_send",
        "_run_callback",
        "_closed",
        "_finishing",
        "_drop_reason",
        "_reader",
        "_spawn",
        "_on_closed",
        "_loop",
        "_park_timer",
        "_wake",
        "parked",
        "_stopping",
        "_bucket",
        "_leave_reason",
        "_announce",
        "framer",
        "last_input",
        "line_mark",
        "partial_mark",
        "partial_since",
        "_stats",
        "__weakref__",
    )

    def __init__(
        self,
        sock: socket.socket,
        address: tuple,
        hub: Hub,
        settings: Settings,
        *,
        spawn: Callable[..., gevent.Greenlet] = gevent.spawn,
        on_closed: Callable[[Connection], None] | None = None,
    ) -> None:
        self.sock = sock
        self.address = address
        self.peer = describe_peer(address)
        self.hub = hub
        self.settings = settings
        self.nick = ""
        self.room: Room | None = None
        self.account: str | None = None  # the folded nickname logged in to (chat.accounts)
        self._outbox: list[bytes] = []
        self._pending = 0  # bytes queued here and not yet handed to the kernel
        self._max_sendq = settings.max_sendq
        self._flush_scheduled = False  # a flush callback or the writer greenlet will send
        self._writer: gevent.Greenlet | None = None
        # A plain gevent socket wraps a non-blocking _socket.socket: sending on that one
        # directly never blocks, so the flush can run as a loop callback. Any other
        # transport always goes through the writer greenlet: an SSLSocket has a raw
        # _sock too, and writing to that would bypass the encryption.
        raw = getattr(sock, "_sock", None)
        plain = type(sock) is gsocket.socket and isinstance(raw, _socket.socket)
        self._try_send = raw.send if plain else None
        # Unencrypted from another machine: account replies carry a warning (chat.accounts).
        self.exposed = type(sock) is gsocket.socket and not _is_loopback(address[0])
        self._loop = gevent.get_hub().loop
        self._run_callback = self._loop.run_callback
        # Parking (plain sockets only): after PARK_AFTER seconds without input the reader
        # greenlet ends and _wake, an I/O watcher, starts a new one (with ``spawn``, so that
        # the server still joins it on stop) when input comes.
        self._spawn = spawn
        self._on_closed = on_closed  # told once, when the client has left (see _gone)
        # (A repeat value, so that again() re-arms it from now: a one-shot libev timer that has
        # fired would fire at once on its next start.) No park timer: the reader never parks.
        self._park_timer = self._loop.timer(limits.PARK_AFTER, limits.PARK_AFTER) if plain and self.PARKS else None
        self._wake = None
        self.parked = False
        self._stopping = False  # the server is stopping: finish at the next chance
        self._bucket: TokenBucket | None = None
        self._leave_reason = ""
        self._announce = True
        self._closed = False
        self._finishing = False  # the reader is past its loop, closing
        self._drop_reason = ""  # why the server dropped the client, if it did
        self._reader: gevent.Greenlet | None = None
        # For the timeout sweeper (guard.Sweeper): when input last came, when a line was
        # last completed, and the sweeper's own notes on an unfinished line.
        self.framer = None
        self.last_input = self.line_mark = time.monotonic()
        self.partial_mark = 0.0
        self.partial_since = 0.0
        self._stats = hub.stats  # counters for the metrics page (metrics.Stats)

    # The front door's name, as the metrics page labels it.
    DOOR = "line"
    # Whether a silent plain-socket reader may park (see _park). A transport whose handler
    # greenlet owns the socket and the connection's place (web.py) keeps its reader.
    PARKS = True
    # Whether the first lines are checked for another protocol's opening (HTTP, IRC):
    # true for the chat port; a door whose clients did knock at the right one says False.
    CHECKS_DOOR = True

    def __repr__(self) -> str:
        return f"<Connection {self.peer} {self.nick!r}>"

    # -------------------------------------------------------------------- output

    def deliver(self, data: bytes) -> None:
        """Queue one encoded line for this client; never blocks, never raises."""
        if self._closed:
            return
        self._outbox.append(data)
        self._pending += len(data)
        if self._pending > self._max_sendq:
            self._stats.sendq_drops += 1
            self.drop("send queue exceeded")
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            self._run_callback(self._flush)

    def drop(self, reason: str) -> None:
        """Disconnect this client now, discarding its output (the server's decision)."""
        if not self._closed:
            self._drop_reason = reason
            self._close_now()

    def _close_now(self) -> None:
        self._closed = True
        self._outbox.clear()
        self._pending = 0
        if self.parked:
            # No greenlet waits on the socket: start one to do the leaving (hub, log).
            self._unpark()
        # Closing a gevent socket wakes the greenlets waiting on it with an error.
        self.sock.close()

    def _flush(self) -> None:
        """Loop callback: hand everything queued to the kernel in one send."""
        outbox = self._outbox
        if self._closed or not outbox:
            self._flush_scheduled = False
            return
        if self._try_send is None:
            self._writer = gevent.spawn(self._drain)
            return
        data = self._encode(outbox)
        outbox.clear()
        try:
            sent = self._try_send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            # The peer is gone (reset, broken pipe); its reader sees that and cleans up.
            self._close_now()
            return
        self._pending -= sent
        self._stats.bytes_out += sent
        if sent == len(data):
            self._flush_scheduled = False
        else:
            # The kernel's buffer is full: wait for room in a greenlet of its own.
            outbox.append(data[sent:])
            self._writer = gevent.spawn(self._drain)

    def _drain(self) -> None:
        """Writer greenlet: send until the outbox is empty, waiting for writability."""
        outbox = self._outbox
        try:
            while outbox and not self._closed:
                data = self._encode(outbox)
                outbox.clear()
                view = memoryview(data)
                while view:
                    sent = self.sock.send(view)
                    self._pending -= sent
                    self._stats.bytes_out += sent
                    view = view[sent:]
        except OSError:
            if not self._closed:
                self._close_now()
        except _CLOSED_TLS:
            if not self._closed:
                raise  # not a close of ours: a bug
        finally:
            self._writer = None
            self._flush_scheduled = False

    def _flush_and_close(self, timeout: float) -> None:
        """From the reader: send what is still queued, half-close, tell that the client is
        gone, wait for the peer's close, close (all of it within ``timeout``)."""
        deadline = time.monotonic() + timeout
        half_closed = False
        if not self._closed:
            with self._closing_step(timeout):
                self._send_remaining()
                self.sock.shutdown(socket.SHUT_WR)
                half_closed = True
        # The client now has every line and the end of the stream: it has left, whether or
        # not it closes its side soon (its place must not wait for that).
        self._gone()
        remaining = deadline - time.monotonic()
        if half_closed and remaining > 0:
            # Read until the peer closes too: a plain close with unread input would reset
            # the connection and could destroy our last lines before the client read them.
            with self._closing_step(remaining):
                for _ in range(64):
                    if not self.sock.recv(limits.RECV_SIZE):
                        break
        self._closed = True
        self._outbox.clear()
        self.sock.close()

    @contextlib.contextmanager
    def _closing_step(self, seconds: float):
        """One step of _flush_and_close, for at most ``seconds``: the peer gone already, or
        a stop that raced with this close, ends the step quietly (we close anyway)."""
        with gevent.Timeout(seconds, False):
            try:
                yield
            except (OSError, _Stop):
                pass
            except _CLOSED_TLS:
                if not self._closed:
                    raise  # not a close of ours (drop() meanwhile): a bug

    def _send_remaining(self) -> None:
        while not self._closed:
            writer = self._writer
            if writer is not None:
                writer.join()
                continue
            if not self._outbox:
                return
            data = self._encode(self._outbox)
            self._outbox.clear()
            self.sock.sendall(data)
            self._pending -= len(data)
            self._stats.bytes_out += len(data)

    def begin_shutdown(self) -> None:
        """The server is stopping: tell the client, then make the reader finish."""
        self._stopping = True
        self.deliver(protocol.SHUTTING_DOWN)
        if self.parked:
            self._unpark()  # the new reader sees _stopping and finishes
            return
        if self._reader is not None and not self._finishing:
            self._run_callback(self._stop_reader)

    def _stop_reader(self) -> None:
        """Loop callback: make the reader finish, unless it has begun leaving meanwhile.

        Checked when the throw happens, not when the stop asks for it (as a plain
        ``kill(block=False)`` would): under load the loop runs part of its callbacks after
        the next poll, and a reader woken by the client's goodbye in that gap is already
        leaving, maybe waiting for Redis (``ClusterHub.remove``); a throw there would cut
        its leave short (no quit line for the others, its name never freed)."""
        reader = self._reader
        if reader is not None and not self._finishing and not reader.dead:
            try:
                reader.throw(_Stop)
            except BaseException:  # as gevent's own kill: report it, never let it into the loop
                gevent.get_hub().handle_error(reader, *sys.exc_info())

    # ------------------------------------------------------------------- parking

    def _park(self) -> None:
        """End this reader greenlet's work; a watcher starts a new one when input comes."""
        self.parked = True
        self._reader = None
        self._wake = self._loop.io(self.sock.fileno(), 1)
        self._wake.start(self._unpark)

    def _unpark(self) -> None:
        """Loop callback (input came), or a stop or drop of a parked connection."""
        if not self.parked:
            return
        self.parked = False
        wake, self._wake = self._wake, None
        if wake is not None:
            wake.stop()
            wake.close()
        self._spawn(self._read_loop)

    def _wait_readable(self) -> bool:
        """Wait for input; False if none came for PARK_AFTER seconds (time to park).

        As gevent's own Hub.wait does, with a Waiter; the park timer is a second watcher on
        the same Waiter, so the hot path pays a timer start and stop, no greenlet. A close
        from another greenlet (drop) still reaches this wait as an error.
        """
        waiter = Waiter()
        watcher, timer = self.sock._read_event, self._park_timer
        watcher.start(waiter.switch, True)
        if timer is not None:
            timer.again(waiter.switch, False)
        try:
            return waiter.get()
        finally:
            watcher.stop()
            if timer is not None:
                timer.stop()

    # --------------------------------------------------------------------- input

    def serve(self) -> None:
        """Run in the connection's first greenlet: join the chat, then read.

        Returns when the client has left or been dropped, or when the reader parked (then
        ``parked`` is true and a later greenlet carries on; ``on_closed`` tells the end).
        """
        log.info("New connection from %s", self.peer)
        self._read_loop(start=True)

    def _turn_away(self, kind: str) -> None:
        """Tell a client at the wrong door where to go; it leaves (a Quit), nothing it sent
        relayed (the framer gave none of its lines). The welcome went out at connect, before
        the client said anything, so the room sees it join and quit like any short visit."""
        settings = self.settings
        try:
            host = self.sock.getsockname()[0]
        except OSError:
            host = "127.0.0.1"
        self.deliver(
            wrongdoor.wrong_door_error(
                kind, host, web_port=settings.web_port, web_scheme=settings.web_scheme, irc_port=settings.irc_port
            )
        )
        self._drop_reason = wrongdoor.drop_reason(kind)

    def _read_loop(self, start: bool = False) -> None:
        self._reader = gevent.getcurrent()
        settings = self.settings
        park = False
        try:
            if start:
                self._register()
                self.framer = self._new_framer()
                if settings.rate > 0:
                    self._bucket = TokenBucket(settings.rate, settings.burst or max(1, settings.rate))
            if self._stopping:
                raise _Stop
            framer, bucket = self.framer, self._bucket
            receive = self._receive
            monotonic = time.monotonic
            stats = self._stats
            while not self._closed:
                data = receive()
                if data is None:
                    park = True
                    return
                if not data:
                    break
                stats.bytes_in += len(data)
                self.last_input = now = monotonic()
                events = framer.receive_data(data)
                if events:
                    self.line_mark = now
                request = self._act_all(events, bucket)
                if request is not None:
                    self._leave_reason = request.reason
                    return
        except _Stop:
            self._announce = False  # the server is stopping: everyone is leaving at once
        except OSError:
            pass  # reset by the peer, or closed by drop(); the reason is in _drop_reason
        finally:
            if park and not self._closed:
                self._park()
            else:
                self._finish()

    def _register(self) -> None:
        """Join the chat as the connection starts (a line door: at once, named after the
        port; the IRC door registers later, when the client has said NICK and USER)."""
        self.hub.add(self, str(self.address[1]))

    def _finish(self) -> None:
        """The client has gone (or is sent away): leave the chat, flush, close, log."""
        self._finishing = True
        self.hub.remove(self, self._drop_reason or self._leave_reason, announce=self._announce)
        self._flush_and_close(limits.QUIT_FLUSH_TIMEOUT)

    def _gone(self) -> None:
        """The client has left (it has the end of the stream, or the socket is closed): log
        it and free its place, once, from ``_flush_and_close``."""
        if self._drop_reason:
            log.info("Client %s disconnected (%s)", self.peer, self._drop_reason)
        else:
            log.info("Client %s disconnected", self.peer)
        if self._on_closed is not None:
            self._on_closed(self)

    # ------------------------------------------------------ transport extension points
    # A transport that is not plain lines over a byte stream (WebSocket) subclasses
    # Connection and overrides these three; everything else (hub, limits, lifecycle) is
    # shared.

    def _new_framer(self) -> protocol.LineFramer:
        """What turns received bytes into line events (``receive_data(bytes) -> list``)."""
        framer = protocol.LineFramer(self.settings.max_line)
        return wrongdoor.FirstLinesCheck(framer) if self.CHECKS_DOOR else framer  # type: ignore[return-value]

    def _encode(self, lines: list[bytes]) -> bytes:
        """The bytes to send for queued lines (each a complete line ending in newline)."""
        return lines[0] if len(lines) == 1 else b"".join(lines)

    def _receive(self) -> bytes | None:
        """The next chunk of input, read only when the event loop says it is there.

        gevent's ``recv`` returns at once when data is waiting, so a client that never
        pauses would keep its greenlet running: the flushes it queued for everyone else,
        and every other reader, would wait behind it. Waiting for the loop's readiness
        report first gives each connection one chunk per loop turn, and the flushes of that
        turn run before anyone reads again. (It also spares the failing recv an idle
        socket would otherwise make before waiting.)
        """
        sock = self.sock
        if self._try_send is not None:
            if not self._wait_readable():
                return None  # type: ignore[return-value]  # idle: park
            return sock.recv(limits.RECV_SIZE)
        # Other transports (TLS) may hold decrypted input the descriptor does not show:
        # read first, then yield to the loop.
        try:
            data = sock.recv(limits.RECV_SIZE)
        except _CLOSED_TLS:
            if not self._closed:
                raise
            return b""  # closed by drop() as this greenlet was woken: see _CLOSED_TLS
        gevent.sleep(0)
        return data

    def _act_all(self, events: list[protocol.FramerEvent], bucket: TokenBucket | None) -> protocol.Quit | None:
        """Carry out the lines of one received chunk, in order; the Quit if the client leaves.

        Consecutive chat lines go to the hub together, which sends them on as one piece per
        recipient: the per-recipient work (the relay's hot path) is then paid per chunk, not
        per line. A throttled connection acts line by line, waiting between lines.
        """
        batch: list[str] = []
        for event in events:
            request = protocol.parse_line(event) if event.__class__ is str else event  # type: ignore[arg-type]
            if bucket is None:
                if request.__class__ is protocol.Chat:
                    batch.append(request.text)  # type: ignore[union-attr]
                    continue
                if batch:
                    self.hub.chat_lines(self, batch)
                    batch = []
            else:
                wait = bucket.take(time.monotonic())
                if wait:
                    self._stats.throttle_waits += 1
                    # Throttle by reading more slowly: nothing is dropped, and the
                    # client's TCP window closes while we wait. The wait is ours,
                    # not the client's: no idle or line timeout runs meanwhile.
                    self.last_input = self.line_mark = time.monotonic() + wait
                    gevent.sleep(wait)
            outcome = self._act(request)
            if outcome is not None or self._closed:
                return outcome
        if batch:
            self.hub.chat_lines(self, batch)
        return None

    def _act(self, request: protocol.Request | protocol.LineTooLong | wrongdoor.WrongDoor | None) -> protocol.Quit | None:
        """Carry out one request; return it if it is the client's Quit."""
        kind = request.__class__
        if kind is protocol.Chat:
            self.hub.chat(self, request.text)  # type: ignore[union-attr]
        elif kind is protocol.Command:
            commands.dispatch(self.hub, self, request)  # type: ignore[arg-type]
        elif kind is protocol.Invalid:
            self.deliver(protocol.error(request.message))  # type: ignore[union-attr]
        elif kind is protocol.LineTooLong:
            self._stats.lines_too_long += 1
            self.deliver(protocol.line_too_long(self.settings.max_line))
        elif kind is protocol.Quit:
            return request  # type: ignore[return-value]
        elif kind is wrongdoor.WrongDoor:
            self._turn_away(request.kind)  # type: ignore[union-attr]
            return protocol.Quit()
        return None
