"""Limits that watch connections from outside: per-address counts and the timeout sweeper.

Neither adds work per message. ``AddressCounts`` is touched once when a connection is
accepted and once when it ends. The timeouts need no timer per connection: each
connection stores the time of its last received chunk (``last_input``) and of the last
chunk that completed a line (``line_mark``), and one ``Sweeper`` greenlet per server
looks at every connection a few times per timeout period:

* idle timeout: nothing received for ``idle_timeout`` seconds -> ``idle timeout``;
* line timeout (slowloris): the framer has held the same unfinished line for
  ``line_timeout`` seconds -> ``line timeout``. "The same line" means no line was completed
  since the sweeper first saw it unfinished, so a client that streams many lines in
  pieces (every chunk ending mid-line) is never mistaken for a slow one.

A timeout fires between ``timeout`` and ``timeout`` plus two sweep intervals after the
fact (the interval is a quarter of the shortest timeout, at most 1 s).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

import gevent

from geventchat.core import protocol

log = logging.getLogger("geventchat")

IDLE_TIMEOUT_REASON = "idle timeout"
LINE_TIMEOUT_REASON = "line timeout"

# Why a new connection is refused (``ChatServer.admission``, for every door), in the
# console's words, and the line a line or web client is sent for it.
SERVER_FULL_REASON = "server full"
PER_ADDRESS_REASON = "too many connections from this address"
REFUSAL_LINES = {SERVER_FULL_REASON: protocol.SERVER_FULL, PER_ADDRESS_REASON: protocol.TOO_MANY_FROM_ADDRESS}

# Bounds of the sweeper's period: often enough for a timeout to fire soon after it is
# due, rarely enough that walking 10,000 connections costs nothing noticeable.
MIN_SWEEP_INTERVAL = 0.05
MAX_SWEEP_INTERVAL = 1.0


class AddressCounts:
    """How many connections each remote address has open, against a maximum."""

    __slots__ = ("limit", "_counts")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._counts: dict[str, int] = {}

    def acquire(self, address: str) -> bool:
        """Count one more connection from ``address``; False (nothing counted) if over the limit."""
        count = self._counts.get(address, 0)
        if count >= self.limit:
            return False
        self._counts[address] = count + 1
        return True

    def release(self, address: str) -> None:
        count = self._counts.get(address, 0) - 1
        if count > 0:
            self._counts[address] = count
        else:
            self._counts.pop(address, None)

    def count(self, address: str) -> int:
        return self._counts.get(address, 0)

    def __len__(self) -> int:
        return len(self._counts)


def sweep_interval(idle_timeout: float, line_timeout: float) -> float:
    timeouts = [t for t in (idle_timeout, line_timeout) if t > 0]
    if not timeouts:
        return 0.0
    return max(MIN_SWEEP_INTERVAL, min(MAX_SWEEP_INTERVAL, min(timeouts) / 4))


class Sweeper:
    """One greenlet that drops idle and slow-line connections (see the module's text).

    ``connections`` returns the connections to look at; each has ``last_input``,
    ``line_mark``, ``framer`` (anything with an ``in_line`` property, or None before it
    starts reading), the sweeper's own ``partial_mark``/``partial_since`` slots, and
    ``drop(reason)``. ``on_timeout(reason)`` is called for every drop (for metrics).
    """

    def __init__(
        self,
        connections: Callable[[], Iterable],
        idle_timeout: float = 0.0,
        line_timeout: float = 0.0,
        on_timeout: Callable[[str], None] | None = None,
    ) -> None:
        self.connections = connections
        self.idle_timeout = idle_timeout
        self.line_timeout = line_timeout
        self.interval = sweep_interval(idle_timeout, line_timeout)
        self.on_timeout = on_timeout
        self._greenlet: gevent.Greenlet | None = None

    @property
    def enabled(self) -> bool:
        return self.interval > 0

    def start(self) -> None:
        if self.enabled and self._greenlet is None:
            self._greenlet = gevent.spawn(self._run)

    def stop(self) -> None:
        greenlet, self._greenlet = self._greenlet, None
        if greenlet is not None:
            greenlet.kill(block=False)

    def _run(self) -> None:
        while True:
            gevent.sleep(self.interval)
            try:
                self.sweep(time.monotonic())
            except Exception:  # a bug: say so, keep sweeping
                log.exception("Internal error in the timeout sweeper")

    def sweep(self, now: float) -> int:
        """Drop every connection past a timeout at time ``now``; returns how many."""
        idle, line = self.idle_timeout, self.line_timeout
        dropped = 0
        for conn in list(self.connections()):
            reason = ""
            if idle > 0 and now - conn.last_input >= idle:
                reason = IDLE_TIMEOUT_REASON
            elif line > 0:
                framer = conn.framer
                if framer is not None and getattr(framer, "in_line", False):
                    mark = conn.line_mark
                    if conn.partial_since == 0.0 or conn.partial_mark != mark:
                        # First seen unfinished (or a line was completed since): the
                        # unfinished line began at the latest now.
                        conn.partial_mark = mark
                        conn.partial_since = now
                    elif now - conn.partial_since >= line and now >= mark:
                        reason = LINE_TIMEOUT_REASON
                else:
                    conn.partial_since = 0.0
            if reason:
                dropped += 1
                conn.drop(reason)
                if self.on_timeout is not None:
                    self.on_timeout(reason)
        return dropped
