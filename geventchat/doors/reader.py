"""The input side of one connection: the read loop, parking, the rate limit, the stop.

A ``Reader`` serves one ``Session`` for a door's codec. The greenlet that runs it reads,
frames (``codec.new_framer``) and acts on each chunk's events (``codec.act``), in order:
it is the only code that acts for this client. It is what the server keeps per
connection (``ChatServer.connections``): it starts the session (``serve``), ends it
(``begin_shutdown``, ``drop``), and holds the marks the timeout sweeper reads
(``last_input``, ``line_mark``, ``framer``, ``partial_mark``/``partial_since``).

Parking (plain sockets of a door that allows it): right after the connection starts,
and after ``PARK_AFTER`` seconds without input, the reader greenlet ends and an I/O
watcher starts a new one when input comes, so an idle connection holds no greenlet at all.
A parked connection that acts in the loop (``acts_in_loop``) is read by that watcher's
callback itself, which relays what never waits (``Codec.act_at_once``: chat lines) and
wakes a reader greenlet only for the rest (a command, the end of the stream).

Rate limit (``--rate``): a token bucket per connection; a throttled connection acts line
by line and waits between lines, reading more slowly: nothing is dropped, and the
client's TCP window closes while we wait.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from typing import Any, cast

import gevent
from gevent.hub import Waiter

from geventchat.core import limits, protocol
from geventchat.core.ratelimit import TokenBucket
from geventchat.doors.codec import Framer
from geventchat.doors.session import CLOSED_TLS, Session, Stop

log = logging.getLogger("geventchat")

# Seconds a reader waits at most at its hub's closed input gate (then reads anyway).
GATE_HOLD_MAX = 1.0


class Reader:
    __slots__ = (
        "session",
        "framer",
        "parked",
        "last_input",
        "line_mark",
        "partial_mark",
        "partial_since",
        "_bucket",
        "_greenlet",
        "_spawn",
        "_on_closed",
        "_loop",
        "_park_timer",
        "_wake",
        "_stopping",
        "_finishing",
        "_leave_reason",
        "_announce",
        "_acts_in_loop",
        "_recv",
    )

    def __init__(
        self,
        session: Session,
        *,
        spawn: Callable[..., gevent.Greenlet] = gevent.spawn,
        on_closed: Callable[[Reader], None] | None = None,
        parks: bool = True,
        acts_in_loop: bool = False,
    ) -> None:
        """``spawn`` starts a reader greenlet after a park (the server's group, so that its
        stop joins it); ``on_closed`` is told once, when the client has left (see
        ``_gone``); ``parks``: False for a door whose handler greenlet owns the socket and
        the connection's place until ``serve`` returns (the WebSocket door);
        ``acts_in_loop``: the parked connection reads and acts in the loop's callback on
        whatever the codec can carry out without waiting (``Codec.act_at_once``), which
        the hub must allow (a hub of this process alone: nothing it does for a chat line
        waits); no effect on a door whose codec cannot, on TLS or with ``--rate``."""
        self.session = session
        session.reader = self
        self.framer: Framer | None = None
        self._loop = loop = gevent.get_hub().loop
        self._spawn = spawn
        self._on_closed = on_closed
        # (A repeat value, so that again() re-arms it from now: a one-shot libev timer that has
        # fired would fire at once on its next start.) No park timer: the reader never parks.
        self._park_timer = loop.timer(limits.PARK_AFTER, limits.PARK_AFTER) if parks and session.plain else None
        self._wake: Any = None  # the loop's I/O watcher that is started while parked
        self.parked = False
        self._stopping = False  # the server is stopping: finish at the next chance
        self._bucket: TokenBucket | None = None
        self._leave_reason = ""
        self._announce = True
        self._finishing = False  # the reader is past its loop, closing
        self._greenlet: gevent.Greenlet | None = None
        self._acts_in_loop = acts_in_loop and self._park_timer is not None and hasattr(session.codec, "act_at_once")
        self._recv = session.sock._sock.recv if self._acts_in_loop else None  # type: ignore[attr-defined]  # the raw, non-blocking socket
        # For the timeout sweeper (guard.Sweeper): when input last came, when a line was
        # last completed, and the sweeper's own notes on an unfinished line.
        self.last_input = self.line_mark = time.monotonic()
        self.partial_mark = 0.0
        self.partial_since = 0.0

    @property
    def address(self) -> tuple:
        return self.session.address

    @property
    def peer(self) -> str:
        return self.session.peer

    @property
    def door(self) -> str:
        """The front door's name (line, web, irc), as the metrics page labels it."""
        return self.session.codec.door

    def __repr__(self) -> str:
        return f"<Reader {self.session.peer} {self.session.nick!r}>"

    def drop(self, reason: str) -> None:
        """Disconnect the client now, discarding its output (the server's decision)."""
        self.session.drop(reason)

    # --------------------------------------------------------------------- input

    def serve(self, initial: bytes = b"") -> None:
        """Run in the connection's first greenlet: join the chat, then read (``initial``:
        bytes already received, acted on first).

        Returns when the client has left or been dropped, or when the reader parked (then
        ``parked`` is true and a later greenlet carries on; ``on_closed`` tells the end).
        """
        log.info("New connection from %s", self.session.peer)
        self._read_loop(start=True, initial=initial)

    def _read_loop(self, start: bool = False, initial: bytes = b"", ready: bool = False, pending: list | None = None) -> None:
        """The reader greenlet: ``initial`` (bytes already received) or ``pending`` (events
        already framed, left by the loop's read) first; ``ready``: input is waiting."""
        self._greenlet = cast(gevent.Greenlet, gevent.getcurrent())  # a reader runs in a Greenlet
        session = self.session
        park = False
        try:
            if start:
                settings = session.settings
                session.codec.start(session)
                self.framer = session.codec.new_framer(session)
                if settings.rate > 0:
                    self._bucket = TokenBucket(settings.rate, settings.burst or max(1, settings.rate))
                    self._acts_in_loop = False  # a throttled connection waits between lines
            if self._stopping:
                raise Stop
            if start and self._park_timer is not None:
                # A new client has its welcome and has most likely sent nothing yet: park at
                # once rather than after PARK_AFTER, so that a connect storm holds no greenlet
                # (and no saved stack) per waiting client; the first input starts the reader.
                park = True
                return
            framer, bucket = self.framer, self._bucket
            assert framer is not None, "the first greenlet made it"
            act = session.codec.act
            receive = self._receive_plain if session.plain else self._receive_buffered
            monotonic = time.monotonic
            stats = session.hub.stats
            gate = session.hub.input_gate
            while not session.closed:
                if pending is not None:  # framed and counted by the loop's read already
                    events, pending = pending, None
                else:
                    data: bytes | None
                    if initial:
                        data, initial = initial, b""
                    elif ready:  # woken from parking by input: it is there, read it in this turn
                        ready = False
                        data = session.sock.recv(limits.RECV_SIZE)
                    else:
                        if gate is not None and not gate.is_set():
                            self._hold(gate)
                            if session.closed:  # dropped meanwhile
                                break
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
                request = act(session, events) if bucket is None else self._act_throttled(events, bucket)
                if request is not None:
                    self._leave_reason = request.reason
                    return
                if self._acts_in_loop:
                    park = True  # done what needed a greenlet: the loop reads again
                    return
        except Stop:
            self._announce = False  # the server is stopping: everyone is leaving at once
        except OSError:
            pass  # reset by the peer, or closed by drop(); the reason is in drop_reason
        finally:
            if park and not session.closed:
                self._park()
            else:
                self._finish()

    def _act_throttled(self, events: list, bucket: TokenBucket) -> protocol.Quit | None:
        """``codec.act`` line by line, each line taking a token (waiting for it first)."""
        session = self.session
        act = session.codec.act
        for event in events:
            if event.__class__ is protocol.Quit:  # the door's end of input (WebSocket close)
                return event
            wait = bucket.take(time.monotonic())
            if wait:
                session.hub.stats.throttle_waits += 1
                # The wait is ours, not the client's: no idle or line timeout runs meanwhile.
                self.last_input = self.line_mark = time.monotonic() + wait
                gevent.sleep(wait)
            outcome = act(session, [event])
            if outcome is not None or session.closed:
                return outcome
        return None

    def _hold(self, gate: Any) -> None:
        """Wait (GATE_HOLD_MAX seconds at most) while the hub's input gate is closed: it
        cannot keep up with input it must not refuse (a cluster's bus). The client's TCP
        window fills meanwhile; the wait is ours, not the client's: no idle or line timeout
        runs during it."""
        self.last_input = self.line_mark = time.monotonic() + GATE_HOLD_MAX
        gate.wait(GATE_HOLD_MAX)

    def _receive_plain(self) -> bytes | None:
        """The next chunk of input, read only when the event loop says it is there.

        gevent's ``recv`` returns at once when data is waiting, so a client that never
        pauses would keep its greenlet running: the flushes it queued for everyone else,
        and every other reader, would wait behind it. Waiting for the loop's readiness
        report first gives each connection one chunk per loop turn, and the flushes of that
        turn run before anyone reads again. (It also spares the failing recv an idle
        socket would otherwise make before waiting.)
        """
        if not self._wait_readable():
            return None  # idle: park
        return self.session.sock.recv(limits.RECV_SIZE)

    def _receive_buffered(self) -> bytes | None:
        """The next chunk of input from a transport that may hold decrypted input the
        descriptor does not show (TLS): read first, then yield to the loop."""
        session = self.session
        try:
            data = session.sock.recv(limits.RECV_SIZE)
        except CLOSED_TLS:
            if not session.closed:
                raise
            return b""  # closed by drop() as this greenlet was woken: see CLOSED_TLS
        gevent.sleep(0)
        return data

    def _wait_readable(self) -> bool:
        """Wait for input; False if none came for PARK_AFTER seconds (time to park).

        As gevent's own Hub.wait does, with a Waiter; the park timer is a second watcher on
        the same Waiter, so the hot path pays a timer start and stop, no greenlet. A close
        from another greenlet (drop) still reaches this wait as an error.
        """
        waiter: Waiter[bool] = Waiter()
        watcher, timer = self.session.sock._read_event, self._park_timer  # type: ignore[attr-defined]
        watcher.start(waiter.switch, True)
        if timer is not None:
            timer.again(waiter.switch, False)
        try:
            return waiter.get()
        finally:
            watcher.stop()
            if timer is not None:
                timer.stop()

    # ------------------------------------------------------------------- parking

    def _park(self) -> None:
        """End this reader greenlet's work; a watcher starts a new one when input comes."""
        self.parked = True
        self._greenlet = None
        wake = self._wake
        if wake is None:  # (made once, kept stopped between parks until the connection ends)
            wake = self._wake = self._loop.io(self.session.sock.fileno(), 1)
        wake.start(self._input_came)

    def _input_came(self) -> None:
        """Loop callback of the parked connection's watcher: input came.

        A connection that acts in the loop reads the chunk here and carries out what never
        waits (``_read_in_loop``); otherwise, or for what is left, a new reader starts here,
        in this dispatch, as a waiting reader is woken (gevent's Waiter switches to it from
        the loop too), not one loop turn later: input that came at the same time on an
        active connection is not acted on before this one's. (A Greenlet started by
        switching cancels its scheduled start.)"""
        if self._acts_in_loop and not self._stopping:
            pending = self._read_in_loop()
            if pending is None:
                return
            greenlet = self.unpark(pending=pending) if pending else self.unpark(ready=True)
        else:
            greenlet = self.unpark(ready=True)
        if greenlet is not None:
            greenlet.switch()

    def _read_in_loop(self) -> list | None:
        """Read one chunk in the loop's callback and act on its leading events that never
        wait (``Codec.act_at_once``: plain chat lines). Returns None when that was all,
        else the events left for a reader greenlet (an empty list: no chunk, the end of
        the stream or an error, which a reader reads again and acts on).

        This is the relay's hot path: a chunk of chat costs no greenlet switch and no
        Waiter, and the parked connection's watcher stays as it is."""
        session = self.session
        try:
            data = self._recv(limits.RECV_SIZE)  # type: ignore[misc]  # set with _acts_in_loop
        except BlockingIOError:
            return None  # nothing after all (another reader took it)
        except OSError:
            return []
        if not data:
            return []
        session.hub.stats.bytes_in += len(data)
        self.last_input = now = time.monotonic()
        framer = self.framer
        assert framer is not None, "a parked connection has started"
        events = framer.receive_data(data)
        if not events:
            return None
        self.line_mark = now
        try:
            done = session.codec.act_at_once(session, events)  # type: ignore[attr-defined]  # see _acts_in_loop
        except Exception:  # a bug: log it with its traceback, keep serving everyone else
            log.exception("Internal error while serving %s", session.peer)
            session.drop("internal error")
            return None
        if done == len(events) or session.closed:
            return None
        return events[done:]

    def unpark(self, ready: bool = False, pending: list | None = None) -> gevent.Greenlet | None:
        """Start a reader again: input came (``ready``; ``pending``: events already framed),
        or a parked connection is stopped or dropped (then the new reader leaves). Returns
        the new reader's greenlet."""
        if not self.parked:
            return None
        self.parked = False
        if self._wake is not None:
            self._wake.stop()
        return self._spawn(self._read_loop, False, b"", ready, pending)

    # ------------------------------------------------------------------- leaving

    def begin_shutdown(self) -> None:
        """The server is stopping: tell the client, then make the reader finish."""
        self._stopping = True
        self.session.deliver(protocol.SHUTTING_DOWN)
        if self.parked:
            self.unpark()  # the new reader sees _stopping and finishes
            return
        if self._greenlet is not None and not self._finishing:
            gevent.get_hub().loop.run_callback(self._stop_reader)

    def _stop_reader(self) -> None:
        """Loop callback: make the reader finish, unless it has begun leaving meanwhile.

        Checked when the throw happens, not when the stop asks for it (as a plain
        ``kill(block=False)`` would): under load the loop runs part of its callbacks after
        the next poll, and a reader woken by the client's goodbye in that gap is already
        leaving, maybe waiting for Redis (``ClusterHub.remove``); a throw there would cut
        its leave short (no quit line for the others, its name never freed)."""
        greenlet = self._greenlet
        if greenlet is not None and not self._finishing and not greenlet.dead:
            try:
                greenlet.throw(Stop)
            except BaseException:  # as gevent's own kill: report it, never let it into the loop
                gevent.get_hub().handle_error(greenlet, *sys.exc_info())

    def _finish(self) -> None:
        """The client has gone (or is sent away): leave the chat, flush, close, log."""
        self._finishing = True
        wake, self._wake = self._wake, None
        if wake is not None:
            wake.close()
        session = self.session
        session.hub.remove(session, session.drop_reason or self._leave_reason, announce=self._announce)
        farewell = b"" if session.closed else session.codec.farewell(session, self._stopping)
        session.flush_and_close(limits.QUIT_FLUSH_TIMEOUT, farewell, self._gone)

    def _gone(self) -> None:
        """The client has left (it has the end of the stream, or the socket is closed): log
        it and free its place, once, from ``Session.flush_and_close``."""
        session = self.session
        if session.drop_reason:
            log.info("Client %s disconnected (%s)", session.peer, session.drop_reason)
        else:
            log.info("Client %s disconnected", session.peer)
        if self._on_closed is not None:
            self._on_closed(self)
