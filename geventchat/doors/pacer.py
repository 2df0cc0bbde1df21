"""The busy loop's pace: while chat is relayed in loop turns that follow each other closely,
each such turn lasts at least ``--turn-ms`` (1 ms).

Every session flushes once per loop turn (``Session._flush``), so a client gets one ``send``
for everything that arrived for it in that turn. Under load, though, turns come as fast as
input does: with 10 busy clients the loop turned about 3,000 times a second, each turn
finding two or three senders' chunks, and every client got a ``send`` (and its peer a
wake-up) per turn: 3.6 sends per chunk relayed, each costing the server a system call and
the Python around it. When a turn that relayed chat began less than one turn length after
the previous such turn ended, the pacer waits, after the turn's flushes, for the rest of
that turn length before the loop polls again; the next turn then finds every chunk that
came meanwhile, and each client gets them in one ``send``. In the 10-client benchmark that
is about 1.5 sends per chunk instead of 3.6, a third of the polls, and 1.1 to 1.2 times
ncat's deliveries per server CPU-second where the loop turning freely gave 0.75 to 0.97.

A turn that follows a quiet time is never held: a line in a calm room goes out as soon as
it arrives, and the wait comes after that turn's sends, so it delays only input that comes
during it, by at most one turn length. Only chat paces the loop (the hub calls ``relayed``,
``Hub.after_relay``): welcomes, command replies and presence go to one client or are
batched already, so a connect storm turns freely. The wait blocks the whole process
(``time.sleep``), which is the point: nothing is ready that could not wait a millisecond,
and the kernel keeps the input meanwhile.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import gevent
from gevent import monkey

# The blocking sleep, even in a process that gevent has monkey-patched (a server linked to
# others over Redis is): the wait runs in a loop callback, where gevent's sleep cannot.
_blocking_sleep: Callable[[float], None] = monkey.get_original("time", "sleep")


class LoopPacer:
    """Holds a busy loop's turns that relayed chat to at least ``turn`` seconds each."""

    __slots__ = ("turn", "_now", "_clock", "_sleep", "_run_callback", "_pending", "_turn_start", "_last_end")

    def __init__(
        self,
        turn: float,
        *,
        now: Callable[[], float] | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = _blocking_sleep,
        run_callback: Callable[..., object] | None = None,
    ) -> None:
        if turn <= 0:
            raise ValueError("a turn must last more than 0 seconds")
        loop = gevent.get_hub().loop
        self.turn = turn
        # When this loop turn began: the loop reads the (wall) clock after polling (and,
        # among many callbacks, again every 50). ``clock`` is the same clock read now.
        self._now = now or loop.now
        self._clock = clock
        self._sleep = sleep
        self._run_callback = run_callback or loop.run_callback
        self._pending = False  # the wait of this turn is queued
        self._turn_start = 0.0  # the loop's time at this turn's first relay
        self._last_end = float("-inf")  # when the last turn that relayed chat ended

    def relayed(self) -> None:
        """Chat went to a room's members in this turn: wait after the turn's flushes if the
        loop is busy."""
        if not self._pending:
            self._pending = True
            # Read now, while the turn's input is handled: the loop's time may move on
            # during the flushes of a big room.
            self._turn_start = self._now()
            self._run_callback(self._queue_last)

    def _queue_last(self) -> None:
        # The loop's callbacks run after this turn's input was handled, so every flush of
        # the turn is queued by now: the wait goes after all of them.
        self._run_callback(self._wait)

    def _wait(self) -> None:
        self._pending = False
        start = self._turn_start
        # Busy: this turn began soon after the last turn that relayed chat ended (a turn
        # that follows a wait of ours begins right after it, and is busy too).
        if start - self._last_end < self.turn:
            rest = start + self.turn - self._clock()
            if rest > 0:
                self._sleep(min(rest, self.turn))
        self._last_end = self._clock()
