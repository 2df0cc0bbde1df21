"""One member's session, whatever its door: who it is, its bounded outbox, its writer, its close.

A ``Session`` is what the hub sees of a client (``nick``, ``room``, ``deliver``). The
hub's per-member fields live in its slots: a hub that keeps more per member (several
rooms, an IRC user name) has the door's session subclass add slots for them; nothing
here reads ``room``.

Writing: ``deliver`` never touches the socket; it appends the (already encoded, shared)
bytes to the outbox and, if no flush is pending, schedules one as a loop callback. The
flush runs once the current loop turn has handled everything that was ready to read, so
one ``send`` carries every line that arrived for this client in that turn. Only when the
kernel's buffer is full does a writer greenlet exist, waiting for the socket to become
writable; it ends once the outbox is empty. An idle session therefore holds no writer
greenlet at all, and no sender ever waits for a slow reader.

The outbox holds the hub's lines (the line protocol's bytes, shared by every recipient);
the door's codec turns them into what its wire carries (``Codec.encode``) when they are
sent, once per flush. A session whose waiting output passes ``max_sendq`` bytes is
dropped ("send queue exceeded"): its socket is closed, which wakes its own greenlets with
an error, and nobody else is delayed by it.

Closing is two steps (``flush_and_close``): send what is queued and half-close, then
wait (bounded) for the peer's own close, so that our last lines are never destroyed by
a reset.
"""

from __future__ import annotations

import _socket
import contextlib
import functools
import ipaddress
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import gevent
from gevent import socket as gsocket

from geventchat.chat.hub import Hub, Room
from geventchat.core import limits
from geventchat.core.config import Settings

if TYPE_CHECKING:
    from geventchat.doors.codec import Codec
    from geventchat.doors.reader import Reader


class Stop(Exception):
    """Thrown into a reader greenlet to make it finish: the server is stopping."""


# What gevent's SSLSocket raises, instead of an OSError, when another greenlet closed it
# (drop(): the sweeper, a send queue drop, the writer meeting a reset) in the loop turn
# that wakes a greenlet waiting on it for input or for room to write: ValueError ("Read on
# closed or unwrapped SSL socket") from a read, AttributeError (its _sslobj is then None)
# from a send. Once ``closed`` says that we closed it, that is the same end as a plain
# socket's EBADF; otherwise it is a bug and stays an error.
CLOSED_TLS = (ValueError, AttributeError)


def describe_peer(address: tuple) -> str:
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@functools.lru_cache(maxsize=1024)  # (parsing an address is most of a connection's set-up here)
def _is_loopback(host: str) -> bool:
    try:
        ip = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return True  # not an IP address (a Unix socket's path): local, say nothing
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


class Session:
    __slots__ = (
        "sock",
        "address",
        "peer",
        "hub",
        "settings",
        "codec",
        "nick",
        "room",
        "account",
        "exposed",
        "reader",
        "closed",
        "drop_reason",
        "_outbox",
        "_pending",
        "_max_sendq",
        "_flush_scheduled",
        "_writer",
        "_try_send",
        "_run_callback",
        "_encode",
        "_reframes",
        "_stats",
    )

    def __init__(self, sock: socket.socket, address: tuple, hub: Hub, settings: Settings, codec: Codec) -> None:
        self.sock = sock
        self.address = address
        self.peer = describe_peer(address)
        self.hub = hub
        self.settings = settings
        self.codec = codec
        self.nick = ""
        self.room: Room | None = None
        self.account: str | None = None  # the folded nickname logged in to (chat.accounts)
        self.reader: Reader | None = None  # the greenlet side; it sets itself here
        self.closed = False
        self.drop_reason = ""  # why the server dropped the client, if it did
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
        self._try_send = raw.send if plain and raw is not None else None
        # Unencrypted from another machine: account replies carry a warning (chat.accounts).
        self.exposed = type(sock) is gsocket.socket and not _is_loopback(address[0])
        self._run_callback = gevent.get_hub().loop.run_callback
        self._encode = codec.encode
        # A codec whose wire bytes differ in size from the hub's lines (frames): the
        # queued count is corrected by the difference when they are encoded, so that
        # --max-sendq keeps measuring exactly the bytes waiting in the server.
        self._reframes = codec.reframes
        self._stats = hub.stats  # counters for the metrics page (metrics.Stats)

    @property
    def plain(self) -> bool:
        """A plain (not TLS) socket: sends may run as loop callbacks, a reader may park."""
        return self._try_send is not None

    def __repr__(self) -> str:
        return f"<Session {self.peer} {self.nick!r}>"

    # -------------------------------------------------------------------- output

    def deliver(self, data: bytes) -> None:
        """Queue one encoded line (or several) for this client; never blocks, never raises."""
        if self.closed:
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
        if not self.closed:
            self.drop_reason = reason
            self.close_now()

    def close_now(self) -> None:
        self.closed = True
        self._outbox.clear()
        self._pending = 0
        reader = self.reader
        if reader is not None and reader.parked:
            # No greenlet waits on the socket: start one to do the leaving (hub, log).
            reader.unpark()
        # Closing a gevent socket wakes the greenlets waiting on it with an error.
        self.sock.close()

    def _take_output(self) -> bytes:
        """Everything queued, encoded for the wire, the outbox emptied."""
        outbox = self._outbox
        data = self._encode(outbox)
        if self._reframes:
            self._pending += len(data) - sum(map(len, outbox))
        outbox.clear()
        return data

    def _flush(self) -> None:
        """Loop callback: hand everything queued to the kernel in one send."""
        outbox = self._outbox
        if self.closed or not outbox:
            self._flush_scheduled = False
            return
        if self._try_send is None:
            self._writer = gevent.spawn(self._drain)
            return
        if self._reframes:
            data = self._take_output()
        else:
            data = self._encode(outbox)
            outbox.clear()
        try:
            sent = self._try_send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            # The peer is gone (reset, broken pipe); its reader sees that and cleans up.
            self.close_now()
            return
        self._pending -= sent
        self._stats.bytes_out += sent
        if sent == len(data):
            self._flush_scheduled = False
        else:
            # The kernel's buffer is full: wait for room in a greenlet of its own, which
            # sends the rest of these (already encoded) bytes first.
            self._writer = gevent.spawn(self._drain, data[sent:])

    def _drain(self, unsent: bytes = b"") -> None:
        """Writer greenlet: send until the outbox is empty, waiting for writability."""
        outbox = self._outbox
        try:
            data = unsent
            while data or (outbox and not self.closed):
                if not data:
                    data = self._take_output()
                view = memoryview(data)
                while view:
                    sent = self.sock.send(view)
                    self._pending -= sent
                    self._stats.bytes_out += sent
                    view = view[sent:]
                data = b""
                if self.closed:
                    break
        except OSError:
            if not self.closed:
                self.close_now()
        except CLOSED_TLS:
            if not self.closed:
                raise  # not a close of ours: a bug
        finally:
            self._writer = None
            self._flush_scheduled = False

    # ------------------------------------------------------------------- closing

    def flush_and_close(self, timeout: float, farewell: bytes, gone: Callable[[], None]) -> None:
        """Send what is still queued and ``farewell`` (wire bytes: the door's last word),
        half-close, call ``gone`` (the client has left), wait for the peer's close, close
        (all of it within ``timeout``)."""
        deadline = time.monotonic() + timeout
        half_closed = False
        if not self.closed:
            with self._closing_step(timeout):
                self._send_remaining(farewell)
                self.sock.shutdown(socket.SHUT_WR)
                half_closed = True
        # The client now has every line and the end of the stream: it has left, whether or
        # not it closes its side soon (its place must not wait for that).
        gone()
        remaining = deadline - time.monotonic()
        if half_closed and remaining > 0:
            # Read until the peer closes too: a plain close with unread input would reset
            # the connection and could destroy our last lines before the client read them.
            with self._closing_step(remaining):
                for _ in range(64):
                    if not self.sock.recv(limits.RECV_SIZE):
                        break
        self.closed = True
        self._outbox.clear()
        self.sock.close()
        self.reader = None  # no more wake-ups to pass on (and no cycle to collect)

    @contextlib.contextmanager
    def _closing_step(self, seconds: float):
        """One step of flush_and_close, for at most ``seconds``: the peer gone already, or
        a stop that raced with this close, ends the step quietly (we close anyway)."""
        with gevent.Timeout(seconds, False):  # type: ignore[arg-type]  # False: end quietly (gevent's stubs miss it)
            try:
                yield
            except (OSError, Stop):
                pass
            except CLOSED_TLS:
                if not self.closed:
                    raise  # not a close of ours (drop() meanwhile): a bug

    def _send_remaining(self, farewell: bytes) -> None:
        while not self.closed:
            writer = self._writer
            if writer is not None:
                writer.join()
                continue
            if not self._outbox:
                break
            data = self._take_output()
            self.sock.sendall(data)
            self._pending -= len(data)
            self._stats.bytes_out += len(data)
        if farewell and not self.closed:
            self.sock.sendall(farewell)
            self._stats.bytes_out += len(farewell)
